"""Loading any registered dataset into records with seeded splits, and reading its pixels."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from zoo.data import synthetic
from zoo.data._registry import DatasetSpec, get_dataset_spec
from zoo.data.cache import decoded_split, parallel_fill
from zoo.data.cache_entry import CacheRequest
from zoo.data.csv_dataset import load_csv_records
from zoo.data.images import ImageDecodeError, read_image
from zoo.data.layout import Skipped, candidate_roots, find_child, list_image_paths, list_images, subfolders
from zoo.data.medmnist import read_npz
from zoo.data.splits import (
    DEFAULT_SPLIT_SEED,
    SPLITS,
    Record,
    assign_splits,
    read_manifest,
    target_text,
    write_manifest,
)
from zoo.task import MULTICLASS, MULTILABEL

__all__ = [
    "DatasetNotFoundError",
    "MAX_BAD_FRACTION",
    "MULTICLASS",
    "MULTILABEL",
    "MedicalDataset",
    "SplitDataset",
    "load_dataset",
]

log = logging.getLogger(__name__)
MAX_BAD_FRACTION = 0.05  # more unreadable images than this is an error, not something to skip

MEDMNIST_LABELS = {
    "pathmnist": (
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth_muscle",
        "normal_colon_mucosa",
        "cancer_associated_stroma",
        "colorectal_adenocarcinoma_epithelium",
    ),
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal_or_benign"),
    "chestmnist": (  # MedMNIST v2's INFO["chestmnist"]["label"], the 14 ChestX-ray14 findings
        "atelectasis",
        "cardiomegaly",
        "effusion",
        "infiltration",
        "mass",
        "nodule",
        "pneumonia",
        "pneumothorax",
        "consolidation",
        "edema",
        "emphysema",
        "fibrosis",
        "pleural",
        "hernia",
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset root is missing or does not contain the expected layout."""


