"""Optional dependencies (the extras of ``setup.cfg``): ask for them by name, and say which extra installs them.

``pip install medssl-zoo`` is the library and the training tools; the Gradio demo and DICOM reading (``[demo]``)
and the figures (``[plots]``) are extras, so a user who only calls ``zoo.load`` does not install Gradio.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "available", "install_hint", "require"]

# module → the extra that installs it
EXTRAS = {"gradio": "demo", "pydicom": "demo", "matplotlib": "plots"}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def install_hint(module: str) -> str:
    extra = EXTRAS.get(module)
    return f"pip install 'medssl-zoo[{extra}]'" if extra else f"pip install {module}"


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
        return False


def require(module: str, purpose: str) -> ModuleType:
    """``module`` imported, or :class:`MissingExtraError`: "<purpose> needs <module>: pip install ...[extra]"."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{purpose} needs {module}, which is not installed: {install_hint(module)}"
        ) from e
