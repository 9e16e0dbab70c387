"""The catalogue: public encoders of the Hugging Face Hub as entries of the one registry :func:`zoo.load` reads.

Everything that shapes a catalogue model is trusted code here: the timm architecture, its constructor kwargs
(classes such as ``SwiGLUPacked`` cannot be stored in a ``config.json``, and a downloaded one is never read for
kwargs), the pooling, the input size and normalisation. Each entry also carries what a user must know before using
the weights — the licence, whether derived weights may be redistributed, whether the repository is gated and where
access is requested, the citation — and every card built on the entry carries them on (``zoo_metadata``).

Facts come from the models' cards, repositories and papers, and from kaiko-ai/eva's loaders
(``src/eva/vision/models/networks/backbones/pathology/*.py`` at 73b61a7); each entry's ``sources`` says where each
fact was read. Parameter counts and embedding widths are measured by building each entry on the ``meta`` device
with timm 1.0.31 (``tests/faults/test_catalogue.py`` checks them against the cards' headline numbers). Revisions
are the newest commits seen in public records; ``UNVERIFIED`` marks a fact that could not be read at its primary
source (the gated originals cannot be read without access).

    >>> encoder = zoo.load("uni", features_only=True)   # gated: request access, then `hf auth login`
    >>> encoder(x).shape                                # N x 1024, UNI's own pooling and normalisation
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import timm
import torch
from timm.layers import SwiGLUPacked
from torch import nn

from zoo.pooling import POOLINGS, pooled_width
from zoo.registry import MODELS, ModelEntry, get_entry

__all__ = [
    "ENTRIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CatalogueEntry",
    "build_encoder",
    "catalogue_entry",
    "catalogue_info",
    "catalogue_names",
    "measured",
    "register_encoder",
]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MODALITIES = ("pathology", "chest x-ray", "natural images")
SAFETENSORS, PICKLE = "model.safetensors", "pytorch_model.bin"


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, kw_only=True)
class CatalogueEntry(ModelEntry):
    """A public encoder: where its weights are, how timm builds it, how it is used, and on which terms.

    Attributes:
        architecture: the timm architecture name (no pretrained tag: the weights come from ``repo_id``).
        kwargs: its constructor kwargs, trusted code (never taken from a downloaded ``config.json``).
        pooling: ``cls``, ``cls+mean-patch`` (CLS ⊕ mean of the patch tokens, registers excluded) or ``avg``.
        width, params: the embedding width under ``pooling`` and the parameter count (meta-device build).
        input_size, mean, std, interpolation, crop_pct: the model's own preprocessing.
        weights_files: the files tried in order (safetensors first where the repository has it; a
            ``pytorch_model.bin`` is read with PyTorch's weights-only unpickler).
        license: the Hugging Face licence id (``other`` with ``license_name`` when it has none);
            ``redistribute``: whether weights derived from it may be published.
        gated, access_url: whether downloads need an accepted access request, and where it is made.
        modality, citation, sources (fact → where it was read), notes.
    """

    architecture: str
    kwargs: Mapping = field(default_factory=dict, hash=False)
    pooling: str = "cls"
    width: int
    params: int
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    weights_files: tuple[str, ...] = (SAFETENSORS, PICKLE)
    modality: str
    license: str
    license_name: str = ""
    license_link: str = ""
    redistribute: bool
    gated: bool = False
    access_url: str = ""
    citation: str = ""
    sources: Mapping = field(default_factory=dict, hash=False)
    notes: str = ""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "kwargs", _frozen(self.kwargs))
        object.__setattr__(self, "sources", _frozen(self.sources))
        checks = {
            "a timm architecture": timm.is_model(self.architecture),
            f"pooling in {POOLINGS}": self.pooling in POOLINGS,
            f"modality in {MODALITIES}": self.modality in MODALITIES,
            "positive width and params": self.width > 0 and self.params > 0,
            "3 means and stds": len(self.mean) == len(self.std) == 3 and all(s > 0 for s in self.std),
            "crop_pct in (0, 1]": 0 < self.crop_pct <= 1 and math.isfinite(self.crop_pct),
            "weights files (.safetensors / .bin)": bool(self.weights_files)
            and all(f.endswith((".safetensors", ".bin")) for f in self.weights_files),
            "an access URL when gated": self.access_url.startswith("https://") or not self.gated,
            "a licence": bool(self.license),
        }
        broken = [what for what, ok in checks.items() if not ok]
        if broken:
            raise ValueError(f"catalogue entry {self.name}: needs {', '.join(broken)}")

    @property
    def pretrained_cfg(self) -> dict:
        """timm's ``pretrained_cfg`` of the loaded model: the entry's own preprocessing and licence (what
        ``timm.data.resolve_data_config`` and :func:`zoo.data.eval_transform` read)."""
        return {
            "architecture": self.architecture,
            "input_size": (3, self.input_size, self.input_size),  # tuples, as timm's own cfgs
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "num_classes": 0,
            "license": self.license_name or self.license,
            "hf_hub_id": self.repo_id,
        }

    def terms(self) -> dict:
        """What travels with the entry into every card, run and export built on it."""
        return {
            "name": self.name,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "license": self.license,
            "license_name": self.license_name or self.license,
            "license_link": self.license_link,
            "redistribute": self.redistribute,
            "gated": self.gated,
            "access_url": self.access_url,
            "citation": self.citation,
        }


def register_encoder(entry: CatalogueEntry, *, overwrite: bool = False) -> CatalogueEntry:
    """Add ``entry`` to the registry (trusted code only: a registry file cannot carry constructor kwargs)."""
    if not isinstance(entry, CatalogueEntry):
        raise ValueError("register_encoder takes a CatalogueEntry; use zoo.register for exported models")
    return MODELS.register(entry, overwrite=overwrite)


def catalogue_entry(name) -> CatalogueEntry | None:
    """The catalogue entry called ``name`` (None for any other name, a path or a Hub id)."""
    entry = get_entry(name) if isinstance(name, str) else None
    return entry if isinstance(entry, CatalogueEntry) else None


def catalogue_names() -> list[str]:
    return [e.name for e in MODELS if isinstance(e, CatalogueEntry)]


def build_encoder(entry: CatalogueEntry, device: str | torch.device | None = None) -> nn.Module:
    """The entry's timm model without weights (``device="meta"``: no memory, to read shapes and sizes), built
    from the trusted kwargs with no classifier."""
    kwargs = {**entry.kwargs, "num_classes": 0}
    if device is None:
        return timm.create_model(entry.architecture, pretrained=False, **kwargs)
    with torch.device(device):
        return timm.create_model(entry.architecture, pretrained=False, **kwargs)


def _swiglu(**kwargs) -> dict:
    """SwiGLU MLPs: ``VisionTransformer`` passes its own ``act_layer`` (GELU by default) into ``mlp_layer``, which
    overrides the SiLU of ``SwiGLUPacked``'s partial; the weights still load, only the outputs are wrong — so
    the act_layer is always given with it (UNI README ``timm_kwargs``; timm layers/mlp.py ``SwiGLUPacked``)."""
    return {**kwargs, "mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU}


MAHMOOD_CITATION = (
    "Chen R.J. et al., Towards a general-purpose foundation model for computational pathology, Nature Medicine "
    "30, 850-862 (2024), doi:10.1038/s41591-024-02857-3"
)
MAHMOOD_TERMS = (
    "UNI README 'License and Terms of Use': CC-BY-NC-ND 4.0, non-commercial academic research only; no "
    "distribution of the models or of models trained on their outputs"
)

ENTRIES = [
    CatalogueEntry(
        name="uni",
        repo_id="MahmoodLab/UNI",
        revision="b55a5ec6cade1a39edfe6534189a9b8ca7a022f0",
        description="UNI, ViT-L/16 pre-trained with DINOv2 on Mass-100K H&E tiles",
        architecture="vit_large_patch16_224",
        kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        pooling="cls",
        width=1024,
        params=303_350_784,
        interpolation="bilinear",
        weights_files=(PICKLE,),
        modality="pathology",
        license="cc-by-nc-nd-4.0",
        redistribute=False,
        gated=True,
        access_url="https://huggingface.co/MahmoodLab/UNI",
        citation=MAHMOOD_CITATION,
        sources={
            "kwargs": "mahmoodlab/UNI README_old.md l.49-50, 68-70 (init_values must be passed); "
            "uni/get_encoder/get_encoder.py; eva mahmood.py l.14-41",
            "pooling": "README_old.md l.97: model(image) is [1, 1024] (CLS, global_pool token)",
            "preprocessing": "config.json pretrained_cfg (bilinear, crop_pct 1, ImageNet mean/std) via third-party "
            "copies (chill112/UNI-fixed); the gated original UNVERIFIED",
            "weights": "README_old.md l.67 hf_hub_download(..., 'pytorch_model.bin'); no safetensors seen",
            "revision": "models--MahmoodLab--UNI/snapshots/b55a5ec… in 4 public repositories",
            "license": MAHMOOD_TERMS,
            "params": "meta build 303,350,784 (card: ViT-L/16, ~303 M)",
        },
    ),
    CatalogueEntry(
        name="uni2-h",
        repo_id="MahmoodLab/UNI2-h",
        revision="d517a8dd47902dd7c308b3c36f63bce47e7b9a43",
        description="UNI2-h, ViT-H/14 with 8 registers, pre-trained on 200M+ H&E and IHC tiles",
        architecture="vit_giant_patch14_224",
        kwargs=_swiglu(
            img_size=224,
            patch_size=14,
            depth=24,
            num_heads=24,
            init_values=1e-5,
            embed_dim=1536,
            mlp_ratio=2.66667 * 2,
            no_embed_class=True,
            reg_tokens=8,
            dynamic_img_size=True,
        ),
        pooling="cls",
        width=1536,
        params=681_394_176,
        interpolation="bilinear",
        modality="pathology",
        license="cc-by-nc-nd-4.0",
        redistribute=False,
        gated=True,
        access_url="https://huggingface.co/MahmoodLab/UNI2-h",
        citation=MAHMOOD_CITATION,
        sources={
            "kwargs": "UNI README.md timm_kwargs; get_encoder.py 'uni2-h'; eva mahmood.py l.44-81 (identical)",
            "pooling": "UNI README: feature_emb of shape [1, 1536] (CLS)",
            "preprocessing": "UNI README: Resize(224), CenterCrop(224), ImageNet normalisation",
            "weights": "UNI README hf_hub_download(..., 'pytorch_model.bin'); model.safetensors UNVERIFIED (tried first)",
            "revision": "HF-cache snapshot paths in 3 public repositories",
            "license": MAHMOOD_TERMS,
            "params": "meta build 681,394,176",
        },
    ),
    CatalogueEntry(
        name="virchow2",
        repo_id="paige-ai/Virchow2",
        revision="3158645804b69e3f3bc4439d4116edddf0840a72",
        description="Virchow2, ViT-H/14 with 4 registers, pre-trained on 3.1M mixed-magnification slides",
        architecture="vit_huge_patch14_224",
        kwargs=_swiglu(
            img_size=224,
            init_values=1e-5,
            reg_tokens=4,
            mlp_ratio=5.3375,
            global_pool="",
            dynamic_img_size=True,
        ),
        pooling="cls+mean-patch",
        width=2560,
        params=631_239_424,
        weights_files=(SAFETENSORS, PICKLE),
        modality="pathology",
        license="cc-by-nc-nd-4.0",
        redistribute=False,
        gated=True,
        access_url="https://huggingface.co/paige-ai/Virchow2",
        citation="Zimmermann E. et al., Virchow2: Scaling Self-Supervised Mixed Magnification Models in "
        "Pathology, arXiv:2408.00738 (2024)",
        sources={
            "kwargs": "config.json model_args (two consistent third-party copies) + mlp_layer / act_layer from "
            "the card's usage and eva paige.py l.17-50",
            "pooling": "card: embedding = cat([output[:, 0], output[:, 5:].mean(1)]) ('tokens 1-4 are register "
            "tokens'), 1 x 2560 — not eva's default, whose mean would include the registers",
            "preprocessing": "config.json pretrained_cfg: 224, bicubic, crop_pct 1.0, ImageNet mean/std",
            "weights": "Hub page tags Safetensors; snapshot paths name model.safetensors and pytorch_model.bin",
            "license": "Hub page header: cc-by-nc-nd-4.0 (Virchow v1 is Apache-2.0: not this one)",
            "params": "meta build 631,239,424 (arXiv 2408.00738: 632 million)",
        },
    ),
    CatalogueEntry(
        name="h-optimus-0",
        repo_id="bioptimus/H-optimus-0",
        revision="7bb31657b49434acc78732d9e2f393b846619393",
        description="H-optimus-0, ViT-g/14 with 4 registers, pre-trained on 500k+ H&E slides",
        architecture="vit_giant_patch14_reg4_dinov2",
        kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
        pooling="cls",
        width=1536,
        params=1_134_774_272,
        mean=(0.707223, 0.578729, 0.703617),
        std=(0.211883, 0.230117, 0.177517),
        weights_files=(PICKLE,),
        modality="pathology",
        license="apache-2.0",
        redistribute=True,
        citation="Saillard C. et al., H-optimus-0 (2024), https://github.com/bioptimus/releases/tree/main/models/"
        "h-optimus/v0",
        sources={
            "kwargs": "card: init_values=1e-5, dynamic_img_size=False; the architecture's registered defaults carry "
            "SwiGLU + SiLU, 4 registers, no_embed_class (timm vision_transformer.py l.4246-4258); img_size 224 "
            "from config.json's fixed_input_size",
            "pooling": "config.json num_features 1536, global_pool token; eva IN_FEATURES 1536",
            "preprocessing": "config.json and card: own mean/std, 224 px tiles fed without resizing (crop_pct 1; "
            "bicubic for other sizes is timm's default, UNVERIFIED as the authors' choice)",
            "weights": "main holds pytorch_model.bin only (4,539,305,018 B); safetensors PR #4 not merged",
            "revision": "head of main, 'Fix task name for discoverability (#1)'",
            "license": "card YAML apache-2.0; bioptimus/releases LICENSE.md; not gated (UNVERIFIED: no prompt seen)",
            "params": "meta build 1,134,774,272 (card: 1.1B)",
        },
    ),
    CatalogueEntry(
        name="prov-gigapath",
        repo_id="prov-gigapath/prov-gigapath",
        revision="eba85dd46097c3eedfcc2a3a9a930baecb6bcc19",
        description="Prov-GigaPath tile encoder, ViT-g/16 pre-trained on 1.3B tiles of 171k slides",
        architecture="vit_giant_patch14_dinov2",
        kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-05,
            "mlp_ratio": 5.33334,
            "dynamic_img_size": True,
        },
        pooling="cls",
        width=1536,
        params=1_134_953_984,
        crop_pct=0.875,
        modality="pathology",
        license="apache-2.0",
        redistribute=True,
        gated=True,
        access_url="https://huggingface.co/prov-gigapath/prov-gigapath",
        citation="Xu H., Usuyama N. et al., A whole-slide foundation model for digital pathology from real-world "
        "data, Nature (2024), doi:10.1038/s41586-024-07441-w",
        notes="the gate's conditions ask for research use only (text UNVERIFIED): they travel in every card",
        sources={
            "kwargs": "config.json model_args (5 consistent third-party copies) + dynamic_img_size (eva gigapath.py "
            "l.11-33); SwiGLU + SiLU come from vit_giant_patch14_dinov2's registered defaults",
            "pooling": "README tile_encoder(x) (CLS, global_pool token); eva IN_FEATURES 1536",
            "preprocessing": "README: Resize(256, bicubic), CenterCrop(224), ImageNet normalisation",
            "license": "GitHub LICENSE Apache 2.0; the Hub gate asks to accept conditions (research use)",
            "params": "meta build 1,134,953,984 (~1.1B, ViT-g)",
        },
    ),
    CatalogueEntry(
        name="dinov2-vitb14",
        repo_id="timm/vit_base_patch14_dinov2.lvd142m",
        revision="1926dc569694559b394898d7ba5d88a775301036",
        description="DINOv2 ViT-B/14 (LVD-142M natural images): the general-domain reference",
        architecture="vit_base_patch14_dinov2",
        kwargs={"img_size": 518, "dynamic_img_size": True},
        pooling="cls",
        width=768,
        params=86_579_712,
        weights_files=(SAFETENSORS,),
        modality="natural images",
        license="apache-2.0",
        redistribute=True,
        citation="Oquab M. et al., DINOv2: Learning Robust Visual Features without Supervision, TMLR (2024), "
        "arXiv:2304.07193",
        notes="built at its native 518 px with dynamic_img_size, fed 224 px (position embeddings interpolated)",
        sources={
            "kwargs": "timm vit_base_patch14_dinov2 (init_values 1e-5 registered); weights at 518 px",
            "pooling": "DINOv2/DINOv3 cards: linear / k-NN on the class token",
            "preprocessing": "timm cfg: ImageNet mean/std, bicubic, crop_pct 1.0",
            "license": "timm cfg license='apache-2.0' and the Hub card",
            "params": "meta build 86,579,712",
        },
    ),
    CatalogueEntry(
        name="medmae-cxr-vitb16",
        repo_id="1aurent/vit_base_patch16_224.medmae_CXR_mae",
        revision=None,
        description="Med-MAE ViT-B/16, MAE pre-trained on 0.5M chest X-rays (no fine-tuning)",
        architecture="vit_base_patch16_224",
        kwargs={"img_size": 224},
        pooling="cls",
        width=768,
        params=85_798_656,
        weights_files=(SAFETENSORS,),
        modality="chest x-ray",
        license="apache-2.0",
        redistribute=True,
        citation="Xiao J., Bai Y., Yuille A., Zhou Z., Delving into Masked Autoencoders for Multi-Label Thorax "
        "Disease Classification, WACV 2023, arXiv:2210.12843",
        notes="trained on MIMIC-CXR and CheXpert: mention their data-use terms; revision not pinned (only the "
        "short sha d426948 was seen: the commit downloaded is recorded)",
        sources={
            "kwargs": "lambert-x/medical_mae models_vit.py: patch 16, no LayerScale, mlp_ratio 4",
            "pooling": "main_linprobe_chestxray.py l.79-81 global_pool=False (CLS)",
            "preprocessing": "ImageNet mean/std for CheXpert / MIMIC-CXR (util/dataloader_med.py)",
            "license": "lambert-x/medical_mae README and LICENSE: Apache 2.0; the re-host's tag apache-2.0",
            "params": "meta build 85,798,656",
        },
    ),
]

for _entry in ENTRIES:
    register_encoder(_entry)


def measured(entry: CatalogueEntry) -> dict:
    """Parameter count, embedding width and token layout of the entry's model, built on the meta device (no
    memory, no download: about a second for a ViT-g)."""
    model = build_encoder(entry, device="meta")
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "width": pooled_width(int(model.embed_dim), entry.pooling),
        "prefix_tokens": int(model.num_prefix_tokens),
        "class": type(model).__name__,
    }


def _kwarg_text(value):
    """A constructor kwarg as JSON shows it: classes and layer factories by name."""
    if value is SwiGLUPacked:
        return "timm.layers.SwiGLUPacked"
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return value


def catalogue_info(entry: CatalogueEntry) -> dict:
    """Everything known about ``entry`` (``medssl-zoo info NAME``), measured on the meta device."""
    built = measured(entry)
    return {
        "name": entry.name,
        "catalogue": True,
        "description": entry.description,
        "repo_id": entry.repo_id,
        "revision": entry.revision,
        "architecture": entry.architecture,
        "kwargs": {k: _kwarg_text(v) for k, v in entry.kwargs.items()},
        "pooling": entry.pooling,
        "embedding_width": built["width"],
        "parameters": built["params"],
        "prefix_tokens": built["prefix_tokens"],
        "pretrained_cfg": entry.pretrained_cfg,
        "modality": entry.modality,
        **{k: v for k, v in entry.terms().items() if k not in ("name", "repo_id", "revision")},
        "weights_files": list(entry.weights_files),
        "notes": entry.notes,
        "sources": dict(entry.sources),
    }
