"""Similar cases: the archive images most like an upload, from an embedding output made with the demo's model.

The operator embeds an archive once (``medssl-embed MODEL ARCHIVE --out DIR``) and starts the demo with
``--similar DIR``. An upload is then preprocessed exactly as the archive was (the output's own preprocessing and
precision, :func:`zoo.data.eval_transform` on the decoded pixels), embedded by the same model, and searched exactly
(cosine, :func:`zoo.search`, memory bounded by a chunk). The output must have been made with that model — its
weights, revision, pooling and width (:meth:`zoo.embeddings.Embeddings.check_model`) — else it is refused.
Visitors see each similar image as a thumbnail with its label and similarity, never its path on the server; paths
of the index are read only below the archive's root (no absolute path, no ``..``).
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

import zoo
from zoo.data import ImageDecodeError, read_image
from zoo.data.transforms import eval_transform

__all__ = ["SimilarCases", "THUMBNAIL"]

log = logging.getLogger("demo")
THUMBNAIL = 160  # pixels of a thumbnail's longer side
_IDENTITIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a model's identity, hashed once


def _identity(model: torch.nn.Module) -> dict:
    if model not in _IDENTITIES:
        _IDENTITIES[model] = zoo.embeddings.model_identity(model)
    return _IDENTITIES[model]


class SimilarCases:
    """An embedding output opened for the demo: ``k`` similar cases of an upload."""

    def __init__(self, folder: str | Path, k: int = 6):
        self.embeddings = zoo.embeddings.open(folder)
        self.k, meta = k, self.embeddings.meta
        self.root = Path(meta["data"]["root"])
        self.files = meta["data"]["dataset"] != "medmnist"  # array rows have no image file to show
        preprocessing = self.embeddings.preprocessing
        self.transform = eval_transform(preprocessing)
        self.channels = int(preprocessing["input_size"][0])
        self.bf16 = meta["key"]["precision"] == "bf16"

    @property
    def model_name(self) -> str:
        return self.embeddings.model_name

    def check(self, model: torch.nn.Module, name: str) -> None:
        """``zoo.embeddings.ModelMismatchError`` unless ``model`` made this output."""
        self.embeddings.check_model(_identity(model), name)

    def matches(self, model: torch.nn.Module) -> bool:
        try:
            self.check(model, "")
        except zoo.embeddings.ModelMismatchError:
            return False
        return True

    def features(self, model: torch.nn.Module, image: Image.Image) -> torch.Tensor:
        """The upload's embedding as the archive's were made: same pixels, transform and precision (1 x D)."""
        array = np.asarray(image.convert("L" if self.channels == 1 else "RGB"))
        pixels = torch.from_numpy(
            np.ascontiguousarray(array.reshape(*array.shape[:2], -1).transpose(2, 0, 1))
        )
        x = self.transform(pixels)[None].contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return model.forward_head(model.forward_features(x), pre_logits=True).float()

    def gallery(self, model: torch.nn.Module, image: Image.Image) -> list[tuple[np.ndarray, str]]:
        """The ``k`` most similar archive images: (thumbnail, "label · similarity 0.934"), best first."""
        hits = self.embeddings.search(self.features(model, image), self.k)
        records = self.embeddings.records(hits.rows[0].tolist())
        return [
            (self._thumbnail(r["path"]), f"{r['label'] or 'unlabelled'} · similarity {score:.3f}")
            for r, score in zip(records, hits.scores[0].tolist(), strict=True)
        ]

    def _thumbnail(self, path: str) -> np.ndarray:
        """The archive image at ``path`` (below the root only), at most ``THUMBNAIL`` pixels; grey if unreadable."""
        parts = PurePosixPath(path).parts
        if not self.files or not parts or PurePosixPath(path).is_absolute() or ".." in parts:
            return np.full((THUMBNAIL, THUMBNAIL, 3), 128, dtype=np.uint8)
        try:
            pixels = read_image(self.root.joinpath(*parts), 3)
        except (ImageDecodeError, OSError, ValueError) as e:
            log.warning("similar case %s cannot be shown: %s", path, e)
            return np.full((THUMBNAIL, THUMBNAIL, 3), 128, dtype=np.uint8)
        h, w = pixels.shape[1:]
        scale = THUMBNAIL / max(h, w)
        small = TF.resize(pixels, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True)
        return small.permute(1, 2, 0).numpy()
