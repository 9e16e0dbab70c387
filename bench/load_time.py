"""zoo.load timings for a ResNet-50 model: local folder, cold through a local olah mirror, warm from the cache.

Each timing is a fresh Python process (imports excluded: the clock starts just before ``zoo.load``); the median
of ``--repeats`` runs is reported.

    python bench/load_time.py [--repeats 3]
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
sys.path.insert(0, str(ROOT))

CHILD = """
import sys, time, zoo
t = time.perf_counter(); zoo.load(sys.argv[1], revision=sys.argv[2] if len(sys.argv) > 2 else None)
print(time.perf_counter() - t)
"""


def make_model(folder: Path) -> None:
    """A ResNet-50 export (random weights, 2-class probe) in the hub format."""
    import torch

    from medssl_zoo.hub.export import build_classifier, write_folder
    from zoo import create_backbone
    from zoo.hub_format import make_config
    from zoo.probe import LinearProbe

    encoder = create_backbone("resnet50")
    probe = LinearProbe(torch.randn(2, 2048), torch.zeros(2), torch.zeros(2048), torch.ones(2048), 1.0, 0.5)
    model = build_classifier(encoder, "resnet50", 3, probe)
    data_config = {"input_size": (3, 224, 224), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875}
    config = make_config(
        "resnet50",
        model.pretrained_cfg,
        num_classes=2,
        num_features=2048,
        in_chans=3,
        label_names=["a", "b"],
        data_config=data_config,
        license="mit",
        zoo_metadata={},
    )
    write_folder(folder, model, config, "---\nlibrary_name: timm\n---\n# bench\n")


def timed(env: dict, *args: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, check=True
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from tests.helpers.hub_server import git
    from tests.helpers.servers import start_olah

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with start_olah(tmp / "olah") as (url, mirrors):
            repo = mirrors / "models" / "bench" / "resnet50"
            make_model(repo)
            git(repo, "init", "-q")
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", "bench model")
            env = {**os.environ, "HF_ENDPOINT": url, "PYTHONPATH": str(ROOT)}

            results = {"local folder": timed(env, str(repo), repeats=args.repeats)}
            cold = []
            for i in range(args.repeats):  # a new, empty cache each time
                cold.append(
                    timed({**env, "HF_HOME": str(tmp / f"hf-cold-{i}")}, "bench/resnet50", "main", repeats=1)
                )
            results["cold, through the olah mirror"] = statistics.median(cold)
            warm_env = {**env, "HF_HOME": str(tmp / "hf-cold-0")}
            results["cached (online revision check)"] = timed(
                warm_env, "bench/resnet50", "main", repeats=args.repeats
            )
            results["cached, HF_HUB_OFFLINE=1"] = timed(
                {**warm_env, "HF_HUB_OFFLINE": "1"}, "bench/resnet50", "main", repeats=args.repeats
            )
    print(json.dumps(results, indent=2))
    print("\n| zoo.load of ResNet-50 (98 MB) | seconds |\n|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
