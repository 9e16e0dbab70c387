"""The demo warns when an upload looks unlike the model's training data (issue 24.4): an MR slice given to the
histology model gets the warning, a tile does not — through the API and in a real browser."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import zoo
from medssl_zoo.demo.app import OOD_WARNING

CHROMIUM = "/usr/bin/chromium"
WARNING = OOD_WARNING.format(dataset="synthetic")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from pydicom.data import get_testdata_file

    from zoo.data.synthetic import CLASS_NAMES, render_tile

    folder = tmp_path_factory.mktemp("ood-inputs")
    tile = folder / "tile.png"
    Image.fromarray(render_tile(np.random.default_rng([123, 2]), 2, 128)).save(tile)  # a spindle tile
    assert CLASS_NAMES[2] == "spindle"
    return {"mr": Path(get_testdata_file("MR_small.dcm")), "tile": tile}


def test_the_api_warns_for_an_mr_slice_and_not_for_a_tile(demo_url, tiny_export, files):
    client = Client(demo_url, verbose=False)
    model = zoo.load(tiny_export)
    assert model.ood is not None
    for kind, warned in (("mr", True), ("tile", False)):
        label, _, info, _ = client.predict(
            handle_file(str(files[kind])), "", tiny_export.name, False, 3, api_name="/classify"
        )
        assert (WARNING in info) == warned, (kind, info)
        assert label["label"] in model.label_names  # the prediction is still shown, with the warning


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="Debian chromium not installed"
)
def test_the_warning_is_visible_in_a_real_browser(demo_url, tiny_export, files):
    from playwright.sync_api import expect, sync_playwright

    names = re.compile("|".join(zoo.load(tiny_export).label_names))
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            for kind in ("mr", "tile"):
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(demo_url, timeout=60_000)
                page.locator("input[type=file]").first.set_input_files(str(files[kind]))
                page.locator("#classify-button").click()
                expect(page.locator("#prediction")).to_contain_text(names, timeout=60_000)  # polls, no sleep
                expect(page.locator("#details")).to_contain_text("Preprocessing", timeout=60_000)
                seen[kind] = page.locator("#details").inner_text()
                page.close()
        finally:
            browser.close()
    assert "looks unlike the training data of synthetic" in seen["mr"]
    assert "looks unlike the training data" not in seen["tile"]
