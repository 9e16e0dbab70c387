"""MedSSL Zoo: self-supervised timm encoders for small medical image datasets.

The library layer: backbones, heads, losses, methods, data, probes, the hub format and ``load``. It never imports
``train``, ``hub`` or ``demo``.
"""

from zoo import data, embeddings, losses, registry
from zoo.backbones import create_backbone
from zoo.embeddings import embed, search
from zoo.load import ModelNotAvailableError, load, model_info, resolve
from zoo.methods import SSLModel, create_method, list_methods
from zoo.registry import list_models, register

__version__ = "0.1.0"

__all__ = [
    "ModelNotAvailableError",
    "SSLModel",
    "__version__",
    "create_backbone",
    "create_method",
    "data",
    "embed",
    "embeddings",
    "list_methods",
    "list_models",
    "load",
    "losses",
    "model_info",
    "register",
    "registry",
    "resolve",
    "search",
]
