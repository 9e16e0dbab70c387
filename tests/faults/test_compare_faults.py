"""Faults of the encoder comparison (issue 22 item 4) and of its embeddings cache in $ZOO_CACHE/embeddings: bad
names refused before any work, damaged or tampered cache entries recomputed or refused without loss, the cache
bounded by ZOO_CACHE_MAX without touching what it did not write."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from medssl_zoo.train import compare
from tests.helpers.embeddings import model_folder
from zoo.embeddings.format import SHARD_NAME

pytestmark = pytest.mark.timeout(300)
SMALL = {"shots": (1,), "episodes": 2, "fractions": (1.0,), "seeds": (0,), "plots": False, "batch_size": 8}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A cache, two tiny exported encoders and a labelled image folder of 2 classes x 12 images."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for label in ("benign", "malignant"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{label}{i:02d}.png")
    models = [str(model_folder(tmp_path / f"model{seed}", seed=seed)) for seed in (0, 1)]
    options = compare.CompareOptions(
        data_root=str(tmp_path / "data"),
        dataset_options={"split_policy": "random"},
        output_dir=tmp_path / "out",
        workers=0,
        **SMALL,
    )
    return models, options, tmp_path / "cache" / "embeddings"


def _outputs(cache):
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.is_symlink())


def test_a_bad_encoder_name_is_one_line_before_any_embedding(setup, capsys, caplog):
    models, options, cache = setup
    argv = ["--compare", f"{models[0]},no-such-model-anywhere", "--data-root", options.data_root]
    argv += ["--dataset-options", "{split_policy: random}", "--output-dir", str(options.output_dir)]
    with caplog.at_level(logging.ERROR, "evaluate"):
        assert compare.main(argv) == 2
    message = caplog.records[-1].getMessage()
    assert "no-such-model-anywhere" in message and "\n" not in message
    assert not cache.exists() and not options.output_dir.exists()


@pytest.mark.parametrize(
    ("encoders", "match"),
    [
        (["random", "random"], "twice"),
        (["random"], "at least two"),
        (["random", "imagenet"], "take the archi"),
    ],
)
def test_impossible_encoder_lists_are_refused(setup, encoders, match):
    _, options, cache = setup
    with pytest.raises(ValueError, match=match):
        compare.compare(encoders, options)
    assert not cache.exists()


def test_unlabelled_data_is_refused_on_creation(tmp_path):
    with pytest.raises(ValueError, match="no labels"):
        compare.CompareOptions(dataset="folder", data_root=str(tmp_path))


def test_a_damaged_cached_shard_is_embedded_again_with_the_same_result(setup):
    models, options, cache = setup
    first = compare.compare(models, options)
    shard = next(p for p in _outputs(cache)[0].iterdir() if SHARD_NAME.fullmatch(p.name))
    shard.write_bytes(shard.read_bytes()[:100])  # cut short, as a full disk or a crash might
    again = compare.compare(models, options)
    assert [e["computed"] for e in again["encoders"]].count(True) == 1
    assert [e["results"] for e in again["encoders"]] == [e["results"] for e in first["encoders"]]


def test_a_tampered_timing_record_is_ignored(setup):
    models, options, cache = setup
    compare.compare(models, options)
    for timing in cache.glob("*.json"):
        timing.write_bytes(b"\xff" * (1 << 20))  # not JSON, and larger than a timing record may be
    again = compare.compare(models, options)
    assert [e["images_per_s"] for e in again["encoders"]] == [None, None]
    assert not any(e["computed"] for e in again["encoders"])


def test_a_cache_entry_holding_a_stranger_file_is_refused_and_kept(setup):
    models, options, cache = setup
    compare.compare(models, options)
    keep = _outputs(cache)[0] / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(ValueError, match="not an embedding output"):
        compare.compare(models, options)
    assert keep.read_text() == "mine"


def test_the_cache_is_bounded_without_touching_what_it_did_not_write(setup, monkeypatch, tmp_path):
    models, options, cache = setup
    cache.mkdir(parents=True)
    foreign = cache / ("f" * 32)
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "meta.json").write_text("{}")
    os.symlink(elsewhere, cache / ("e" * 32))
    monkeypatch.setenv(
        "ZOO_CACHE_MAX", "1"
    )  # one byte: every other output is removed once a new one is written
    result = compare.compare(models, options)
    kept = [p.name for p in _outputs(cache) if p != foreign]
    assert kept == [os.path.basename(result["encoders"][1]["embeddings"])]
    assert not (cache / f"{os.path.basename(result['encoders'][0]['embeddings'])}.json").exists()
    assert (foreign / "thesis.tex").read_text() == "mine"
    assert (elsewhere / "meta.json").read_text() == "{}" and (cache / ("e" * 32)).is_symlink()
    assert json.loads((options.output_dir / "leaderboard.json").read_text())["encoders"]


def test_a_damaged_cached_meta_json_is_embedded_again(setup):
    models, options, cache = setup
    first = compare.compare(models, options)
    for output in _outputs(cache):
        (output / "meta.json").write_bytes(b"\x00" * 4096)
    again = compare.compare(models, options)
    assert all(e["computed"] for e in again["encoders"])
    assert [e["results"] for e in again["encoders"]] == [e["results"] for e in first["encoders"]]
