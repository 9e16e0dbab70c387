"""The comparison's baselines and splits (review follow-ups): the ``random`` baseline of a catalogue encoder is that
entry's own constructor with random weights (what ``random:ENTRY`` means), built without touching the network;
a comparison on data whose file names carry the patient keeps each patient on one side of the split with
``{grouped: true}``."""

import re
import socket
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from medssl_zoo.train import compare
from medssl_zoo.train.compare_encoders import _baseline
from zoo.catalogue import catalogue_entry
from zoo.embeddings.encoder import load_encoder, pooling_of

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def zoo_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _no_network(*_, **__):
    raise OSError("the random baseline tried the network")


@pytest.mark.parametrize("name", ["standin-uni", "standin-virchow2"])
def test_the_random_baseline_of_a_catalogue_encoder_is_its_own_architecture(standins, monkeypatch, name):
    reference = replace(load_encoder(name), name=name)
    monkeypatch.setattr(socket.socket, "connect", _no_network)  # nothing downloaded from here on
    random = _baseline("random", reference)
    entry = catalogue_entry(name)
    ours, theirs = random.module.state_dict(), reference.module.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert random.width == reference.width == entry.width  # the catalogue's declared width
    assert pooling_of(random.module) == pooling_of(reference.module) == entry.pooling
    assert random.data_config == reference.data_config  # differs from the encoder only by its weights
    assert not all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = torch.randn(2, *reference.data_config["input_size"])
    with torch.no_grad():
        assert random.module(x).shape == reference.module(x).shape == (2, entry.width)
    explicit = _baseline(f"random:{name}", None)  # random:ENTRY names the same model
    assert {k: v.shape for k, v in explicit.module.state_dict().items()} == {
        k: v.shape for k, v in ours.items()
    }


PATIENT = re.compile(r"(CRC-Prim-HE-\d+)")


def _crc_tree(root, patients=8, per_patient=3):
    """A Kather-2016-shaped folder: 8 tissue classes, file names carrying the patient (CRC-Prim-HE-NN)."""
    from zoo.data import get_dataset_spec

    rng = np.random.default_rng(0)
    for c, name in enumerate(get_dataset_spec("crc").class_names):
        (root / name).mkdir(parents=True)
        for p in range(patients):
            for i in range(per_patient):
                pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(root / name / f"t{i}_CRC-Prim-HE-{p:02d}.png")
    return root


def _patients_per_split(result, options) -> dict[str, set]:
    encoder = compare.load_encoders(["random:test_resnet", "random:resnet18"])[0]
    found = compare.cached_embeddings(encoder, result["data"], "crc", result["dataset_options"], workers=0)
    assert not found.computed  # the rows the comparison itself used
    splits: dict[str, set] = {}
    for record in found.records:
        splits.setdefault(record["split"], set()).add(PATIENT.search(record["path"]).group(1))
    return splits


@pytest.mark.timeout(600)
def test_a_grouped_comparison_keeps_each_patient_on_one_side(zoo_cache, tmp_path):
    root = _crc_tree(tmp_path / "crc")
    leaks = {}
    for grouped in (True, False):
        options = compare.CompareOptions(
            dataset="crc", data_root=str(root), dataset_options={"grouped": grouped}, shots=(1,), episodes=2,
            fractions=(1.0,), seeds=(0,), plots=False, output_dir=tmp_path / f"out-{grouped}", workers=0,
        )  # fmt: skip
        result = compare.compare(["random:test_resnet", "random:resnet18"], options)
        splits = _patients_per_split(result, options)
        assert set(splits) == {"train", "val", "test"}
        leaks[grouped] = sum(len(a & b) for a in splits.values() for b in splits.values() if a is not b)
    assert leaks[True] == 0
    assert leaks[False] > 0  # the same data split without groups does mix patients: the check can see a leak
