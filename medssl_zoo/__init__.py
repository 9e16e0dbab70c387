"""MedSSL Zoo's applications under one import name: ``medssl_zoo.train`` (pre-training, evaluation, reproduction),
``medssl_zoo.hub`` (export, push) and ``medssl_zoo.demo`` (the Gradio app). The library itself is ``zoo``.

Installed from the wheel, the three are sub-packages of this one (generic top-level names such as ``hub`` belong
to other projects). In a checkout they stay the repository's ``train/``, ``hub/`` and ``demo/`` folders (so
``accelerate launch train/pretrain.py`` keeps working): exactly those three are bound here as
``medssl_zoo.<name>`` — nothing else of the repository root (``tests``, ``bench``, ``zoo``) resolves under this
package, and each module has one import name.
"""

import importlib.util
import sys
from pathlib import Path

APPLICATIONS = ("train", "hub", "demo")


def _bind_checkout_applications(root: Path) -> None:
    """In a checkout: ``medssl_zoo.<name>`` is the package ``root/<name>`` (its ``__init__`` run once)."""
    for name in APPLICATIONS:
        qualified = f"{__name__}.{name}"
        if qualified in sys.modules:
            continue
        folder = root / name
        spec = importlib.util.spec_from_file_location(
            qualified, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
        setattr(sys.modules[__name__], name, module)


_here = Path(__file__).resolve().parent
if not (_here / "train").is_dir() and (_here.parent / "train" / "pretrain.py").is_file():
    _bind_checkout_applications(_here.parent)
