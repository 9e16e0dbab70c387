"""medssl-evaluate --compare (issue 22 item 4): encoders compared on the user's data, embeddings cached."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from medssl_zoo.train import compare, evaluate
from zoo.probe import few_shot_episodes, shot_counts, simpleshot_predict

SMALL = {"shots": (1, 2), "episodes": 3, "fractions": (0.5,), "seeds": (0, 1), "plots": False}
SYNTHETIC = {"num_images": 64, "size": 32}


@pytest.fixture
def zoo_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Forwards:
    """Counts every module forward in this process (a global forward hook): embeddings computed = forwards."""

    def __enter__(self):
        self.count = 0
        self.handle = torch.nn.modules.module.register_module_forward_hook(self._hook)
        return self

    def _hook(self, *_):
        self.count += 1

    def __exit__(self, *_):
        self.handle.remove()


def _options(out, **extra):
    return compare.CompareOptions(
        dataset="synthetic", dataset_options=SYNTHETIC, output_dir=out, **{**SMALL, **extra}
    )


def _results(result):
    return {e["encoder"]: e["results"] for e in result["encoders"]}


@pytest.mark.timeout(600)
def test_the_default_run_against_random_init_and_a_second_comparison_computes_nothing(
    tiny_run, zoo_cache, tmp_path
):
    encoders = [str(tiny_run), "random"]
    with Forwards() as first:
        result = compare.compare(encoders, _options(tmp_path / "a"))
    assert first.count > 0 and all(e["computed"] for e in result["encoders"])
    with Forwards() as second:
        again = compare.compare(encoders, _options(tmp_path / "b"))
    assert second.count == 0, "the second comparison ran the encoders"
    assert not any(e["computed"] for e in again["encoders"])
    # same rows, same episodes and fractions: every number identical, throughput kept from the first run
    assert _results(again) == _results(result)
    assert [e["images_per_s"] for e in again["encoders"]] == [e["images_per_s"] for e in result["encoders"]]
    assert all(e["images_per_s"] > 0 for e in result["encoders"])

    ssl, random = result["encoders"]
    assert ssl["width"] == random["width"] == 96  # test_resnet's features, its random init as the baseline
    assert random["identity"]["architecture"] == ssl["identity"]["architecture"] == "test_resnet"
    assert result["counts"]["test"] > 0 and result["counts"]["val"] > 0
    settings = {(r["protocol"], r["setting"]) for r in ssl["results"]}
    assert settings == {
        ("knn", "all labels"),
        ("linear", "all labels"),
        ("simpleshot", "all labels"),
        ("fewshot", "1-shot"),
        ("fewshot", "2-shot"),
        ("knn", "0.5 labels"),
        ("linear", "0.5 labels"),
    }
    fewshot = next(r for r in ssl["results"] if r["setting"] == "2-shot")
    assert fewshot["repeats"] == 3 and fewshot["balanced_accuracy_std"] is not None
    for metric in ("accuracy", "balanced_accuracy", "f1_macro", "auroc"):
        assert 0 <= fewshot[metric] <= 1

    out = tmp_path / "a"
    table = (out / "leaderboard.md").read_text()
    assert str(tiny_run) in table and "| random |" in table and "Best per protocol" in table
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert len(rows) == 2 * 7 and {r["encoder"] for r in rows} == set(encoders)
    stored = json.loads((out / "leaderboard.json").read_text())
    assert set(stored["best"]) == {f"{p} ({s})" for p, s in settings}
    best = stored["best"]["knn (all labels)"]
    scores = {e["encoder"]: e["results"][0]["balanced_accuracy"] for e in result["encoders"]}
    assert best["encoder"] == max(scores, key=scores.get)


@pytest.mark.timeout(600)
def test_a_changed_file_is_embedded_again(tiny_run, zoo_cache, tmp_path):
    encoders = [str(tiny_run), "random"]
    compare.compare(encoders, _options(tmp_path / "a"))
    tile = sorted((zoo_cache / "synthetic").glob("*/gland/*.png"))[0]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tile)
    os.utime(tile, ns=(1, 1))  # another size and time: the file list's identity changes
    with Forwards() as forwards:
        again = compare.compare(encoders, _options(tmp_path / "b"))
    assert forwards.count > 0 and all(e["computed"] for e in again["encoders"])


def test_simpleshot_equals_a_second_computation():
    rng = np.random.default_rng(0)
    support, queries = rng.normal(size=(12, 5)), rng.normal(size=(7, 5))
    labels = np.array([0, 1, 2] * 4)
    centre = support.mean(0)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    s, q = unit(support - centre), unit(queries - centre)
    prototypes = np.stack([s[labels == c].mean(0) for c in range(3)])
    expected = np.argmin(((q[:, None] - prototypes[None]) ** 2).sum(-1), axis=1)
    probabilities = simpleshot_predict(
        torch.from_numpy(support), torch.from_numpy(labels), torch.from_numpy(queries), 3
    )
    assert probabilities.argmax(1).tolist() == expected.tolist()
    assert torch.allclose(probabilities.sum(1), torch.ones(7))


def test_few_shot_episodes_are_seeded_balanced_and_distinct():
    labels = torch.tensor([0] * 9 + [1] * 5 + [2] * 7)
    first = few_shot_episodes(labels, 4, 6, seed=3)
    assert [e.tolist() for e in first] == [e.tolist() for e in few_shot_episodes(labels, 4, 6, seed=3)]
    for episode in first:
        assert torch.bincount(labels[episode]).tolist() == [4, 4, 4]
        assert len(set(episode.tolist())) == 12
    assert len({tuple(e.tolist()) for e in first}) > 1
    assert [e.tolist() for e in first] != [e.tolist() for e in few_shot_episodes(labels, 4, 6, seed=4)]
    assert shot_counts(labels) == [1, 2, 4]
    with pytest.raises(ValueError, match="fewer labelled examples"):
        few_shot_episodes(labels, 8, 1)


@pytest.mark.timeout(600)
def test_the_command_line_prints_the_leaderboard(tiny_run, zoo_cache, tmp_path, capsys):
    argv = ["--compare", f"{tiny_run},random", "--dataset", "synthetic"]
    argv += ["--dataset-options", "{num_images: 64, size: 32}", "--shots", "1", "--episodes", "2"]
    argv += ["--fractions", "1", "--output-dir", str(tmp_path / "out")]
    assert evaluate.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| encoder | width | images/s |" in printed and "Best per protocol" in printed
    assert (tmp_path / "out" / "fewshot.png").stat().st_size > 0


@pytest.mark.timeout(600)
def test_catalogue_stand_ins_in_a_comparison_embed_with_their_pooling(standins, zoo_cache, tmp_path):
    """A stand-in of Virchow2 (CLS + mean of patches without registers) and of UNI (CLS) against a random
    test_resnet: widths as the entries say, and the cached rows equal a manual forward of what zoo.load gives."""
    import zoo
    from zoo.data import eval_transform, read_image

    options = _options(tmp_path / "out", shots=(1,), fractions=(1.0,), seeds=(0,), precision="fp32")
    result = compare.compare(["standin-virchow2", "standin-uni", "random:test_resnet"], options)
    widths = {e["encoder"]: e["width"] for e in result["encoders"]}
    assert widths == {"standin-virchow2": 64, "standin-uni": 32, "random:test_resnet": 96}
    virchow = result["encoders"][0]
    assert virchow["identity"]["pooling"] == "cls+mean-patch"
    cached = compare.cached_embeddings  # the rows the protocols read, reused (nothing computed)
    encoder = compare.load_encoders(["standin-virchow2", "random"])[0]
    found = cached(
        encoder, result["data"], "imagefolder", result["dataset_options"], workers=0, precision="fp32"
    )
    assert not found.computed
    model = zoo.load("standin-virchow2", features_only=True).eval()
    transform = eval_transform(encoder.data_config)
    root = found.folder
    for row in (0, len(found.records) - 1):
        path = os.path.join(result["data"], found.records[row]["path"])
        with torch.no_grad():
            expected = model(transform(read_image(path, channels=3)).unsqueeze(0))[0]
        assert torch.allclose(torch.from_numpy(found.rows[row]), expected, atol=1e-5), root


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_comparison_metrics_equal_classification_metrics():
    """The comparison's fast metrics (confusion matrix + one AUROC) against zoo.probe.classification_metrics,
    classes absent from the labels included."""
    from medssl_zoo.train.compare_protocols import scores
    from zoo.probe import classification_metrics

    g = torch.Generator().manual_seed(0)
    for classes, n in ((2, 50), (4, 80), (5, 30)):
        for trial in range(10):
            p = torch.softmax(torch.randn(n, classes, generator=g) * 2, 1)
            y = torch.randint(0, classes, (n,), generator=g)
            if trial % 3 == 0:
                y[y == classes - 1] = 0
            fast, reference = scores(p, y, classes), classification_metrics(p, y, classes)
            for key, value in fast.items():
                assert (
                    value == pytest.approx(reference[key], abs=1e-12)
                    if value is not None
                    else reference[key] is None
                )
