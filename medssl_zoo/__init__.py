"""MedSSL Zoo's applications under one import name: ``medssl_zoo.train`` (pre-training, evaluation, reproduction),
``medssl_zoo.hub`` (export, push) and ``medssl_zoo.demo`` (the Gradio app). The library itself is ``zoo``.

Installed from the wheel, the three are sub-packages of this one (generic top-level names such as ``hub`` belong
to other projects). In a checkout they stay the repository's ``train/``, ``hub/`` and ``demo/`` folders, so
``accelerate launch train/pretrain.py`` and ``python -m hub.export`` keep working: this package then also looks for
its sub-packages in the repository root.
"""

from pathlib import Path

_here = Path(__file__).resolve().parent
if not (_here / "train").is_dir() and (_here.parent / "train" / "pretrain.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (a package's __path__) — a checkout
