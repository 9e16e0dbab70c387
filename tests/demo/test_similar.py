"""The demo's similar cases (issue 23, item 6): an upload's most similar archive images from an embedding output
made with the demo's model — in process, through a real server and gradio_client, and in a real browser; an output
of another model refused at start-up and skipped (with a notice) for a visitor's other model."""

import logging
import os
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

import zoo
from tests.helpers.embeddings import model_folder
from tests.helpers.servers import serve
from tests.zoo.data import trees

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FAST = {"workers": 0, "progress": False}


@pytest.fixture(scope="module")
def archive(tiny_export, tmp_path_factory):
    """A labelled archive (three class folders) and its embeddings made with the demo's model."""
    root = tmp_path_factory.mktemp("archive")
    data = trees.imagefolder(root / "data", per_class=5)
    zoo.embed(str(tiny_export), data, root / "embeddings", dataset="imagefolder", **FAST)
    return data, root / "embeddings"


def test_an_archive_image_finds_itself_first_with_its_label(tiny_export, archive):
    from medssl_zoo.demo.similar import THUMBNAIL, SimilarCases
    from medssl_zoo.demo.uploads import read_upload

    data, out = archive
    similar = SimilarCases(out, k=4)
    model = zoo.load(tiny_export)
    for label, name in (("dogs", "3.jpg"), ("eels", "0.jpg")):
        image, _ = read_upload(data / label / name, 3)
        gallery = similar.gallery(model, image)
        assert len(gallery) == 4
        assert gallery[0][1] == f"{label} · similarity 1.000", gallery[0][1]
        assert all(max(thumb.shape[:2]) == THUMBNAIL and thumb.shape[2] == 3 for thumb, _ in gallery)
        scores = [float(caption.rsplit(" ", 1)[1]) for _, caption in gallery]
        assert scores == sorted(scores, reverse=True)


def test_index_paths_never_lead_outside_the_archive(tiny_export, archive, tmp_path, monkeypatch):
    import shutil

    from medssl_zoo.demo import similar as module

    data, out = archive
    copy = tmp_path / "embeddings"
    shutil.copytree(out, copy)
    index = (copy / "index.csv").read_text().splitlines()
    index[1] = "../../../../etc/passwd" + index[1][index[1].index(",") :]  # row 0 points outside
    index[2] = "/etc/hostname" + index[2][index[2].index(",") :]
    (copy / "index.csv").write_text("\n".join(index) + "\n")
    read, real = [], module.read_image
    monkeypatch.setattr(module, "read_image", lambda path, c: read.append(path) or real(path, c))
    similar = module.SimilarCases(copy, k=15)
    image = Image.open(data / "cats" / "0.jpg").convert("RGB")
    gallery = similar.gallery(zoo.load(tiny_export), image)
    assert len(gallery) == 15 and len(read) == 13
    assert all(str(p).startswith(str(data)) for p in read)


def test_an_output_of_another_model_is_refused_at_start_up(archive, tmp_path, monkeypatch, caplog):
    from medssl_zoo.demo import app

    monkeypatch.setattr(app, "OPERATOR_MODELS", {})
    monkeypatch.setattr(app, "SETTINGS", {**app.SETTINGS, "similar": None})
    other = model_folder(tmp_path / "other", seed=4, size=32)
    with caplog.at_level(logging.ERROR, logger="demo"):
        assert app.main(["--model", str(other), "--similar", str(archive[1])]) == 2
    assert "--similar" in caplog.text and "weights_sha256" in caplog.text and "not other" in caplog.text
    assert app.SETTINGS["similar"] is None


@pytest.fixture(scope="module")
def similar_url(tiny_export, archive, gray_export, tmp_path_factory):
    """`python demo/app.py --model EXPORT --similar EMBEDDINGS` on 127.0.0.1, stopped by PID."""
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio-similar")),
    }

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "demo" / "app.py"),
            "--model",
            str(tiny_export),
            "--similar",
            str(archive[1]),
            "--similar-k",
            "3",
            "--port",
            str(port),
        ]

    log = tmp_path_factory.mktemp("demo-similar") / "demo.log"
    with serve(command, log, timeout=120, env=env, cwd=ROOT) as port:
        yield f"http://127.0.0.1:{port}/"


def test_similar_cases_through_gradio_client(similar_url, tiny_export, archive, gray_export):
    client = Client(similar_url, verbose=False)
    data = archive[0]
    label, _, _, _, gallery = client.predict(
        handle_file(str(data / "dogs" / "1.jpg")), tiny_export.name, "", False, 3, api_name="/classify"
    )
    assert set(label["confidences"][0]) >= {"label", "confidence"}
    assert len(gallery) == 3 and gallery[0]["caption"] == "dogs · similarity 1.000", gallery
    assert all(Path(item["image"]).is_file() for item in gallery)  # thumbnails, served by Gradio
    # a visitor's other model: classified as always, no similar cases (a notice says which model has them)
    *_, none = client.predict(
        handle_file(str(data / "dogs" / "1.jpg")), "gray-model", "", False, 3, api_name="/classify"
    )
    assert none == []


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="Debian chromium not installed"
)
def test_similar_cases_in_a_real_browser(similar_url, archive):
    from playwright.sync_api import expect, sync_playwright

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
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.goto(similar_url, timeout=60_000)
            page.locator("input[type=file]").first.set_input_files(str(archive[0] / "eels" / "2.jpg"))
            page.locator("#classify-button").click()
            gallery = page.locator("#similar-cases")
            expect(gallery).to_contain_text("eels · similarity 1.000", timeout=60_000)  # polls, no sleep
            assert gallery.locator("img").count() >= 3
        finally:
            browser.close()
