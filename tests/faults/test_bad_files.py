"""The bad-file corpus through read_image, load_dataset and the demo's classify: each file ends in the right
image or one clear error, memory stays bounded, and nothing else is affected."""

import json
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from medssl_zoo.demo import app
from medssl_zoo.demo.imaging import read_upload
from tests.faults import corpus
from zoo.data import ImageDecodeError, load_dataset, read_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return corpus.build(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name", sorted(corpus.BAD))
def test_read_image_refuses_with_one_clear_error(files, name):
    with pytest.raises(ImageDecodeError, match=corpus.BAD[name]) as refused:
        read_image(files[name])
    assert name in str(refused.value)  # the message names the file


@pytest.mark.parametrize("name", sorted(corpus.BAD_DICOM))
def test_bad_dicom_uploads_are_refused(files, name):
    with pytest.raises(ImageDecodeError, match=corpus.BAD_DICOM[name]):
        read_upload(files[name], 1)


def test_exif_orientation_is_applied(files):
    image = read_image(
        files["exif-rotated.jpg"]
    )  # stored 40 wide x 20 high, left half black; EXIF: rotate 90°
    assert image.shape == (3, 40, 20)
    top, bottom = image[:, :15].float().mean(), image[:, 25:].float().mean()
    assert top < 40 and bottom > 215  # the black half is now on top


def test_nan_in_a_float_tiff_does_not_blacken_the_image(files):
    image = read_image(files["nan.tif"], channels=1)[0]
    assert image[3, 5] == 0  # the NaN pixel
    assert image.max() == 255 and image.float().std() > 50  # the rest is still rescaled over the full range


def test_sixteen_bit_is_rescaled(files):
    image = read_image(files["xray16.png"], channels=1)[0]
    assert image.min() == 0 and image.max() == 255 and len(torch.unique(image)) > 200


def test_multi_frame_dicom_gives_the_middle_frame(files):
    image, what = read_upload(files["multiframe-gray.dcm"], 1)
    assert what == "DICOM frame 3 of 5" and image.size == (40, 32)
    expected = np.where(corpus.multiframe_gray()[2] > 100, 255, 0)  # frame 3 of 5, rescaled to 0..255
    assert np.array_equal(np.asarray(image), expected)
    image, what = read_upload(files["multiframe-rgb.dcm"], 3)
    assert what == "DICOM frame 3 of 5" and image.mode == "RGB" and image.size == (40, 32)


def test_refusals_stay_within_memory_and_time(files):
    """The bombs in a fresh process: refused in seconds, the peak RSS grows by well under 300 MB."""
    bombs = ["bomb-400mpx.png", "bomb-100mpx.png", "xray16-9400.png", "deflated-bomb.dcm"]
    script = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
from medssl_zoo.demo.imaging import read_upload
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start, refused = time.time(), 0
for path in {[str(files[b]) for b in bombs]!r}:
    try:
        read_upload(path, 3)
    except ValueError:
        refused += 1
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({{"refused": refused, "grown_mb": grown / 1024, "seconds": time.time() - start}}))
"""
    out = json.loads(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    )
    assert out["refused"] == len(bombs)
    assert out["grown_mb"] < 300, out
    assert out["seconds"] < 60, out


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(40):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "name", sorted(n for n in corpus.BAD) + ["nan.tif", "exif-rotated.jpg", "xray16.png"]
)
def test_load_dataset_skips_a_bad_file_by_name_and_keeps_good_ones(
    files, good_folder, tmp_path, caplog, name
):
    """An imagefolder with one corpus file among 80 good images: a bad one is skipped and named, a good one loads."""
    import shutil

    root = shutil.copytree(good_folder, tmp_path / "data")
    (root / "a" / name).write_bytes(files[name].read_bytes())
    ds = load_dataset("imagefolder", root)
    decoded = sum(len(ds.decode(s, 16)[0]) for s in ("train", "val", "test"))
    if name in corpus.BAD:
        assert decoded == 80 and name in caplog.text
    else:
        assert decoded == 81


@pytest.mark.parametrize(
    "name", sorted(corpus.BAD) + sorted(corpus.BAD_DICOM) + list(corpus.GOOD) + list(corpus.GOOD_DICOM)
)
def test_demo_classify_answers_or_refuses_each_file(files, tiny_export, name, monkeypatch):
    monkeypatch.setattr(app, "OPERATOR_MODELS", {})
    model = app.add_operator_model(str(tiny_export))  # as `--model FOLDER` registers it
    if name in corpus.BAD or name in corpus.BAD_DICOM:
        with pytest.raises(gr.Error, match="Could not read the upload"):
            app.classify(str(files[name]), "", model, False, 3)
    else:
        label, _, info, _ = app.classify(str(files[name]), "", model, False, 3)
        assert abs(sum(label.values()) - 1) < 0.2 and "Preprocessing" in info


def test_dicom_modality_lut_voi_window_and_monochrome1(tmp_path):
    """The README's DICOM claims against a hand computation: rescale slope/intercept, the VOI window, MONOCHROME1."""
    import pydicom

    pixels = np.arange(0, 200, dtype=np.uint8).reshape(10, 20)
    path = corpus.dicom(tmp_path / "ct.dcm", pixels)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100  # HU = 2 * value - 100: -100 .. 298
    ds.WindowCenter, ds.WindowWidth = 50, 101  # linear window over about 0 .. 100 HU, clipped outside
    ds.save_as(path)
    image, _ = read_upload(path, 1)
    hu = pixels.astype(float) * 2 - 100
    expected = np.clip((hu - (50 - 0.5)) / (101 - 1) + 0.5, 0, 1)  # DICOM PS3.3 C.11.2.1.2.1, linear
    assert np.abs(np.asarray(image) / 255.0 - expected).max() < 0.02
    ds.PhotometricInterpretation = "MONOCHROME1"  # 0 is white
    ds.save_as(path)
    inverted, _ = read_upload(path, 1)
    assert np.abs(np.asarray(inverted).astype(int) + np.asarray(image) - 255).max() <= 1
