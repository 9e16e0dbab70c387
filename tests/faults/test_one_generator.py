"""The embedding bench and the embedding tests build their model folders with one generator (review follow-up:
two ~25-line copies had drifted apart in normalisation and in how config.json was written)."""

import importlib.util
from pathlib import Path

from tests.helpers.embeddings import model_folder

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("embed_throughput", ROOT / "bench" / "embed_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bench_folder_is_the_tests_folder(tmp_path):
    bench = _bench().model_folder(tmp_path / "bench", "test_resnet", 48)
    tests = model_folder(tmp_path / "tests", size=48)
    for name in ("config.json", "model.safetensors"):
        assert (bench / name).read_bytes() == (tests / name).read_bytes(), name
