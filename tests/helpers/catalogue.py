"""Stand-ins of the catalogue's public encoders: tiny models of the same timm families and kinds of kwargs
(LayerScale ``init_values``, register tokens, ``no_embed_class``, ``SwiGLUPacked`` + SiLU, ``dynamic_img_size``,
timm's ``Eva`` for DINOv3), served by the olah mirror from git repositories shaped like the real ones: a
``.bin``-only repository (UNI, H-optimus-0), safetensors (Virchow2), config.json files with extra top-level keys
and no ``model_args`` (UNI), with ``model_args`` and no ``num_classes`` (Virchow2), ``fixed_input_size`` and no
``crop_pct`` (H-optimus-0). Their kwargs are test-only catalogue entries in trusted code, as the real ones.

Sizes and shapes as measured in /work/briefs/catalogue-facts.md §4 (``embed_dim=32, depth=2, num_heads=2``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from tests.helpers.hub_server import git
from zoo.catalogue import PICKLE, SAFETENSORS, CatalogueEntry, catalogue_entry, register_encoder
from zoo.catalogue import _swiglu as swiglu

ORG = "medssl-test"
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}
OWN_MEAN, OWN_STD = (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)


def _entry(name: str, architecture: str, kwargs: dict, **facts) -> CatalogueEntry:
    """A stand-in entry; its width and parameter count measured on the meta device."""
    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, num_classes=0, **kwargs)
    embed_dim = model.embed_dim
    pooling = facts.pop("pooling", "cls")
    return CatalogueEntry(
        name=name,
        repo_id=f"{ORG}/{name}",
        revision=None,
        architecture=architecture,
        kwargs=kwargs,
        pooling=pooling,
        width=2 * embed_dim if pooling == "cls+mean-patch" else embed_dim,
        params=sum(p.numel() for p in model.parameters()),
        modality=facts.pop("modality", "pathology"),
        license=facts.pop("license", "apache-2.0"),
        redistribute=facts.pop("redistribute", True),
        **facts,
    )


STANDINS = {
    "standin-uni": _entry(
        "standin-uni",
        "vit_large_patch16_224",
        {**TINY, "img_size": 32, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        input_size=32,
        weights_files=(PICKLE,),
        license="cc-by-nc-nd-4.0",
        redistribute=False,
        interpolation="bilinear",
    ),
    "standin-uni2-h": _entry(
        "standin-uni2-h",
        "vit_giant_patch14_224",
        swiglu(
            **TINY,
            img_size=32,
            patch_size=16,
            init_values=1e-5,
            mlp_ratio=2.66667 * 2,
            no_embed_class=True,
            reg_tokens=8,
            dynamic_img_size=True,
        ),
        input_size=32,
        license="cc-by-nc-nd-4.0",
        redistribute=False,
    ),
    "standin-virchow2": _entry(
        "standin-virchow2",
        "vit_huge_patch14_224",
        swiglu(
            **TINY,
            img_size=32,
            patch_size=16,
            init_values=1e-5,
            reg_tokens=4,
            mlp_ratio=5.3375,
            global_pool="",
            dynamic_img_size=True,
        ),
        pooling="cls+mean-patch",
        input_size=32,
        weights_files=(SAFETENSORS, PICKLE),
        license="cc-by-nc-nd-4.0",
        redistribute=False,
    ),
    "standin-h-optimus-0": _entry(
        "standin-h-optimus-0",
        "vit_giant_patch14_reg4_dinov2",
        {**TINY, "img_size": 32, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": False},
        input_size=32,
        mean=OWN_MEAN,
        std=OWN_STD,
        weights_files=(PICKLE,),
    ),
    "standin-prov-gigapath": _entry(
        "standin-prov-gigapath",
        "vit_giant_patch14_dinov2",
        {**TINY, "img_size": 32, "patch_size": 16, "init_values": 1e-5, "mlp_ratio": 5.33334, "in_chans": 3},
        input_size=32,
        crop_pct=0.875,
    ),
    "standin-dinov2": _entry(
        "standin-dinov2",
        "vit_small_patch14_dinov2",
        {**TINY, "img_size": 28, "patch_size": 14},
        input_size=28,
    ),
    "standin-dinov3": _entry(
        "standin-dinov3",
        "vit_small_patch16_dinov3",
        {**TINY, "img_size": 32, "global_pool": "token"},
        input_size=32,
        modality="natural images",
    ),
}
SWIGLU = ("standin-uni2-h", "standin-virchow2", "standin-h-optimus-0", "standin-prov-gigapath")


def _config(entry: CatalogueEntry) -> dict:
    """A config.json shaped like the real repository's (§3 of the facts): what a stranger's repo may hold."""
    cfg = {
        "mean": list(entry.mean),
        "std": list(entry.std),
        "input_size": [3, entry.input_size, entry.input_size],
    }
    if entry.name == "standin-uni":  # extra top-level keys timm ignores, no model_args
        return {"architecture": entry.architecture, "init_values": 1.0, "img_size": 32, "num_classes": 0,
                "pretrained_cfg": {**cfg, "crop_pct": 1, "interpolation": "bilinear"}}  # fmt: skip
    if entry.name == "standin-virchow2":  # model_args, no num_classes
        args = {k: v for k, v in entry.kwargs.items() if k not in ("mlp_layer", "act_layer")}
        return {
            "architecture": entry.architecture,
            "model_args": {**args, "num_classes": 0},
            "pretrained_cfg": cfg,
        }
    if entry.name == "standin-h-optimus-0":  # fixed_input_size, no crop_pct
        return {"architecture": entry.architecture, "num_classes": 0, "global_pool": "token",
                "pretrained_cfg": {**cfg, "fixed_input_size": True}}  # fmt: skip
    return {"architecture": entry.architecture, "num_classes": 0, "pretrained_cfg": cfg}


def standin_weights(entry: CatalogueEntry, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights with LayerScale gammas drawn around 1 (at 1e-5 the blocks would not matter, and a
    wrong MLP activation or pooling would go unnoticed)."""
    torch.manual_seed(seed)
    model = timm.create_model(entry.architecture, pretrained=False, num_classes=0, **entry.kwargs)
    state = model.state_dict()
    for key in state:
        if key.rsplit(".", 1)[-1].startswith("gamma"):  # ViT ls1.gamma, Eva gamma_1
            state[key] = 1.0 + 0.5 * torch.randn_like(state[key])
        elif key.endswith(("cls_token", "reg_token")):
            state[key] = torch.randn_like(state[key])
    return state


