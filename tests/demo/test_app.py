"""The demo as a user meets it: a real server, the gradio_client API, and a real browser."""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

import zoo
from medssl_zoo.demo.app import preprocess
from medssl_zoo.demo.imaging import read_upload
from zoo.data import eval_transform

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def client(demo_url):
    return Client(demo_url, verbose=False)


def predict(client, path, model="", custom="", saliency=False):
    return client.predict(handle_file(str(path)), model, custom, saliency, 3, api_name="/classify")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """One file per input kind the demo must take."""
    from pydicom.data import get_testdata_file

    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "tile.png")
    Image.fromarray(rgb).save(d / "tile.jpg", quality=90)
    Image.fromarray(rgb).convert("RGBA").save(d / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    Image.fromarray(rgb[:, :, 0]).save(d / "gray.png")
    Image.fromarray(np.linspace(0, 60000, 90 * 120).astype(np.uint16).reshape(90, 120)).save(d / "xray16.tif")
    return {
        "png": d / "tile.png",
        "jpeg": d / "tile.jpg",
        "rgba": d / "rgba.png",
        "palette": d / "palette.png",
        "gray": d / "gray.png",
        "tiff16": d / "xray16.tif",
        "dicom": Path(get_testdata_file("CT_small.dcm")),
    }


MODES = {
    "png": "RGB",
    "jpeg": "RGB",
    "rgba": "RGBA",
    "palette": "P",
    "gray": "L",
    "tiff16": "I;16",
    "dicom": "DICOM",
}


@pytest.mark.parametrize("kind", list(MODES))
def test_every_input_kind_is_classified_like_zoo_load(client, tiny_export, inputs, kind):
    """The served probabilities are the softmax of zoo.load's logits on the same decoded image, for every kind."""
    label, heat, info, card = predict(client, inputs[kind], custom=tiny_export.name, saliency=kind == "png")
    model = zoo.load(tiny_export)
    image, mode = read_upload(inputs[kind], 3)
    # the preprocessing the export's metrics and the embeddings are measured with, applied here independently
    x = eval_transform(model.pretrained_cfg)(pil_to_tensor(image))[None]
    assert torch.equal(x, preprocess(image, model)[0])
    with torch.inference_mode():
        expected = model(x).softmax(dim=1)[0]
    assert label["label"] == model.label_names[int(expected.argmax())] and len(label["confidences"]) == 3
    for item in label["confidences"]:
        assert item["confidence"] == pytest.approx(
            expected[model.label_names.index(item["label"])].item(), abs=1e-6
        )
    assert (
        mode == MODES[kind]
        and f"{MODES[kind]}, converted to RGB" in info
        and "not for clinical decisions" in card
    )
    assert (heat is not None) == (kind == "png")


def test_grayscale_model_takes_colour_and_dicom(client, gray_export, inputs):
    for kind in ("png", "dicom", "tiff16"):
        label, _, info, _ = predict(client, inputs[kind], custom=gray_export.name, saliency=True)
        assert label["label"] in ("NORMAL", "PNEUMONIA") and "grayscale (1 channel)" in info


def test_bad_inputs_give_messages_and_the_server_keeps_serving(client, tiny_export, inputs, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(inputs["png"].read_bytes()[:200])
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 Mpixel in a few kB
    cases = [
        (not_image, "Could not read the upload"),
        (truncated, "Could not read the upload"),
        (bomb, "Could not read the upload"),
    ]
    for path, message in cases:
        with pytest.raises(Exception, match=message):
            predict(client, path, custom=tiny_export.name)
    with pytest.raises(Exception, match="Cannot load model 'no-such-model'.*unknown model"):
        predict(client, inputs["png"], custom="no-such-model")
    label, *_ = predict(client, inputs["png"], custom=tiny_export.name)  # still serving
    assert label["label"]


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="Debian chromium not installed"
)
def test_in_a_real_browser(demo_url, tiny_export):
    from playwright.sync_api import expect, sync_playwright

    assert os.path.exists(CHROMIUM), ".ci/run must install Debian's chromium (apt-get install -y chromium)"
    example = next(Path(zoo.hub_format.zoo_home(), "demo-examples").glob("synthetic-spindle.png"))
    ARTIFACTS.mkdir(exist_ok=True)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(demo_url, timeout=60_000)
            page.locator("input[type=file]").first.set_input_files(str(example))
            page.locator("#classify-button").click()
            prediction = page.locator("#prediction")
            names = zoo.load(tiny_export).label_names
            expect(prediction).to_contain_text(re.compile("|".join(names)), timeout=60_000)  # polls, no sleep
            text = prediction.inner_text()
            page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
        finally:
            browser.close()
    assert any(name in text for name in zoo.load(tiny_export).label_names), text
    shutil.copy(ARTIFACTS / "demo.png", ARTIFACTS / "demo-latest.png")


def test_sharing_is_off_and_analytics_are_disabled(tiny_export, monkeypatch):
    """The app itself (not the test environment) disables analytics, binds 127.0.0.1 and does not share."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    code = "import os, demo.app; print(os.environ['GRADIO_ANALYTICS_ENABLED'])"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    import gradio as gr

    from medssl_zoo.demo import app

    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    assert app.main(["--model", str(tiny_export)]) == 0
    assert launched["share"] is False and launched["server_name"] == "127.0.0.1"
