"""The dataset registry: one parameterised spec per dataset, no per-dataset loader code."""

from __future__ import annotations

from dataclasses import dataclass, field

from zoo._registry import Registry

__all__ = ["DatasetSpec", "register_dataset", "list_datasets", "get_dataset_spec"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the generic loader needs to know about one dataset.

    Attributes:
        name: registry name (``breast``, ``crc``, ...).
        kind: ``folder`` (class folders, optionally under split folders), ``npz`` (MedMNIST), ``unlabelled`` (every
            image below a folder, no classes), ``csv`` (an image folder and a multi-label CSV) or ``synthetic``.

        class_names: fixed class order (folder names); None = discovered, sorted (``imagefolder``).
        split_dirs: official split folders of the layout (e.g. ``("train", "test")``); empty = none.
        root_names: folder names that usually hold the data, for messages.
        channels: 3 for colour histology, 1 for grayscale X-rays (the original study converted both to RGB).
        extensions: accepted file extensions (lower case).
        split_policy: ``official`` (keep the official test set) or ``random``; see :mod:`zoo.data.splits`.
        merge_official_val: pool an official val folder into train before drawing val (pneumonia's 16 images).
        leaky_official_split: the official split is not group-disjoint (grouped splits then pool everything).
        group_pattern: regex whose first group extracts the group key (slide, source image, patient) from a
            file name; None = every image its own group.
        group_per_split: group keys restart between official split folders (pneumonia's patient numbers).
        mean, std: normalisation of the data config.
        license, citation, url, description: for errors and model cards.
    """

    name: str
    kind: str
    description: str
    class_names: tuple[str, ...] | None = None
    split_dirs: tuple[str, ...] = ()
    root_names: tuple[str, ...] = ()
    channels: int = 3
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    split_policy: str = "random"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    merge_official_val: bool = True
    leaky_official_split: bool = False
    group_pattern: str | None = None
    group_per_split: bool = False
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    license: str = "unknown"
    citation: str = ""
    url: str = ""
    options: dict = field(default_factory=dict)

    def expected_layout(self) -> str:
        """A one-line picture of the expected folder tree, for error messages."""
        if self.kind == "csv":
            return "ROOT/<labels>.csv (NIH or CheXpert columns) + images at any depth below ROOT"
        top = self.root_names[0] if self.root_names else "ROOT"
        classes = "{" + ",".join(self.class_names) + "}" if self.class_names else "<class>"
        splits = "{" + ",".join(self.split_dirs) + "}/" if self.split_dirs else ""
        return f"{top}/{splits}{classes}/*{'|'.join(self.extensions[:3])}"


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec, *, overwrite: bool = False) -> DatasetSpec:
    """Add ``spec`` to the dataset registry (a taken name is an error unless ``overwrite``)."""
    return DATASETS.register(spec, overwrite=overwrite)


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return DATASETS.names()


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; ``ValueError`` listing the valid names otherwise."""
    return DATASETS.get(name)


GRAY = dict(channels=1, mean=(0.5,), std=(0.5,))

register_dataset(
    DatasetSpec(
        name="breast",
        kind="folder",
        description="BreaKHis 400X breast histopathology (benign / malignant)",
        class_names=("benign", "malignant"),
        split_dirs=("train", "test"),
        root_names=("BreaKHis 400X", "BreaKHis400X"),
        split_policy="official",
        leaky_official_split=True,
        test_fraction=0.3,
        group_pattern=r"SOB_[BM]_[A-Za-z]+-(\d+-[A-Za-z0-9]+)-",
        license="research use only",
        citation="Spanhol et al., A Dataset for Breast Cancer Histopathological Image Classification, "
        "IEEE TBME 63(7), 2016",
        url="https://www.kaggle.com/datasets/forderation/breakhis-400x",
    )
)
register_dataset(
    DatasetSpec(
        name="crc",
        kind="folder",
        description="Kather 2016 colorectal cancer texture tiles (8 tissue classes)",
        class_names=(
            "01_TUMOR",
            "02_STROMA",
            "03_COMPLEX",
            "04_LYMPHO",
            "05_DEBRIS",
            "06_MUCOSA",
            "07_ADIPOSE",
            "08_EMPTY",
        ),
        root_names=("Kather_texture_2016_image_tiles_5000",),
        split_policy="random",
        group_pattern=r"(CRC-Prim-HE-\d+)",
        license="CC BY 4.0",
        citation="Kather et al., Multi-class texture analysis in colorectal cancer histology, Sci. Rep. 6, 2016",
        url="https://zenodo.org/record/53169",
    )
)
register_dataset(
    DatasetSpec(
        name="pneumonia",
        kind="folder",
        description="Pediatric chest X-rays, normal / pneumonia (Kermany 2018)",
        class_names=("NORMAL", "PNEUMONIA"),
        split_dirs=("train", "val", "test"),
        root_names=("chest_xray",),
        split_policy="official",
        merge_official_val=True,
        group_pattern=r"^((?:NORMAL2-)?IM-\d+|person\d+)",
        group_per_split=True,
        **GRAY,
        license="CC BY 4.0",
        citation="Kermany et al., Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep "
        "Learning, Cell 172(5), 2018",
        url="https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
    )
)
register_dataset(
    DatasetSpec(
        name="covid",
        kind="folder",
        description="COVID-19 chest X-rays (Covid / Normal / Viral Pneumonia)",
        class_names=("Covid", "Normal", "Viral Pneumonia"),
        split_dirs=("train", "test"),
        root_names=("Covid",),
        split_policy="official",
        **GRAY,
        license="see the Kaggle dataset page",
        citation="Kaggle COVID-19 image dataset (pranavraikokte/covid19-image-dataset)",
        url="https://www.kaggle.com/datasets/pranavraikokte/covid19-image-dataset",
    )
)
register_dataset(
    DatasetSpec(
        name="imagefolder",
        kind="folder",
        description="any folder of class sub-folders, optionally under train/val/test folders",
        split_policy="official",  # a test/ folder is the test split, a val/ folder the val split; else random
        merge_official_val=False,
        license="the user's",
    )
)
register_dataset(
    DatasetSpec(
        name="folder",
        kind="unlabelled",
        description="every image below a folder, at any depth, without labels (an archive to pre-train on)",
        class_names=("unlabelled",),
        split_policy="all-train",
        license="the user's",
    )
)
register_dataset(
    DatasetSpec(
        name="medmnist",
        kind="npz",
        description="a MedMNIST v2 npz file (any flag, 28/64/128/224 px)",
        root_names=("pathmnist.npz",),
        split_policy="official",
        merge_official_val=False,
        license="CC BY 4.0",
        citation="Yang et al., MedMNIST v2, Scientific Data 10, 2023",
        url="https://zenodo.org/records/10519652",
    )
)
register_dataset(
    DatasetSpec(
        name="multilabel-csv",
        kind="csv",
        description="an image folder plus a multi-label CSV (NIH ChestX-ray14 or CheXpert layout)",
        **GRAY,
        split_policy="random",
        license="the dataset's",
        options={
            "csv": None,
            "layout": "auto",
            "uncertain": "ignore",
            "labels": None,
            "image_column": None,
            "patient_column": None,
        },
    )
)
register_dataset(
    DatasetSpec(
        name="synthetic",
        kind="synthetic",
        description="embedded procedural histology-like tiles, 4 nuclear-morphology classes (no download)",
        class_names=("small_round", "large", "spindle", "gland"),
        split_policy="random",
        test_fraction=0.25,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        license="CC0 (generated)",
        citation="MedSSL Zoo synthetic histology generator",
        options={"num_images": 800, "size": 64, "seed": 0},
    )
)
