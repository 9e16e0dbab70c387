"""The out-of-distribution reference of an exported classifier: how unlike its training data an image is.

A medical classifier answers any image — an MR slice given to a histology model gets "spindle 90 %". The
reference is fitted on the training split's features and says when an image's features are far from them:

- **Score**: the squared Mahalanobis distance of the image's pooled features from the training features' mean,
  on features standardised per dimension, with the covariance shrunk by Ledoit and Wolf ("A well-conditioned
  estimator for large-dimensional covariance matrices", J. Multivariate Anal. 88, 2004; ``sklearn``'s
  ``LedoitWolf``). This is the class-agnostic form of Lee et al., "A Simple Unified Framework for Detecting
  Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018: one Gaussian for the whole training set,
  so it is the same for multi-class and multi-label classifiers. It stores F + F² numbers whatever the dataset's
  size (a kNN reference would publish every training image's features), and costs one F x F product per image.
  Standardising first makes the shrinkage target (a multiple of the identity) fit features of any scale;
  shrinkage keeps the inverse finite with fewer images than dimensions.
- **Threshold**: the ``percentile`` (99 by default) of the scores of in-distribution images the reference was not
  fitted on: the validation split, and the training split scored by 5-fold cross-fitting (each fifth by a
  reference fitted on the other four). The val split alone is too small for a 1 % tail: on the default run's 60
  val images the 99th percentile is about their largest score, and it flagged 8.5 % of the test split; with the
  540 cross-fitted training scores added it flags 0.5 %. The folds' references see 80 % of train, so their scores
  are slightly higher than the final reference's: the threshold errs towards fewer false alarms. The export
  records how many of its val and test images pass it.

The reference travels as ``ood.safetensors`` beside ``model.safetensors`` (timm loads its weights strictly: an
extra tensor there would break plain ``timm.create_model``); config.json's ``zoo.ood`` block names it with its
sha256, the threshold and how it was made. The file is read like any downloaded file: its header is checked
against the model's width before anything is allocated, then its values (finite, positive scales).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zoo.files import sha256_file
from zoo.hub_format import OOD_FILE
from zoo.safetensors_header import read_header

__all__ = [
    "DEFAULT_PERCENTILE",
    "MAX_FEATURES",
    "OOD_FILE",
    "OODReference",
    "fit_reference",
    "read_reference",
    "reference_bytes",
]

METHOD = "mahalanobis, standardised features, Ledoit-Wolf covariance"
DEFAULT_PERCENTILE = 99.0
MAX_FEATURES = 4096  # F x F float32: 64 MiB (ResNet-50: 2048, 16 MiB)
HEADER_SLACK = 1 << 16  # bytes of a safetensors header with four tensors and no metadata
TENSORS = ("mean", "scale", "location", "precision")
# a feature (nearly) constant on train — a dead ReLU channel of a short run — is standardised by at least this
# share of the median spread: divided by ~0 its slightest change at test time would outweigh every other feature
# (a 4-step run's threshold was 3e9 and flagged an ordinary tile)
SCALE_FLOOR = 0.01


@dataclass
class OODReference:
    """A fitted reference: ``score(features)`` is the squared Mahalanobis distance of standardised features.

    Shape:
        mean, scale, location: F; precision: F x F.
    """

    mean: torch.Tensor
    scale: torch.Tensor
    location: torch.Tensor
    precision: torch.Tensor
    threshold: float
    percentile: float = DEFAULT_PERCENTILE
    _moved: dict = field(default_factory=dict, repr=False, compare=False)  # device → the tensors there

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._moved:  # copied once per device (the precision matrix is F x F)
            self._moved[device] = tuple(getattr(self, n).to(device, torch.float32) for n in TENSORS)
        return self._moved[device]

    @property
    def num_features(self) -> int:
        return self.mean.numel()

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of each row (N x F → N, float32, on the features' device)."""
        mean, scale, location, precision = self._on(features.device)
        z = (features.float() - mean) / scale - location  # N x F
        return ((z @ precision) * z).sum(dim=1)

    def flags(self, features: torch.Tensor) -> torch.Tensor:
        """Whether each row's score passes the threshold (N booleans)."""
        return self.score(features) > self.threshold

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).float().contiguous() for name in TENSORS}


def _fit(x: np.ndarray, percentile: float) -> tuple[OODReference, float]:
    """(the reference of the rows of ``x`` with no threshold yet, its Ledoit-Wolf shrinkage)."""
    from sklearn.covariance import LedoitWolf

    mean, std = x.mean(axis=0), x.std(axis=0)
    scale = np.maximum(std, SCALE_FLOOR * np.median(std)) + 1e-6
    fitted = LedoitWolf().fit((x - mean) / scale)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    parts = (mean, scale, fitted.location_, fitted.precision_)
    return OODReference(*map(as_tensor, parts), threshold=math.inf, percentile=percentile), float(
        fitted.shrinkage_
    )