@dataclass
class MedicalDataset:
    """A dataset's images as records (key, label, split, group) plus the way to read their pixels.

    ``key`` is a path relative to ``base`` for folder datasets, or a row id into ``pixels`` for in-memory ones
    (MedMNIST, synthetic). ``task`` is ``multiclass`` (one class per image) or ``multilabel`` (``class_names`` are
    the labels; each record's ``targets`` says which are present, NaN where unknown).
    """

    spec: DatasetSpec
    class_names: list[str]
    records: list[Record]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    base: Path | None = None
    pixels: np.ndarray | None = None  # N x H x W x C uint8, in-memory kinds only
    rows: dict[str, int] = field(default_factory=dict)
    task: str = MULTICLASS

    @property
    def num_classes(self) -> int:
        """Classes, or labels of a multi-label dataset."""
        return len(self.class_names)

    @property
    def multilabel(self) -> bool:
        return self.task == MULTILABEL

    def labels_of(self, indices) -> torch.Tensor:
        """Class indices (N int64), or for a multi-label dataset the targets (N x L float32, NaN unknown)."""
        if self.multilabel:
            rows = [self.records[i].targets for i in indices]
            return torch.from_numpy(np.stack(rows) if rows else np.zeros((0, self.num_classes), np.float32))
        return torch.tensor([self.records[i].label for i in indices], dtype=torch.long)

    def indices(self, split: str) -> list[int]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return [i for i, r in enumerate(self.records) if r.split == split]

    def counts(self) -> dict[str, list[int]]:
        """Images per class in each split (multi-label: images where each label is present)."""
        if self.multilabel:
            return {s: (self.labels_of(self.indices(s)) == 1).sum(dim=0).tolist() for s in SPLITS}
        return {
            s: np.bincount(
                [self.records[i].label for i in self.indices(s)], minlength=self.num_classes
            ).tolist()
            for s in SPLITS
        }

    def read(self, i: int) -> torch.Tensor:
        """Image ``i`` as uint8 C x H x W (may raise :class:`ImageDecodeError`)."""
        key = self.records[i].key
        if self.pixels is not None:
            array = self.pixels[self.rows[key]]
            array = array[:, :, None] if array.ndim == 2 else array
            tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
            return _match_channels(tensor, self.channels)
        return read_image(self.base / key, self.channels)

    def split(self, name: str, transform=None) -> SplitDataset:
        return SplitDataset(self, self.indices(name), transform)

    def write_manifest(self, path: str | Path) -> str:
        """Write the split manifest CSV; returns its sha256."""
        return write_manifest(path, self.records, self.class_names)

    def decode(
        self,
        split: str,
        size: int,
        num_threads: int | None = None,
        cache: str = "memory",
        progress: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode a whole split once, resized to ``size`` x ``size``: (N x C x S x S uint8, N labels — N x L
        targets for a multi-label dataset, :meth:`labels_of`).

        ``cache="memory"`` decodes into RAM; ``"disk"`` (folder datasets) into a memory-mapped file in
        ``$ZOO_CACHE`` that later runs reuse (:mod:`zoo.data.cache`): the same pixels either way. Unreadable
        images are skipped and counted; more than ``MAX_BAD_FRACTION`` of them (and more than one) is an error.
        """
        if cache not in ("memory", "disk"):
            raise ValueError(f"cache must be memory or disk, got {cache!r}")
        idx = self.indices(split)
        shape = (self.channels, size, size)
        labels = [self.records[i].label for i in idx]

        def decode_one(k: int) -> torch.Tensor | None:
            try:
                return TF.resize(self.read(idx[k]), [size, size], antialias=True)
            except ImageDecodeError as e:
                log.warning("skipping %s", e)
                return None

        workers = num_threads or os.cpu_count() or 1
        if cache == "disk" and self.base is not None and idx:
            files = [self.records[i].key for i in idx]
            request = CacheRequest.of(self.spec.name, self.base, split, files, labels, size, self.channels)
            images, kept_labels, bad = decoded_split(request, decode_one, workers, progress)
        else:
            out = torch.empty((len(idx), *shape), dtype=torch.uint8)
            good = parallel_fill(decode_one, len(idx), workers, progress)(out.numpy())
            images = out if len(good) == len(idx) else out[good]  # no copy unless something was unreadable
            kept_labels = torch.tensor([labels[k] for k in good], dtype=torch.long)
            bad = sorted(set(range(len(idx))) - set(good))

        self._check_unreadable(split, len(idx), [self.records[idx[k]].key for k in bad])
        if self.multilabel:  # the cache keeps class indices (0 here): the targets come from the records
            dropped = set(bad)
            kept_labels = self.labels_of([i for k, i in enumerate(idx) if k not in dropped])
        return images, kept_labels

    def _check_unreadable(self, split: str, total: int, unreadable: list[str]) -> None:
        """Name the unreadable files (also when a disk cache built earlier skipped them); more than
        ``MAX_BAD_FRACTION`` of them (and more than one) is an error."""
        bad = len(unreadable)
        if bad:
            log.warning(
                "%s/%s: skipped %d unreadable of %d images: %s",
                self.spec.name,
                split,
                bad,
                total,
                ", ".join(unreadable),
            )
        if bad > max(1.0, MAX_BAD_FRACTION * total):
            raise ValueError(
                f"{bad} of {total} images in the {split} split of {self.spec.name} could not be read "
                f"(more than {MAX_BAD_FRACTION:.0%}); check the files, e.g. {', '.join(unreadable[:3])} "
                f"(the log names all {bad})."
            )
        if total and bad == total:
            raise ValueError(f"the {split} split of {self.spec.name} has no readable image")


class SplitDataset(Dataset):
    """A torch ``Dataset`` over one split: ``(transform(uint8 C x H x W), label)``."""

    def __init__(self, dataset: MedicalDataset, indices: list[int], transform=None):
        self.dataset, self.indices, self.transform = dataset, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image = self.dataset.read(self.indices[i])
        record = self.dataset.records[self.indices[i]]
        label = record.label if record.targets is None else torch.from_numpy(record.targets)
        return (self.transform(image) if self.transform else image), label


def _match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return image.expand(3, -1, -1).contiguous()
    return TF.rgb_to_grayscale(image)


def _not_found(spec: DatasetSpec, root: Path | None, why: str) -> DatasetNotFoundError:
    where = f" Download it from {spec.url} and unzip it there." if spec.url else ""
    return DatasetNotFoundError(
        f"{spec.name}: {why}. Expected the layout {spec.expected_layout()} under the dataset root "
        f"(given: {root}); wrapper folders such as archive/ are fine.{where}"
    )


def _split_folders(spec: DatasetSpec, folder: Path) -> dict[str, Path]:
    names = spec.split_dirs or (("train", "val", "test") if spec.class_names is None else ())
    found = {name: find_child(folder, name) for name in names}
    return {name: path for name, path in found.items() if path is not None}


def _class_folders(spec: DatasetSpec, parents: list[Path]) -> list[str]:
    if spec.class_names is not None:
        return list(spec.class_names)
    return sorted({c.name for p in parents for c in subfolders(p)})


def _locate(spec: DatasetSpec, root: Path) -> tuple[Path, dict[str, Path]]:
    """Find the folder holding the layout: (base, {official split: folder}) — shallowest match wins."""
    for folder in candidate_roots(root) if spec.class_names else [root]:
        splits = _split_folders(spec, folder)
        if spec.split_dirs and len(splits) < len(spec.split_dirs):
            continue
        parents = list(splits.values()) or [folder]
        if spec.class_names is None or any(find_child(p, c) for p in parents for c in spec.class_names):
            return folder, splits
    raise _not_found(spec, root, "no folder with the expected layout was found")


def _group(spec: DatasetSpec, path: Path, official: str | None) -> str:
    match = re.search(spec.group_pattern, path.name) if spec.group_pattern else None
    key = match.group(1) if match else path.stem
    return f"{official}/{key}" if spec.group_per_split and official else key


def _scan_folder(spec: DatasetSpec, root: Path) -> tuple[Path, list[str], list[Record]]:
    if not root.is_dir():
        raise _not_found(spec, root, "the dataset root does not exist")
    base, splits = _locate(spec, root)
    parents = splits or {None: base}
    class_names = _class_folders(spec, list(parents.values()))
    if len(class_names) < 2:
        raise ValueError(f"{spec.name}: found {len(class_names)} class folder(s) in {base}; need at least 2.")
    records: list[Record] = []
    skipped = Skipped(os.fspath(base))  # named once for the whole dataset, not once per class folder
    for label, name in enumerate(class_names):
        n_before = len(records)
        for official, parent in parents.items():
            folder = find_child(parent, name)
            for path in list_images(folder, spec.extensions, skipped) if folder else []:
                records.append(
                    Record(path.relative_to(base).as_posix(), label, official, _group(spec, path, official))
                )
        if len(records) == n_before:
            raise ValueError(
                f"{spec.name}: class folder {name!r} is missing or has no {'/'.join(spec.extensions)} images under "
                f"{base}; expected classes: {', '.join(class_names)}."
            )
    skipped.log(base)
    return base, class_names, records


def _load_npz(spec: DatasetSpec, root: Path, flag: str | None = None, size: int | None = None):
    path = root
    if root.is_dir():
        if flag is None:
            raise ValueError(
                "medmnist: pass the .npz file as root, or a folder plus flag=<name> (e.g. pathmnist)"
            )
        path = root / (f"{flag}.npz" if size in (None, 28) else f"{flag}_{size}.npz")
    if not path.exists():
        raise _not_found(spec, path, "the MedMNIST .npz file does not exist")
    images, labels, per_split = read_npz(path)  # every declaration checked before anything large is read
    splits = [s for s, n in zip(SPLITS, per_split, strict=True) for _ in range(n)]

    stem = path.stem.split("_")[0]
    multilabel = labels.ndim == 2
    num_classes = labels.shape[1] if multilabel else int(labels.max()) + 1
    class_names = list(MEDMNIST_LABELS.get(stem, ()))
    if len(class_names) != num_classes:  # an unknown flag, or a subset of a known one
        class_names = [f"{'label' if multilabel else 'class'}_{i}" for i in range(num_classes)]
    if multilabel:
        targets = labels.astype(np.float32)
        records = [Record(f"{splits[i]}/{i}", 0, splits[i], str(i), targets[i]) for i in range(len(labels))]
    else:
        records = [Record(f"{splits[i]}/{i}", int(labels[i]), splits[i], str(i)) for i in range(len(labels))]
    channels = 1 if images.ndim == 3 else 3
    return images, class_names, records, channels


def _load_synthetic(spec: DatasetSpec, num_images: int, size: int, seed: int):
    if num_images < 8 * len(spec.class_names):
        raise ValueError(
            f"synthetic: num_images must be at least {8 * len(spec.class_names)}, got {num_images}"
        )
    images, labels = synthetic.generate(num_images, size, seed)
    # five consecutive tiles of a class share a "slide" id, so grouped splits can be exercised
    records = [Record(f"tile/{i}", int(y), None, f"slide{y}-{i // 20}") for i, y in enumerate(labels)]
    return images, list(spec.class_names), records


def _read_records(spec: DatasetSpec, root, options: dict):
    """(pixels or None, base folder or None, class names, records, native channels) for any kind of dataset."""
    unknown = set(options) - set(spec.options) - ({"flag", "size"} if spec.kind == "npz" else set())
    if unknown:
        raise ValueError(
            f"{spec.name}: unknown options {sorted(unknown)}; valid: {sorted(spec.options) or 'none'}"
        )
    if spec.kind == "synthetic":
        pixels, class_names, records = _load_synthetic(spec, **{**spec.options, **options})
        return pixels, None, class_names, records, 3
    if root is None:
        raise _not_found(spec, None, "no dataset root was given")
    if spec.kind == "npz":
        pixels, class_names, records, native = _load_npz(spec, Path(root), **options)
        return pixels, None, class_names, records, native
    if spec.kind == "unlabelled":
        base, records = _scan_unlabelled(spec, Path(root))
        return None, base, list(spec.class_names), records, spec.channels
    if spec.kind == "csv":
        if not Path(root).is_dir():
            raise _not_found(spec, Path(root), "the dataset folder does not exist")
        class_names, records, _ = load_csv_records(Path(root), spec.extensions, **options)
        return None, Path(root), class_names, records, spec.channels
    base, class_names, records = _scan_folder(spec, Path(root))
    return None, base, class_names, records, spec.channels


def _scan_unlabelled(spec: DatasetSpec, root: Path) -> tuple[Path, list[Record]]:
    """Every image below ``root``, at any depth (junk files and links back to ancestors skipped), no labels."""
    if not root.is_dir():
        raise _not_found(spec, root, "the folder does not exist")
    prefix = len(os.fspath(root).rstrip(os.sep)) + 1  # relative paths by slicing: Path.relative_to is slow
    keys = [p[prefix:].replace(os.sep, "/") for p in list_image_paths(root, spec.extensions)]
    records = [Record(key, 0, None, key) for key in keys]
    if len(records) < 2:
        raise ValueError(
            f"folder: found {len(records)} image(s) below {root}; need at least 2 ({'/'.join(spec.extensions)})"
        )
    return root, records


def _split_policy(spec: DatasetSpec, records: list[Record], requested: str | None, grouped: bool) -> str:
    policy = requested or spec.split_policy
    if policy == "official" and spec.class_names is None and not any(r.split == "test" for r in records):
        return "random"  # an imagefolder without a test folder
    if grouped and spec.leaky_official_split:
        return "random"  # the official split mixes groups: redraw it
    return policy


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    channels: int | None = None,
    split_policy: str | None = None,
    grouped: bool = False,
    seed: int = DEFAULT_SPLIT_SEED,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    manifest: str | Path | None = None,
    **options,
) -> MedicalDataset:
    """Load registered dataset ``name`` from ``root`` with seeded, stratified splits.

    Args:
        root: the unzipped download (any wrapper folder), a MedMNIST ``.npz``, or None for ``synthetic``.
        channels: 1 or 3 to override the dataset's own (3 on a grayscale set = the study's RGB conversion).
        split_policy: ``official`` or ``random``; default: the original study's policy for this dataset.
        grouped: keep each slide / source image / patient on one side of every split (no leakage).
        seed: split seed; 16 as in the original study.
        manifest: a split manifest CSV to reuse instead of drawing a split (must match the files).
        options: kind-specific (``synthetic``: num_images, size, seed; ``medmnist``: flag, size;
            ``multilabel-csv``: csv, layout, uncertain, labels, image_column, patient_column — see
            :mod:`zoo.data.labels_csv`).
    """
    spec = get_dataset_spec(name)
    pixels, base, class_names, records, native = _read_records(spec, root, options)
    task = MULTILABEL if records and records[0].targets is not None else MULTICLASS
    if task == MULTILABEL and not grouped and any(r.group != r.key for r in records) and spec.kind == "csv":
        log.warning(
            "%s names the patients of its images, but the split is not grouped: one patient's images may land in "
            "train and test (leakage); pass --grouped-split true",
            spec.name,
        )
    rows = {r.key: i for i, r in enumerate(records)} if pixels is not None else {}
    records.sort(key=lambda r: r.key)  # file-system order never matters
    if manifest is not None:
        _apply_manifest(records, class_names, manifest)
    else:
        assign_splits(
            records,
            policy=_split_policy(spec, records, split_policy, grouped),
            seed=seed,
            grouped=grouped,
            merge_official_val=spec.merge_official_val,
            val_fraction=val_fraction or spec.val_fraction,
            test_fraction=test_fraction or spec.test_fraction,
            label_names=class_names,
        )
    channels = channels or native
    mean, std = _normalisation(spec, native, channels)
    return MedicalDataset(spec, class_names, records, channels, mean, std, base, pixels, rows, task)


def _normalisation(
    spec: DatasetSpec, native: int, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if len(spec.mean) == channels:
        return spec.mean, spec.std
    if channels == 3:  # grayscale shown as RGB: the study's mean = std = 0.5
        return (spec.mean[0],) * 3, (spec.std[0],) * 3
    return (float(np.mean(spec.mean)),), (float(np.mean(spec.std)),)


def _apply_manifest(records: list[Record], class_names: list[str], manifest: str | Path) -> None:
    rows = {row[0]: row for row in read_manifest(manifest, max_rows=2 * len(records) + 1000)}
    on_disk = {r.key for r in records}
    missing, extra = sorted(set(rows) - on_disk), sorted(on_disk - set(rows))
    if missing or extra:
        raise ValueError(
            f"split manifest {manifest} does not match the files on disk: {len(missing)} listed but missing "
            f"(e.g. {missing[:3]}), {len(extra)} on disk but not listed (e.g. {extra[:3]})."
        )
    for r in records:
        _, label, split, _ = rows[r.key]
        own = class_names[r.label] if r.targets is None else target_text(r.targets, class_names)
        if label != own:
            raise ValueError(
                f"split manifest {manifest}: {r.key} is labelled {label!r}, the data says {own!r}"
            )
        r.split = split
