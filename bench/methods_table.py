"""All eight methods on the embedded synthetic tiles with the same step budget: kNN and linear-probe test accuracy,
mean ± std over seeds, next to the random-init encoder. Each pre-training is a real `train/pretrain.py` run (the
default recipe's size: test_resnet, 64 px, 800 tiles, batch 128, 150 steps; BYOL, MoCo v3 and DINO with their
`*-synthetic` recipes), each evaluation `train/evaluate.py` (k = 20 cosine kNN, L-BFGS linear probe).

    python bench/methods_table.py                    # 8 methods x 3 seeds, ~40 min on 2 CPU cores
    python bench/methods_table.py --seeds 0 --methods simclr,byol
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["simclr", "dclw", "simsiam", "vicreg", "barlowtwins", "byol", "mocov3", "dino"]
OWN_RECIPE = {"byol", "mocov3", "dino"}


def pretrain(method: str, seed: int, out: Path) -> None:
    recipe = ["--recipe", f"{method}-synthetic"] if method in OWN_RECIPE else ["--method", method]
    cmd = [sys.executable, str(ROOT / "train" / "pretrain.py"), *recipe, "--seed", str(seed)]
    cmd += ["--output-dir", str(out), "--export-name", "null", "--progress", "false"]
    subprocess.run(cmd, check=True, capture_output=True)


def evaluate(run_dir: Path, baselines: str) -> list[dict]:
    cmd = [sys.executable, str(ROOT / "train" / "evaluate.py"), str(run_dir), "--protocols", "knn,linear"]
    cmd += ["--fractions", "1.0", "--seeds", "0", "--baselines", baselines, "--no-plots"]
    cmd += ["--output-dir", str(run_dir / "eval"), "--knn-k", "20"]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads((run_dir / "eval" / "metrics.json").read_text())["summary"]


def cell(values: list[float]) -> str:
    return (
        f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"
        if len(values) > 1
        else f"{values[0]:.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    scores: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ZOO_HOME"] = str(Path(tmp) / "home")
        for method in args.methods.split(","):
            for seed in seeds:
                run_dir = Path(tmp) / f"{method}-{seed}"
                pretrain(method, seed, run_dir)
                rows = evaluate(run_dir, "random" if method == "simclr" else "none")
                for r in rows:
                    name = method if r["encoder"] == "ssl" else "random init"
                    scores.setdefault(name, {}).setdefault(r["protocol"], []).append(r["accuracy"])
                print(
                    method,
                    seed,
                    {r["encoder"] + "/" + r["protocol"]: round(r["accuracy"], 3) for r in rows},
                    flush=True,
                )
    print("\n| encoder | kNN test accuracy | linear-probe test accuracy |\n|---|---|---|")
    for name, by_protocol in scores.items():
        print(f"| {name} | {cell(by_protocol['knn'])} | {cell(by_protocol['linear'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
