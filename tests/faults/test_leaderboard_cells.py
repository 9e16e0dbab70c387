"""The comparison's leaderboard states a spread (±) wherever a row summarises several seeds or episodes and none
where there was one run (review follow-up: a label-fraction row showed accuracy without ± when its seeds agreed,
beside macro-F1 with ±)."""

import re

from medssl_zoo.train.compare_protocols import METRICS, _summary
from medssl_zoo.train.leaderboard import write_leaderboard


def _repeat(accuracy: float, f1: float) -> dict:
    return {"accuracy": accuracy, "balanced_accuracy": accuracy, "f1_macro": f1, "auroc": 0.9}


def _result() -> dict:
    rows = [
        _summary("knn", "all labels", [_repeat(0.8, 0.7)]),
        _summary("linear", "all labels", [_repeat(0.85, 0.75)]),
        _summary("simpleshot", "all labels", [_repeat(0.6, 0.5)]),
        {**_summary("fewshot", "1-shot", [_repeat(0.5, 0.4), _repeat(0.6, 0.45)]), "shots": 1},
        # three seeds of a label fraction with the same accuracy (a small test set) but different macro-F1
        {**_summary("knn", "0.1 labels", [_repeat(0.75, f) for f in (0.6, 0.62, 0.66)]), "fraction": 0.1},
    ]
    encoder = {"encoder": "random:test_resnet", "width": 64, "images_per_s": 100.0, "results": rows}
    counts = {"train": 100, "val": 20, "test": 40}
    return {"data": "synthetic", "dataset": "synthetic", "counts": counts, "settings": {"shots": [1]},
            "encoders": [encoder]}  # fmt: skip


def _detail(markdown: str) -> dict[tuple[str, str], list[str]]:
    """(protocol, setting) → the metric cells of the 'Every protocol and metric' table."""
    table = markdown.split("## Every protocol and metric")[1]
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {(c[1], c[2]): c[3:] for c in cells}


def test_a_spread_wherever_there_are_several_runs_and_none_for_one(tmp_path):
    result = _result()
    write_leaderboard(result, tmp_path, plots=False)
    markdown = (tmp_path / "leaderboard.md").read_text()
    rows = {(r["protocol"], r["setting"]): r for r in result["encoders"][0]["results"]}
    detail = _detail(markdown)
    assert set(detail) == set(rows)
    for key, cells in detail.items():
        several = rows[key]["repeats"] > 1
        assert len(cells) == len(METRICS)
        for metric, cell in zip(METRICS, cells, strict=True):
            assert ("±" in cell) == several, (key, metric, cell)
            assert float(cell.split("±")[0]) == round(rows[key][metric], 3)
    assert detail[("knn", "0.1 labels")][0] == "0.750 ± 0.000"  # the seeds agreed: still a spread, of 0
    main_table = markdown.split("Best per protocol")[0]
    assert (
        re.search(r"\| 0\.800 \|", main_table) and "0.550 ± 0.050" in main_table
    )  # kNN: one run; 1-shot: two
