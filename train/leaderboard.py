"""A comparison's leaderboard: Markdown (:func:`zoo.tables.markdown_table`), CSV and JSON, a few-shot curve per
encoder (matplotlib, the ``[plots]`` extra) and one line naming the best encoder per protocol.

Encoders are ranked by balanced accuracy, which a majority class cannot inflate on imbalanced medical data.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from medssl_zoo.train.compare_protocols import METRICS
from zoo.files import atomic_savefig, atomic_write_json, atomic_write_text
from zoo.optional import available, install_hint
from zoo.tables import markdown_table

__all__ = ["best_per_protocol", "leaderboard_rows", "write_leaderboard"]

log = logging.getLogger("evaluate")
RANKED_BY = "balanced_accuracy"
MAIN = (("knn", "all labels"), ("linear", "all labels"), ("simpleshot", "all labels"))


def leaderboard_rows(result: dict) -> list[dict]:
    """One flat row per (encoder, protocol, setting), with the encoder's width and throughput."""
    return [
        {
            "encoder": e["encoder"],
            "width": e["width"],
            "images_per_s": e["images_per_s"],
            **{k: r.get(k) for k in ("protocol", "setting", "repeats")},
            **{k: r[k] for m in METRICS for k in (m, f"{m}_std")},
        }
        for e in result["encoders"]
        for r in e["results"]
    ]


def best_per_protocol(result: dict) -> dict[str, dict]:
    """protocol + setting → the encoder with the highest balanced accuracy there."""
    best: dict[str, dict] = {}
    for row in leaderboard_rows(result):
        name = f"{row['protocol']} ({row['setting']})"
        score = row[RANKED_BY]
        if score is not None and (name not in best or score > best[name][RANKED_BY]):
            best[name] = {"encoder": row["encoder"], RANKED_BY: score}
    return best


def _cell(row: dict | None, key: str = RANKED_BY) -> str | None:
    """``mean ± std`` wherever the row summarises several seeds or episodes (a std of 0 included: every seed
    agreed), the bare value where there was one run (no spread to state)."""
    if row is None or row[key] is None:
        return None
    if (row.get("repeats") or 1) > 1:
        return f"{row[key]:.3f} ± {row[f'{key}_std']:.3f}"
    return f"{row[key]:.3f}"


def _speed(value) -> str | None:
    return None if value is None else f"{value:.1f}"


def _markdown(result: dict, best: dict[str, dict]) -> str:
    shots = result["settings"]["shots"]
    fewest, most = (f"{shots[0]}-shot", f"{shots[-1]}-shot") if shots else (None, None)
    settings = [*MAIN, *(("fewshot", s) for s in dict.fromkeys((fewest, most)) if s)]
    header = ["encoder", "width", "images/s", *(f"{p} {s}" if p == "fewshot" else p for p, s in settings)]
    table = []
    for e in result["encoders"]:
        found = {(r["protocol"], r["setting"]): r for r in e["results"]}
        table.append(
            [e["encoder"], e["width"], _speed(e["images_per_s"]), *(_cell(found.get(k)) for k in settings)]
        )
    rows = leaderboard_rows(result)
    detail = markdown_table(
        ["encoder", "protocol", "setting", *METRICS],
        [[r["encoder"], r["protocol"], r["setting"], *(_cell(r, m) for m in METRICS)] for r in rows],
    )
    line = "; ".join(f"{name}: **{b['encoder']}** ({b[RANKED_BY]:.3f})" for name, b in best.items())
    counts = ", ".join(f"{k} {v}" for k, v in result["counts"].items())
    return (
        f"# Encoders compared on {result['data']} ({result['dataset']}: {counts})\n\n"
        f"Balanced accuracy (mean ± std over seeds / episodes).\n\n{markdown_table(header, table)}\n\n"
        f"Best per protocol (balanced accuracy): {line}\n\n## Every protocol and metric\n\n{detail}\n"
    )


def _csv(rows: list[dict]) -> str:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _plot(result: dict, path: Path) -> None:
    """Balanced accuracy against shots per class, one curve (± std band) per encoder."""
    if not available("matplotlib"):
        log.warning("no few-shot plot: matplotlib is not installed (%s)", install_hint("matplotlib"))
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for e in result["encoders"]:
        rows = [r for r in e["results"] if r["protocol"] == "fewshot" and r[RANKED_BY] is not None]
        shots = [r["shots"] for r in rows]
        mean = [r[RANKED_BY] for r in rows]
        std = [r[f"{RANKED_BY}_std"] for r in rows]
        ax.plot(shots, mean, marker="o", label=e["encoder"])
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(shots, low, high, alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="labelled images per class", ylabel="balanced accuracy (SimpleShot)", title="Few-shot")
    ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def write_leaderboard(result: dict, out: Path, plots: bool = True) -> None:
    """``leaderboard.md``, ``leaderboard.csv``, ``leaderboard.json`` (and ``fewshot.png``) in ``out``; the best
    encoder per protocol is added to ``result`` and logged in one line."""
    best = best_per_protocol(result)
    result["best"] = best
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "leaderboard.json", result)
    atomic_write_text(out / "leaderboard.csv", _csv(leaderboard_rows(result)))
    atomic_write_text(out / "leaderboard.md", _markdown(result, best))
    if plots:
        _plot(result, out / "fewshot.png")
    log.info("best per protocol: %s", "; ".join(f"{k}: {v['encoder']}" for k, v in best.items()))
    log.info("wrote %s", out)