def _cross_fitted(x: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each training row's score under a reference fitted on the other folds (N scores)."""
    scores = np.empty(len(x))
    for held in np.array_split(np.random.default_rng(seed).permutation(len(x)), folds):
        rest = np.setdiff1d(np.arange(len(x)), held)
        reference, _ = _fit(x[rest], DEFAULT_PERCENTILE)
        scores[held] = reference.score(torch.from_numpy(x[held])).double().numpy()
    return scores


def fit_reference(
    train_features: torch.Tensor,
    val_features: torch.Tensor,
    percentile: float = DEFAULT_PERCENTILE,
    folds: int = 5,
    seed: int = 0,
) -> tuple[OODReference, dict]:
    """The reference of ``train_features``, its threshold at ``percentile`` of the held-out scores (val, and
    train cross-fitted in ``folds`` seeded folds; see the module docstring), and a description of it for
    config.json's ``zoo.ood`` block (method, shrinkage, counts, the share of val flagged).

    Shape:
        train_features: N x F; val_features: M x F.
    """
    if not 0 < percentile < 100:
        raise ValueError(f"the OOD threshold percentile must be in (0, 100), got {percentile}")
    x = train_features.double().numpy()
    if len(x) < 2 * folds:
        raise ValueError(f"an OOD reference needs at least {2 * folds} training images, got {len(x)}")
    reference, shrinkage = _fit(x, percentile)
    val_scores = reference.score(val_features).double().numpy()
    held_out = np.concatenate([_cross_fitted(x, folds, seed), val_scores])
    reference.threshold = float(np.percentile(held_out, percentile))
    about = {
        "method": METHOD,
        "percentile": percentile,
        "threshold": reference.threshold,
        "shrinkage": shrinkage,
        "fitted_on": {"split": "train", "images": len(x)},
        "calibrated_on": {"split": f"val + train ({folds}-fold cross-fitted)", "images": len(held_out)},
        "val_flagged": float((val_scores > reference.threshold).mean()),
    }
    return reference, about


def reference_bytes(reference: OODReference) -> tuple[bytes, str]:
    """The reference's ``ood.safetensors`` and its sha256 (for the ``zoo.ood`` block, written before the file)."""
    from safetensors.torch import save

    data = save(reference.tensors(), metadata={"format": "pt"})
    return data, hashlib.sha256(data).hexdigest()


def _check_header(path: Path, features: int) -> None:
    """Names, dtypes and shapes the file declares, and its size, against a reference of ``features`` dimensions —
    before a byte of it is loaded (a file that claims more than the model's width is refused here)."""
    if not 0 < features <= MAX_FEATURES:
        raise ValueError(f"an OOD reference covers 1..{MAX_FEATURES} features, the model has {features}")
    expected = {
        "mean": (features,),
        "scale": (features,),
        "location": (features,),
        "precision": (features, features),
    }
    size = path.stat().st_size
    limit = 4 * (3 * features + features * features) + HEADER_SLACK
    if size > limit:
        raise ValueError(
            f"{path.name} is {size} bytes; a reference of {features} features is at most {limit}"
        )
    declared = read_header(path)
    if set(declared) != set(TENSORS):
        raise ValueError(
            f"{path.name} holds {sorted(declared)[:6]}, not an OOD reference ({', '.join(TENSORS)})"
        )
    for name, shape in expected.items():
        dtype, found = declared[name]
        if dtype != "F32" or tuple(found) != shape:
            raise ValueError(
                f"{path.name}: {name} is {dtype} {tuple(found)}, expected F32 {shape} for the model's {features} "
                "features"
            )


def read_reference(folder: str | Path, block: dict, features: int) -> OODReference:
    """The reference a model folder's ``zoo.ood`` ``block`` names (its file's sha256 must match), for a model of
    ``features`` pooled features; ``ValueError`` naming the problem (nothing large is allocated before the
    header and the size are checked)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / OOD_FILE
    if (
        not path.is_file()
    ):  # a link is followed: the Hub cache's snapshots link to its blobs (read, never written)
        raise ValueError(
            f"{folder}: config.json names an OOD reference but {OOD_FILE} is missing; re-export the model"
        )
    _check_header(path, features)
    if sha256_file(path) != block["sha256"]:
        raise ValueError(
            f"{path}: its sha256 is not the one config.json records; re-export or download it again"
        )
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is corrupt or truncated ({e}); re-export or download it again") from e
    if not all(torch.isfinite(t).all() for t in tensors.values()) or not (tensors["scale"] > 0).all():
        raise ValueError(
            f"{path}: non-finite values or non-positive scales; not an OOD reference of this project"
        )
    return OODReference(**tensors, threshold=block["threshold"], percentile=block["percentile"])


def check_block(block) -> dict:
    """config.json's ``zoo.ood`` block: the file's sha256, a finite threshold, a percentile in (0, 100)."""
    if not isinstance(block, dict):
        raise ValueError(f"zoo.ood must be a mapping, got {type(block).__name__}")
    sha = block.get("sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise ValueError("zoo.ood.sha256 must be the 64 hex digits of the reference file's sha256")
    for key, valid in (("threshold", lambda v: math.isfinite(v)), ("percentile", lambda v: 0 < v < 100)):
        value = block.get(key)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and valid(value)):
            raise ValueError(f"zoo.ood.{key} = {value!r} is not valid")
    return block
