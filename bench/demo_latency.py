"""Demo latency: p50 / p95 per prediction for a ResNet-50 @ 224 model (700x460 PNG upload) — the bare forward,
the server-side ``classify`` in process, and end to end through the real server (gradio_client: upload, queue,
SSE), each with and without Grad-CAM — and 50 concurrent requests.

    python bench/demo_latency.py [--requests 30] [--concurrent 50] [--model EXPORT_FOLDER]

``--model``: an export folder to measure instead (e.g. a small one with an out-of-distribution reference, which
the generated ResNet-50 lacks); the bare forward then runs at its own input size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def percentiles(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--model", type=Path, default=None, help="an export folder instead of a ResNet-50")
    args = parser.parse_args()
    import numpy as np
    import torch
    from gradio_client import Client, handle_file
    from PIL import Image

    import zoo
    from bench.load_time import make_model
    from tests.helpers.servers import serve

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = args.model.resolve() if args.model else tmp / "resnet50"
        if not args.model:
            make_model(folder)
        image = tmp / "tile.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (460, 700, 3), dtype=np.uint8)).save(image)
        model = zoo.load(folder)
        x = torch.randn(1, *model.pretrained_cfg["input_size"])
        forward, server_side = [], {}
        with torch.inference_mode():
            for _ in range(args.requests):
                t = time.perf_counter()
                model(x)
                forward.append(time.perf_counter() - t)
        from medssl_zoo.demo import app

        shown = app.add_operator_model(str(folder))  # a path: only as the operator's --model

        for saliency in (False, True):  # the prediction function itself, in process (server-side latency)
            app.classify(str(image), shown, "", saliency, 3)
            times = []
            for _ in range(args.requests):
                t = time.perf_counter()
                app.classify(str(image), shown, "", saliency, 3)
                times.append(time.perf_counter() - t)
            server_side[f"classify() in process, saliency {'on' if saliency else 'off'}"] = percentiles(times)
        env = {**os.environ, "ZOO_HOME": str(tmp / "home")}

        def command(port: int) -> list[str]:
            return [
                sys.executable,
                str(ROOT / "demo" / "app.py"),
                "--model",
                str(folder),
                "--port",
                str(port),
            ]

        with serve(command, tmp / "demo.log", timeout=180, env=env) as port:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)

            def call(saliency):
                return client.predict(
                    handle_file(str(image)),
                    shown,  # the folder's own name: visitors never see a server path
                    "",
                    saliency,
                    3,
                    api_name="/classify",
                )

            results = {"model forward only (in process)": percentiles(forward), **server_side}
            for saliency in (False, True):
                call(saliency)  # warm-up
                times = []
                for _ in range(args.requests):
                    t = time.perf_counter()
                    call(saliency)
                    times.append(time.perf_counter() - t)
                results[f"end to end, saliency {'on' if saliency else 'off'}"] = percentiles(times)
            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrent) as pool:
                futures = [pool.submit(call, False) for _ in range(args.concurrent)]
                errors = sum(1 for f in futures if f.exception(timeout=600) is not None)
            results[f"{args.concurrent} concurrent requests"] = {
                "errors": errors,
                "wall_s": round(time.perf_counter() - start, 1),
            }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