def write_repo(root: Path, entry: CatalogueEntry, files: dict[str, bytes | Path]) -> str:
    """A git repository ``root/models/<repo_id>`` (the layout olah serves) with ``files``; its commit sha."""
    repo = root / "models" / entry.repo_id
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / ".gitattributes").write_text("*.safetensors binary\n*.bin binary\n")
    for name, content in files.items():
        (repo / name).write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"stand-in of {entry.name}")
    return git(repo, "rev-parse", "HEAD")


def publish(root: Path, entry: CatalogueEntry, scratch: Path, seed: int = 0) -> CatalogueEntry:
    """Serve ``entry``'s stand-in from the mirror root and register it pinned to that commit."""
    state = standin_weights(entry, seed)
    weights = scratch / f"{entry.name}-{entry.weights_files[0]}"
    if entry.weights_files[0] == SAFETENSORS:
        save_file(state, str(weights))
    else:
        torch.save(state, weights)
    files = {"config.json": json.dumps(_config(entry)).encode(), entry.weights_files[0]: weights}
    commit = write_repo(root, entry, files)
    return register_encoder(replace(entry, revision=commit), overwrite=True)


def publish_all(root: Path, scratch: Path) -> dict[str, CatalogueEntry]:
    scratch.mkdir(parents=True, exist_ok=True)
    return {name: publish(root, entry, scratch) for name, entry in STANDINS.items()}


def registered(name: str) -> CatalogueEntry:
    entry = catalogue_entry(name)
    assert entry is not None, f"{name} is not registered: use the standins fixture"
    return entry


def silu_everywhere(model: nn.Module) -> bool:
    return all(isinstance(block.mlp.act, nn.SiLU) for block in model.blocks)
