"""MedSSL Zoo demo: upload a histology tile or a chest X-ray, see what a zoo model predicts and where it looks.

    python demo/app.py                         # the locally exported default model, on http://127.0.0.1:7860
    python demo/app.py --model vicreg-breast --port 8000
    python demo/app.py --model ./zoo_home/my-model --host 0.0.0.0   # only if you mean to serve your network

API (gradio_client): ``Client(url).predict(handle_file(path), model, "", True, 3, api_name="/classify")``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no outbound lookups

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradio as gr
import numpy as np
import timm
import torch
from PIL import Image

import zoo
from medssl_zoo.demo.imaging import ImageDecodeError, read_upload
from medssl_zoo.demo.saliency import grad_cam, overlay
from zoo.hub_format import zoo_home

__all__ = ["build_demo", "classify", "preprocess", "get_model", "default_model"]

DEFAULT_MODEL = "simclr-synthetic"
FILE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"]
MAX_UPLOAD = "200mb"
_MODELS: dict[str, torch.nn.Module] = {}
_LOADING: dict[str, threading.Lock] = {}
_LOCK = threading.Lock()  # guards the two dicts only, never held while a model loads
OPERATOR_MODELS: set[str] = set()  # what the operator named with --model: the only paths the demo may load


def get_model(name: str) -> torch.nn.Module:
    """Load once, then serve from memory (thread-safe). Requests for a model being loaded wait for that load
    only; every other request, loaded models included, goes on meanwhile.

    Names typed into the page load registered names, ``$ZOO_HOME`` exports and Hub ids only; a path on the
    server loads only when the operator named it with ``--model``."""
    with _LOCK:
        if name in _MODELS:
            return _MODELS[name]
        loading = _LOADING.setdefault(name, threading.Lock())
    with loading:
        with _LOCK:
            if name in _MODELS:
                return _MODELS[name]
        model = zoo.load(name, local_paths=name in OPERATOR_MODELS)
        with _LOCK:
            _MODELS[name] = model
            _LOADING.pop(name, None)
    return model


def default_model() -> str | None:
    local = zoo.registry.local_models()
    return DEFAULT_MODEL if DEFAULT_MODEL in local else (local[0] if local else None)


@functools.cache
def _eval_transform(model: torch.nn.Module) -> tuple:
    """(timm eval transform, data config) of a model, built once per loaded model."""
    config = timm.data.resolve_data_config({}, model=model)
    return timm.data.create_transform(**config, is_training=False), config


def preprocess(image: Image.Image, model: torch.nn.Module) -> tuple[torch.Tensor, Image.Image]:
    """The model's own eval transform (timm data config): (1 x C x H x W tensor, the cropped input as an image)."""
    transform, config = _eval_transform(model)
    tensor = transform(image).unsqueeze(0)
    mean = torch.tensor(config["mean"]).view(-1, 1, 1)
    std = torch.tensor(config["std"]).view(-1, 1, 1)
    shown = ((tensor[0] * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    return tensor, Image.fromarray(shown[:, :, 0] if shown.shape[2] == 1 else shown)


def _describe(model: torch.nn.Module, image: Image.Image, original_mode: str) -> str:
    cfg = model.pretrained_cfg
    c, h, w = cfg["input_size"]
    return (
        f"**Preprocessing** — uploaded {image.size[0]}×{image.size[1]} {original_mode}, converted to "
        f"{'grayscale' if c == 1 else 'RGB'} ({c} channel{'s' if c > 1 else ''}); resize to "
        f"{round(min(h, w) / cfg.get('crop_pct', 1.0))} px, centre crop {h}×{w} "
        f"(crop_pct {cfg.get('crop_pct', 1.0)}, {cfg.get('interpolation', 'bilinear')}); normalise with mean "
        f"{[round(m, 3) for m in cfg['mean']]}, std {[round(s, 3) for s in cfg['std']]}."
    )


def model_card(model: torch.nn.Module, name: str) -> str:
    meta = model.zoo_metadata or {}
    metrics = meta.get("metrics", {})
    scores = ", ".join(
        f"{k.replace('_', ' ')} {metrics[k]:.3f}"
        for k in ("linear_accuracy", "knn_accuracy", "auroc")
        if isinstance(metrics.get(k), float)
    )
    return (
        f"**{name}** — {meta.get('method', 'unknown method')} on {meta.get('dataset', 'unknown data')}, "
        f"{model.pretrained_cfg.get('architecture', type(model).__name__)}; classes: {', '.join(model.label_names)}."
        f"{f' Test: {scores}.' if scores else ''}\n\n⚠️ Research use only — **not for clinical decisions**."
    )


def classify(file, choice: str, custom: str, saliency: bool = True, top_k: int = 3):
    """The one API endpoint: (file, model name, custom name/repo id, saliency?, top-k) → label, overlay, 2 texts."""
    name = (custom or "").strip() or choice
    if not name:
        raise gr.Error(
            "Pick a model, or type a Hub repo id. Train one with `accelerate launch train/pretrain.py`."
        )
    if file is None:
        raise gr.Error("Upload an image first (PNG, JPEG, TIFF or DICOM).")
    path = file if isinstance(file, str) else getattr(file, "name", None) or file["path"]
    try:
        model = get_model(name)
    except (zoo.ModelNotAvailableError, ValueError) as e:
        raise gr.Error(f"Cannot load model {name!r}: {e}") from e
    channels = model.pretrained_cfg["input_size"][0]
    try:
        image, original_mode = read_upload(path, channels)
    except (ImageDecodeError, OSError) as e:
        raise gr.Error(f"Could not read the upload: {e}") from e
    x, shown = preprocess(image, model)
    with torch.inference_mode():
        probabilities = model(x).softmax(dim=1)[0]
    k = max(1, min(int(top_k), len(probabilities)))
    labels = model.label_names or [f"class {i}" for i in range(len(probabilities))]
    result = {labels[i]: float(probabilities[i]) for i in probabilities.topk(k).indices.tolist()}
    heat = overlay(shown, grad_cam(model, x, int(probabilities.argmax()))) if saliency else None
    return result, heat, _describe(model, image, original_mode), model_card(model, name)


def example_files() -> list[str]:
    """Free-to-ship examples, generated on first use: one synthetic tile per class, plus scikit-image's CC0 /
    unrestricted tissue images and pydicom's test CT when those packages are installed."""
    folder = zoo_home() / "demo-examples"
    folder.mkdir(parents=True, exist_ok=True)
    from zoo.data.synthetic import CLASS_NAMES, render_tile

    paths = []
    for label, name in enumerate(CLASS_NAMES):
        path = folder / f"synthetic-{name}.png"
        if not path.exists():
            Image.fromarray(render_tile(np.random.default_rng([123, label]), label, 128)).save(path)
        paths.append(str(path))
    try:
        from skimage import data as skdata

        path = folder / "skimage-immunohistochemistry.png"
        if not path.exists():
            Image.fromarray(skdata.immunohistochemistry()).save(path)
        paths.append(str(path))
    except ImportError:
        pass
    try:
        from pydicom.data import get_testdata_file

        paths.append(get_testdata_file("CT_small.dcm"))
    except (ImportError, ValueError):
        pass
    return paths


def build_demo(model: str | None = None) -> gr.Blocks:
    choices = zoo.list_models()
    initial = model or default_model()
    with gr.Blocks(title="MedSSL Zoo demo") as demo:
        gr.Markdown(
            "# MedSSL Zoo\nSelf-supervised encoders for small medical datasets. "
            "Upload a histology tile or a chest X-ray. **Research use only, not for clinical decisions.**"
        )
        with gr.Row():
            with gr.Column():
                picker = gr.Dropdown(
                    choices=choices,
                    value=initial if initial in choices else None,
                    label="Model",
                    allow_custom_value=True,
                )
                custom = gr.Textbox(
                    label="…or a Hub repo id (org/name)", value="" if initial in choices else (initial or "")
                )
                upload = gr.File(
                    label="Image (PNG, JPEG, TIFF, DICOM)", file_types=FILE_TYPES, type="filepath"
                )
                with gr.Row():
                    saliency = gr.Checkbox(value=True, label="Saliency (Grad-CAM)")
                    top_k = gr.Slider(1, 10, value=3, step=1, label="Top-k")
                run = gr.Button("Classify", variant="primary", elem_id="classify-button")
            with gr.Column():
                label = gr.Label(label="Prediction", elem_id="prediction")
                heat = gr.Image(label="Where the model looks", type="pil")
                info = gr.Markdown()
                card = gr.Markdown()
        gr.Examples(example_files(), inputs=[upload], label="Examples")
        run.click(
            classify,
            [upload, picker, custom, saliency, top_k],
            [label, heat, info, card],
            api_name="classify",
        )
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="demo",
        description="MedSSL Zoo Gradio demo: upload an image, see the class probabilities and a Grad-CAM map.",
    )
    parser.add_argument(
        "--model",
        help="registry name, $ZOO_HOME export, folder or Hub repo id shown first (default: the local default "
        "model); visitors may pick registered names, $ZOO_HOME exports and Hub ids, never other server paths",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--share", action="store_true", help="create a public gradio.live link (off by default)"
    )
    args = parser.parse_args(argv)
    if args.model:
        OPERATOR_MODELS.add(args.model)
        get_model(args.model)  # fail fast, before the server starts, on an unknown model
    demo = build_demo(args.model)
    demo.queue(default_concurrency_limit=2, max_size=256)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        show_error=True,
        max_file_size=MAX_UPLOAD,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
