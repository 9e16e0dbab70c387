"""MedSSL Zoo: self-supervised timm encoders for small medical image datasets.

The library layer: backbones, heads, losses, methods, data. It never imports ``train``, ``hub`` or ``demo``.
"""

from zoo import data, losses
from zoo.backbones import create_backbone
from zoo.methods import SSLModel, create_method, list_methods

__version__ = "0.1.0"

__all__ = ["SSLModel", "create_backbone", "create_method", "data", "list_methods", "losses", "__version__"]
