"""MedSSL Zoo demo: upload a histology tile or a chest X-ray, see what a zoo model predicts and where it looks.

    medssl-demo                         # the locally exported default model, on http://127.0.0.1:7860
    medssl-demo --model vicreg-breast --port 8000
    medssl-demo --model ./zoo_home/my-model --host 0.0.0.0   # only if you mean to serve your network

(In a checkout, `python demo/app.py` is the same program.)

API (gradio_client): ``Client(url).predict(handle_file(path), model, "", True, 3, api_name="/classify")``.
With ``--similar DIR`` (an embedding output made with the model, ``medssl-embed``) the page and the endpoint also
give the upload's most similar archive images, with their labels and similarity (a fifth output).

The server is open to strangers, so it is bounded: at most ``--max-models`` models are held in memory (the least
recently used is released first), Hub ids typed by visitors are only loaded with ``--allow-hub-ids``, each upload
is deleted once read (Gradio's ``delete_cache`` removes what is left, outputs included, after
``CACHE_MAX_AGE_S``), and messages shown to visitors name the model or "the upload", never a path on the server
(the full message goes to the server's log).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no outbound lookups

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import timm
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

import zoo
from medssl_zoo.demo.saliency import overlay, predict_with_cam
from medssl_zoo.demo.similar import SimilarCases
from medssl_zoo.demo.uploads import UploadError, read_once
from zoo.data.transforms import eval_resize_size, eval_transform
from zoo.hub_format import zoo_home
from zoo.optional import require
from zoo.registry import close_names, is_hub_id

gr = require("gradio", "the demo")  # an extra: pip install 'medssl-zoo[demo]'

__all__ = [
    "build_demo",
    "classify",
    "classify_with_similar",
    "preprocess",
    "get_model",
    "default_model",
    "add_operator_model",
    "SETTINGS",
]

log = logging.getLogger("demo")
DEFAULT_MODEL = "simclr-synthetic"
FILE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"]
MAX_UPLOAD = "200mb"
CACHE_SWEEP_S, CACHE_MAX_AGE_S = 60, 600  # Gradio's delete_cache: every minute, what is older than 10 minutes
MAX_NAME_SHOWN = 80  # characters of a typed model name repeated in a message
OOD_WARNING = "This image looks unlike the training data of {dataset}: the prediction may be meaningless."
# set by main from --max-models / --allow-hub-ids / --similar (a SimilarCases)
SETTINGS = {"max_models": 4, "allow_hub_ids": False, "similar": None}
_MODELS: OrderedDict[str, torch.nn.Module] = OrderedDict()  # least recently used first
_LOADING: dict[str, threading.Lock] = {}  # one lock per name being loaded, dropped when its load ends
_LOCK = threading.Lock()  # guards the two dicts only, never held while a model loads
_TRANSFORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # never keeps a released model alive
# what the operator named with --model, by the name visitors see (a folder's own name, never its path) → what
# was given: the only paths the demo may load
OPERATOR_MODELS: dict[str, str] = {}


def add_operator_model(source: str) -> str:
    """Register the operator's ``--model`` (a folder, name or Hub id); returns the name visitors see: a folder's
    own name, so that no server path is ever shown on the page."""
    path = Path(source).expanduser()
    shown = path.resolve().name if path.is_dir() else source
    OPERATOR_MODELS[shown] = source
    return shown


def get_model(name: str) -> torch.nn.Module:
    """Load once, then serve from memory (thread-safe), keeping at most ``SETTINGS["max_models"]`` models: the
    least recently used is released first. Requests for a model being loaded wait for that load only; every other
    request, loaded models included, goes on meanwhile. A failed load leaves nothing behind (its lock is dropped).

    ``name`` is an operator's model (:func:`add_operator_model`; the only way a server path is loaded), a
    registered name, a ``$ZOO_HOME`` export or a Hub id."""
    with _LOCK:
        if name in _MODELS:
            _MODELS.move_to_end(name)
            return _MODELS[name]
        loading = _LOADING.setdefault(name, threading.Lock())
    with loading:
        try:
            with _LOCK:
                if name in _MODELS:
                    _MODELS.move_to_end(name)
                    return _MODELS[name]
            model = zoo.load(OPERATOR_MODELS.get(name, name), local_paths=name in OPERATOR_MODELS)
            _keep(name, model)
            return model
        finally:
            with _LOCK:
                if _LOADING.get(name) is loading:
                    del _LOADING[name]


def _keep(name: str, model: torch.nn.Module) -> None:
    with _LOCK:
        _MODELS[name] = model
        _MODELS.move_to_end(name)
        while len(_MODELS) > max(1, int(SETTINGS["max_models"])):
            released, _ = _MODELS.popitem(last=False)
            log.info("released model %s (at most %d are kept)", released, SETTINGS["max_models"])


def default_model() -> str | None:
    local = zoo.registry.local_models()
    return DEFAULT_MODEL if DEFAULT_MODEL in local else (local[0] if local else None)


def _eval_transform(model: torch.nn.Module) -> tuple:
    """(eval transform, data config) of a model, built once per loaded model (and forgotten with it): the one
    :func:`zoo.data.eval_transform` that the exported metrics and the embeddings are measured with."""
    if model not in _TRANSFORMS:
        config = timm.data.resolve_data_config({}, model=model)
        _TRANSFORMS[model] = eval_transform(config), config
    return _TRANSFORMS[model]


def preprocess(image: Image.Image, model: torch.nn.Module) -> tuple[torch.Tensor, Image.Image]:
    """The model's own eval transform (timm data config): (1 x C x H x W tensor, the cropped input as an image)."""
    transform, config = _eval_transform(model)
    tensor = transform(pil_to_tensor(image)).unsqueeze(0)
    mean = torch.tensor(config["mean"]).view(-1, 1, 1)
    std = torch.tensor(config["std"]).view(-1, 1, 1)
    shown = ((tensor[0] * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    return tensor, Image.fromarray(shown[:, :, 0] if shown.shape[2] == 1 else shown)


def _describe(model: torch.nn.Module, image: Image.Image, original_mode: str) -> str:
    cfg = _eval_transform(model)[1]
    c, h, w = cfg["input_size"]
    return (
        f"**Preprocessing** — uploaded {image.size[0]}×{image.size[1]} {original_mode}, converted to "
        f"{'grayscale' if c == 1 else 'RGB'} ({c} channel{'s' if c > 1 else ''}); resize to "
        f"{eval_resize_size(cfg)} px, centre crop {h}×{w} "
        f"(crop_pct {cfg.get('crop_pct', 1.0)}, {cfg.get('interpolation', 'bilinear')}); normalise with mean "
        f"{[round(m, 3) for m in cfg['mean']]}, std {[round(s, 3) for s in cfg['std']]}."
    )


def _trained_on(meta: dict, unknown: str) -> str:
    """The data the classifier (and its OOD reference) was fitted on: a run's dataset, a head-only export's."""
    return meta.get("dataset") or meta.get("probe_dataset") or unknown


def _method(meta: dict) -> str:
    base = meta.get("base_model") if meta.get("head_only") else None
    return (
        f"a linear head on {base.get('name')}"
        if isinstance(base, dict)
        else meta.get("method", "unknown method")
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
        f"**{name}** — {_method(meta)} on {_trained_on(meta, 'unknown data')}, "
        f"{model.pretrained_cfg.get('architecture', type(model).__name__)}; "
        f"{'labels (multi-label)' if model.task == zoo.task.MULTILABEL else 'classes'}: {', '.join(model.label_names)}."
        f"{f' Test: {scores}.' if scores else ''}\n\n⚠️ Research use only — **not for clinical decisions**."
    )


def _shown(name: str) -> str:
    return repr(name if len(name) <= MAX_NAME_SHOWN else name[:MAX_NAME_SHOWN] + "…")


def _visitor_model(name: str) -> torch.nn.Module:
    """The model a visitor picked or typed, or a ``gr.Error`` that names it and never a server path (the full
    reason is logged): only the operator's models, registered names, ``$ZOO_HOME`` exports and, with
    ``--allow-hub-ids``, Hub ids are loaded."""
    try:
        if name not in OPERATOR_MODELS and is_hub_id(name) and not SETTINGS["allow_hub_ids"]:
            raise gr.Error(
                f"Cannot load model {_shown(name)}: this server does not download Hub repositories typed by "
                "visitors (its operator can allow it with --allow-hub-ids); pick one of the listed models."
            )
        if name not in OPERATOR_MODELS and not is_hub_id(name) and name not in zoo.list_models():
            close = ", ".join(close_names(name)) if len(name) <= MAX_NAME_SHOWN else ""
            raise gr.Error(
                f"Cannot load model {_shown(name)}: unknown model, not one of this server's models."
                + (f" Close names: {close}." if close else " Pick one of the listed models.")
            )
        return get_model(name)
    except gr.Error:
        raise
    except zoo.ModelNotAvailableError as e:
        log.warning("model %r cannot be loaded: %s", name, e)
        reason = "it is not available here now (not published yet, or its download failed)"
    except Exception as e:  # a broken model folder or registry: the visitor gets no server detail
        log.warning("model %r cannot be loaded: %s: %s", name, type(e).__name__, e)
        reason = "its files are damaged or do not fit its configuration"
    raise gr.Error(f"Cannot load model {_shown(name)}: {reason}; the server's log has the details.")


def _classify(file, choice: str, custom: str, saliency: bool, top_k: int, request) -> tuple:
    """(label, overlay, preprocessing, card) of an upload, and the model and image they came from."""
    name = (custom or "").strip() or choice
    if not name:
        raise gr.Error("Pick a model, or type a model name. Train one with `medssl-pretrain`.")
    if file is None:
        raise gr.Error("Upload an image first (PNG, JPEG, TIFF or DICOM).")
    path = Path(file if isinstance(file, str) else getattr(file, "name", None) or file["path"])
    model = _visitor_model(name)  # the upload stays until it is read: the visitor may pick another model
    try:
        image, original_mode = read_once(path, model.pretrained_cfg["input_size"][0], request)
    except UploadError as e:
        raise gr.Error(f"Could not read the upload: {e}") from e
    x, shown = preprocess(image, model)
    logits, score, heat = _predict(model, x, shown, saliency)
    probabilities = zoo.task.probabilities(model.task, logits)[0]
    k = max(1, min(int(top_k), len(probabilities)))
    labels = model.label_names or [f"class {i}" for i in range(len(probabilities))]
    result = {labels[i]: float(probabilities[i]) for i in probabilities.topk(k).indices.tolist()}
    info = (
        _findings(model, probabilities) + _ood_warning(model, score) + _describe(model, image, original_mode)
    )
    return (result, heat, info, model_card(model, name)), model, image


def _predict(model: torch.nn.Module, x: torch.Tensor, shown: Image.Image, saliency: bool) -> tuple:
    """(logits, out-of-distribution score or None, Grad-CAM overlay or None) from one forward of the encoder: with
    saliency, that forward runs with grad and one backward gives the map (the top class's)."""
    if saliency:
        logits, score, cam = predict_with_cam(model, x)
        return logits, score, overlay(shown, cam)
    with torch.inference_mode():
        logits, score = zoo.task.predict(model, x)
    return logits, score, None


def _findings(model: torch.nn.Module, probabilities: torch.Tensor) -> str:
    """A multi-label model's findings: every label's probability next to its threshold (chosen on val), the
    present ones first; nothing for a multi-class model (the Label output says it all)."""
    if model.task != zoo.task.MULTILABEL:
        return ""
    rows = sorted(
        zip(model.label_names, probabilities.tolist(), model.thresholds, strict=True),
        key=lambda row: (row[1] < row[2], -row[1]),
    )
    lines = "\n".join(
        f"| {name} | {p:.3f} | {t:.3f} | {'**present**' if p >= t else 'absent'} |" for name, p, t in rows
    )
    return (
        "**Findings** (multi-label: a sigmoid per finding, present at its threshold)\n\n"
        f"| finding | probability | threshold | |\n|---|---|---|---|\n{lines}\n\n"
    )


def _ood_warning(model: torch.nn.Module, scores: torch.Tensor | None) -> str:
    """The out-of-distribution warning (also a toast) when the upload's score (:func:`_predict`'s) passes the
    model's threshold; a line saying so for an export without a reference."""
    if model.ood is None:
        return "_This model has no out-of-distribution reference: nothing warns about unfamiliar images._\n\n"
    score = float(scores[0])
    if score <= model.ood.threshold:
        return ""
    text = OOD_WARNING.format(dataset=_trained_on(model.zoo_metadata or {}, "this model"))
    gr.Warning(text)
    return f"⚠️ **{text}** (out-of-distribution score {score:.0f} > threshold {model.ood.threshold:.0f})\n\n"


def classify(
    file, choice: str, custom: str, saliency: bool = True, top_k: int = 3, request: gr.Request = None
):
    """The one API endpoint: (file, model name, custom name/repo id, saliency?, top-k) → label, overlay, 2 texts."""
    return _classify(file, choice, custom, saliency, top_k, request)[0]


def classify_with_similar(
    file, choice: str, custom: str, saliency: bool = True, top_k: int = 3, request: gr.Request = None
):
    """The endpoint with ``--similar``: :func:`classify`'s outputs and the similar cases (thumbnail, caption)
    — none, with a notice, for a model that did not make the archive's embeddings."""
    outputs, model, image = _classify(file, choice, custom, saliency, top_k, request)
    similar: SimilarCases = SETTINGS["similar"]
    if not similar.matches(model):
        gr.Warning(
            f"Similar cases come from embeddings made with {_shown(similar.model_name)}; pick that model."
        )
        return (*outputs, [])
    return (*outputs, similar.gallery(model, image))


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
    """The page: ``model`` (a name visitors see, see :func:`add_operator_model`) is shown first. Every input and
    output carries a label, which is also its name in the API (``gradio_client``'s ``view_api``)."""
    choices = sorted(set(zoo.list_models()) | set(OPERATOR_MODELS))
    initial = model or default_model()
    hub_ids = " or a Hub repo id (org/name)" if SETTINGS["allow_hub_ids"] else ""
    with gr.Blocks(title="MedSSL Zoo demo", delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        gr.Markdown(
            "# MedSSL Zoo\nSelf-supervised encoders for small medical datasets. "
            "Upload a histology tile or a chest X-ray. **Research use only, not for clinical decisions.** "
            "Uploads are deleted from the server once classified."
        )
        with gr.Row():
            with gr.Column():
                picker = gr.Dropdown(
                    choices=choices,
                    value=initial if initial in choices else None,
                    label="Model",
                    allow_custom_value=True,
                )
                custom = gr.Textbox(label=f"…or a model name{hub_ids}", value="")
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
                info = gr.Markdown(label="Preprocessing", elem_id="details")
                card = gr.Markdown(label="Model card")
        outputs, endpoint = [label, heat, info, card], classify
        if SETTINGS.get("similar") is not None:
            similar = gr.Gallery(label="Similar cases", columns=6, height="auto", elem_id="similar-cases")
            outputs, endpoint = [*outputs, similar], classify_with_similar
        gr.Examples(example_files(), inputs=[upload], label="Examples")
        run.click(endpoint, [upload, picker, custom, saliency, top_k], outputs, api_name="classify")
    return demo


def _similar_cases(folder: str, k: int, model_name: str | None) -> SimilarCases:
    """The operator's ``--similar`` output, checked against the model the page shows first: embeddings of
    another model would show unrelated cases, so that is a refusal naming what differs."""
    if model_name is None:
        raise ValueError("give --model: similar cases need the model the embeddings were made with")
    similar = SimilarCases(folder, k)
    similar.check(get_model(model_name), model_name)
    return similar


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of models")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="medssl-demo",
        description="MedSSL Zoo Gradio demo: upload an image, see the class probabilities and a Grad-CAM map.",
    )
    parser.add_argument(
        "--model",
        help="registry name, $ZOO_HOME export, folder or Hub repo id shown first (default: the local default "
        "model); visitors may pick registered names and $ZOO_HOME exports, never other server paths (a folder "
        "is shown by its own name)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default: %(default)s)")
    parser.add_argument(
        "--max-models",
        type=_positive,
        default=SETTINGS["max_models"],
        help="models kept in memory at once; the least recently used is released first (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-hub-ids",
        action="store_true",
        help="let visitors type any Hub repo id (org/name), downloaded into this server's Hugging Face cache "
        "(off by default: only the listed models)",
    )
    parser.add_argument(
        "--similar",
        metavar="DIR",
        help="an embedding output made with the model (medssl-embed MODEL ARCHIVE --out DIR): each upload also "
        "shows its most similar archive images, with their labels and similarity",
    )
    parser.add_argument(
        "--similar-k", type=_positive, default=6, help="similar cases shown (default: %(default)s)"
    )
    parser.add_argument(
        "--share", action="store_true", help="create a public gradio.live link (off by default)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    SETTINGS.update(max_models=args.max_models, allow_hub_ids=args.allow_hub_ids)
    shown = None
    if args.model:
        shown = add_operator_model(args.model)
        try:
            get_model(shown)  # fail fast, before the server starts, with one line
        except (LookupError, ValueError, OSError, RuntimeError) as e:
            log.error("cannot start the demo: --model %s cannot be loaded: %s", args.model, e)
            return 2
    if args.similar:
        try:
            SETTINGS["similar"] = _similar_cases(args.similar, args.similar_k, shown or default_model())
        except (LookupError, ValueError, OSError) as e:
            log.error("cannot start the demo: --similar %s: %s", args.similar, e)
            return 2
    demo = build_demo(shown)
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
