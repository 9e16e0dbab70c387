"""Medical datasets in their real on-disk layouts, seeded splits, and SSL / eval transforms."""

from zoo.data._registry import DatasetSpec, get_dataset_spec, list_datasets, register_dataset
from zoo.data.dataset import DatasetNotFoundError, MedicalDataset, SplitDataset, load_dataset
from zoo.data.images import ImageDecodeError, read_image
from zoo.data.splits import Record, read_manifest
from zoo.data.transforms import TwoViews, eval_transform, ssl_transform

__all__ = [
    "DatasetNotFoundError",
    "DatasetSpec",
    "ImageDecodeError",
    "MedicalDataset",
    "Record",
    "SplitDataset",
    "TwoViews",
    "eval_transform",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset",
    "read_image",
    "read_manifest",
    "register_dataset",
    "ssl_transform",
]
