"""Issue 24's measurements: a ChestMNIST-shaped synthetic multi-label run end to end (pre-train, evaluate,
export, zoo.load, the demo), the OOD table of an export, and the OOD score's cost per image next to the forward
pass.

    python bench/multilabel_run.py chest [--steps 100] [--backbone test_resnet]   # the multi-label run, its metrics
    python bench/multilabel_run.py ood RUN_DIR EXPORT         # the OOD table and the score's cost (default run)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def chest(steps: int, backbone: str) -> None:
    import torch

    import zoo
    from medssl_zoo.demo import app
    from medssl_zoo.hub.export import export_run
    from medssl_zoo.train import evaluation
    from medssl_zoo.train.pretrain import main
    from tests.helpers.multilabel import chest_npz

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz = chest_npz(tmp / "chestmnist_64.npz", counts=(2000, 300, 600), size=64)
        started = time.perf_counter()
        args = ["--dataset", "medmnist", "--data-root", str(npz), "--image-size", "32", "--batch-size", "64"]
        args += ["--backbone", backbone]
        args += ["--max-steps", str(steps), "--output-dir", str(tmp / "run"), "--export-name", "null"]
        assert main([*args, "--progress", "false", "--eval-every", str(steps)]) == 0
        pretrain_s = time.perf_counter() - started
        summary = json.loads((tmp / "run" / "summary.json").read_text())
        options = evaluation.EvalOptions(
            protocols=("knn", "linear", "mlp"), fractions=(0.1, 1.0), seeds=(0,), mlp_epochs=50, plots=False
        )
        result = evaluation.evaluate(tmp / "run", options)
        export = export_run(tmp / "run", tmp / "simclr-chest")
        model = zoo.load(export)
        name = app.add_operator_model(str(export))
        import numpy as np
        from PIL import Image

        from zoo.data.synthetic_chest import render_chest

        Image.fromarray(render_chest(np.random.default_rng(1), {2}, 64)).save(tmp / "upload.png")
        label, _, info, _ = app.classify(str(tmp / "upload.png"), name, "", False, 3)
        print(
            f"pre-training ({backbone}): {steps} steps in {pretrain_s:.0f} s; kNN val mean AUROC {summary['knn_val_random_init']:.3f} "
            f"(random init) → {summary['knn_val_final']:.3f}"
        )
        print("| encoder | protocol | labels | macro AUROC | micro AUROC | mAP | macro F1 | micro F1 |")
        print("|---|---|---|---|---|---|---|---|")
        for r in sorted(result["summary"], key=lambda r: (r["encoder"], r["protocol"], r["fraction"])):
            values = " | ".join(
                f"{r[k]:.3f}" for k in ("auroc_macro", "auroc_micro", "map", "f1_macro", "f1_micro")
            )
            print(f"| {r['encoder']} | {r['protocol']} | {r['fraction']:.0%} | {values} |")
        block = model.zoo_metadata
        print(f"export: task {model.task}, thresholds {[round(t, 3) for t in model.thresholds]}")
        print(
            f"export test metrics: {json.dumps({k: round(v, 3) for k, v in block['metrics'].items() if isinstance(v, float)})}"
        )
        print(
            f"OOD: threshold {block['ood']['threshold']:.1f}, val flagged {block['ood']['val_flagged']:.3f}, "
            f"test flagged {block['ood']['test_flagged']:.3f}"
        )
        print(f"demo: top {label}; warning shown: {'unlike the training data' in info}")
        del torch


def _timed(fn, repeats: int = 20) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def ood(run_dir: Path, export: Path) -> None:
    import torch

    import zoo
    from tests.helpers.ood_images import model_inputs, ood_table
    from zoo.run_dir import read_run
    from zoo.task import pooled_features

    model = zoo.load(export)
    test = read_run(run_dir).load_data().test[0]
    table = ood_table(model, test)
    print(f"threshold {model.ood.threshold:.1f} ({model.ood.percentile:g}th percentile of held-out scores)")
    print("| images | count | flagged | AUROC vs the test split |")
    print("|---|---|---|---|")
    for kind, row in table.items():
        print(
            f"| {kind} | {row['images']} | {100 * row['flagged']:.1f} % | {row.get('auroc', float('nan')):.3f} |"
        )
    x = model_inputs(model, list(test[:64]))
    with torch.inference_mode():
        features = pooled_features(model, x)
        forward = _timed(lambda: model(x))
        score = _timed(lambda: model.ood.score(features))
        both = _timed(lambda: model.ood_score(x))
    n = len(x)
    print(
        f"per image (batch {n}, {torch.get_num_threads()} threads): forward {1e3 * forward / n:.3f} ms, "
        f"score on the features {1e3 * score / n:.4f} ms ({100 * score / forward:.1f} % of the forward), "
        f"model.ood_score(x) {1e3 * both / n:.3f} ms ({model.num_features} features)"
    )
    big = torch.randn(n, 2048)  # a ResNet-50-wide reference: the F x F product alone
    from zoo.ood import fit_reference

    reference, _ = fit_reference(torch.randn(4096, 2048), torch.randn(256, 2048))
    print(
        f"2048 features (ResNet-50 width): score {1e3 * _timed(lambda: reference.score(big)) / n:.4f} ms per image"
    )


def cli() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("chest")
    c.add_argument("--steps", type=int, default=100)
    c.add_argument(
        "--backbone", default="resnet50", help="any timm or zoo backbone (test_resnet: minutes on a CPU)"
    )
    o = sub.add_parser("ood")
    o.add_argument("run_dir", type=Path)
    o.add_argument("export", type=Path)
    args = parser.parse_args()
    if args.what == "chest":
        chest(args.steps, args.backbone)
    else:
        ood(args.run_dir, args.export)


if __name__ == "__main__":
    cli()
