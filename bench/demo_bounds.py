"""The demo's bounds against hostile visitors, each case in a fresh process: memory after many typed Hub ids
(served by a local olah mirror), after many names that fail to load, and the upload bytes left on the server after
many large uploads.

    python bench/demo_bounds.py [--ids 150] [--failed 1000] [--uploads 20] [--upload-mb 50] [--code DIR]

``--code DIR`` runs the same cases against another checkout (e.g. a worktree of an older commit) for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = "--child" in sys.argv
if not CHILD:  # a child imports the demo from the checkout its PYTHONPATH names (--code)
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def make_model(folder: Path) -> Path:
    """A small 4-class test_resnet export (random weights), in the hub format."""
    import torch

    from medssl_zoo.hub.export import build_classifier, write_folder
    from zoo import create_backbone
    from zoo.hub_format import make_config
    from zoo.probe import LinearProbe

    torch.manual_seed(0)
    encoder = create_backbone("test_resnet")
    f = encoder.num_features
    probe = LinearProbe(torch.randn(4, f), torch.zeros(4), torch.zeros(f), torch.ones(f), 1.0, 0.5)
    model = build_classifier(encoder, "test_resnet", 3, probe)
    data = {"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}
    config = make_config(
        "test_resnet", model.pretrained_cfg, num_classes=4, num_features=f, in_chans=3,
        label_names=["a", "b", "c", "d"], data_config=data, license="CC0", zoo_metadata={"method": "simclr"},
    )  # fmt: skip
    return write_folder(folder, model, config, "---\nlibrary_name: timm\n---\n")


def git_repo(model: Path, repo: Path) -> None:
    shutil.copytree(model, repo)
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@127.0.0.1", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "model"]):
        subprocess.run([*git, *args], cwd=repo, check=True)


def child(case: str, count: int, tile: str) -> dict:
    """One case in this (fresh) process: RSS once the demo has served one request, then after ``count``."""
    import gc

    import gradio as gr
    import psutil

    from medssl_zoo.demo import app

    settings = getattr(app, "SETTINGS", None)  # absent in older code: no bounds to set
    if settings is not None and case == "hub-ids-allowed":
        settings.update(allow_hub_ids=True, max_models=4)
    app.classify(tile, "model", "", False, 3)  # warm-up: one model served
    gc.collect()
    before, start, refused = psutil.Process().memory_info().rss, time.perf_counter(), 0
    for i in range(count):
        name = f"bench/m-{i}" if case.startswith("hub-ids") else f"no-such-model-{i}"
        if case == "failed-names" and i % 10 == 0:
            name = f"broken-{i // 10}"  # a $ZOO_HOME export whose config.json is broken
        try:
            app.classify(tile, "", name, False, 3)
        except gr.Error:
            refused += 1
    gc.collect()
    cache = Path(os.environ["HF_HOME"])
    return {
        "case": case,
        "requests": count,
        "refused": refused,
        "seconds": round(time.perf_counter() - start, 1),
        "rss_growth_mb": round((psutil.Process().memory_info().rss - before) / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "models_held": len(app._MODELS),
        "locks_held": len(app._LOADING),
        "hf_cache_files": sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0,
    }


def run_child(case: str, count: int, tmp: Path, olah: str, code: Path) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "HF_ENDPOINT": olah,
        "HF_HOME": str(tmp / f"hf-{case}"),
        "ZOO_HOME": str(tmp / "home"),
    }
    cmd = [sys.executable, __file__, "--child", case, str(count), str(tmp / "tile.png")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, cwd=tmp)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def uploads(tmp: Path, code: Path, count: int, megabytes: int) -> dict:
    """``count`` distinct uploads of about ``megabytes`` MB each through the real server; bytes left after."""
    import numpy as np
    import psutil
    from gradio_client import Client, handle_file
    from PIL import Image

    from tests.helpers.servers import serve

    side = int((megabytes * 2**20 / 3) ** 0.5)
    files = tmp / "uploads"
    files.mkdir()
    cache = tmp / "gradio"
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "GRADIO_TEMP_DIR": str(cache),
        "ZOO_HOME": str(tmp / "home"),
    }
    env["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, str(code / "demo" / "app.py"), "--model", str(tmp / "home" / "model")]
    with serve(lambda port: [*command, "--port", str(port)], tmp / "demo.log", timeout=300, env=env) as port:
        client, errors, sent = Client(f"http://127.0.0.1:{port}/", verbose=False), 0, 0
        for i in range(count):
            path = files / f"upload-{i}.png"
            pixels = np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, compress_level=0)
            sent += path.stat().st_size
            try:
                client.predict(handle_file(str(path)), "model", "", False, 3, api_name="/classify")
            except Exception:
                errors += 1
            path.unlink()  # the upload file this bench wrote just above
        names = {f"upload-{i}.png" for i in range(count)}
        left = [p for p in cache.rglob("*") if p.is_file() and p.name in names]
        server = psutil.Process().children(recursive=True)
        rss = max((p.memory_info().rss for p in server), default=0)
    return {
        "case": "uploads",
        "uploads": count,
        "sent_mb": round(sent / 2**20, 1),
        "errors": errors,
        "upload_files_left": len(left),
        "upload_bytes_left": sum(p.stat().st_size for p in left),
        "server_rss_mb": round(rss / 2**20, 1),
    }


def main() -> int:
    if CHILD:
        case, count, tile = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        print(json.dumps(child(case, count, tile)))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", type=int, default=150)
    parser.add_argument("--failed", type=int, default=1000)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--upload-mb", type=int, default=50)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    args = parser.parse_args()
    import numpy as np
    from PIL import Image

    from tests.helpers.servers import start_olah

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_model(tmp / "home" / "model")
        for i in range(args.failed // 10):
            broken = shutil.copytree(model, tmp / "home" / f"broken-{i}")
            (broken / "config.json").write_text('{"architecture": "test_resnet", "num_classes": -1}')
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            tmp / "tile.png"
        )
        with start_olah(tmp / "olah") as (olah, mirrors):
            for i in range(args.ids):
                git_repo(model, mirrors / "models" / "bench" / f"m-{i}")
            results = [
                run_child("hub-ids-default", args.ids, tmp, olah, args.code.resolve()),
                run_child("hub-ids-allowed", args.ids, tmp, olah, args.code.resolve()),
                run_child("failed-names", args.failed, tmp, olah, args.code.resolve()),
            ]
        if args.uploads:
            results.append(uploads(tmp, args.code.resolve(), args.uploads, args.upload_mb))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
