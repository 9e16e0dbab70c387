"""The CUDA paths, on a GPU only (bench/gpu_check.sh runs them on a lent machine; skipped elsewhere): batched
augmentation on the GPU equals the CPU's, the side-stream pipeline yields what the plain loop would, every loss
gives the CPU's value and gradients, a short pre-training run with the real trainer."""

import json

import pytest
import torch

from medssl_zoo.train.pipeline import ViewPipeline
from medssl_zoo.train.pretrain import main
from tests.helpers.accelerate_state import reset_accelerate_state
from zoo.data.batch_augment import BatchAugment
from zoo.probe import extract_features

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh)")


def test_batch_augment_on_the_gpu_equals_the_cpu():
    images = torch.randint(0, 256, (16, 3, 48, 48), dtype=torch.uint8)
    ids = torch.arange(16)
    augment = BatchAugment(32, 3, (0.5,) * 3, (0.25,) * 3, seed=3)
    cpu = augment(images, ids, epoch=1, view=1)
    gpu = augment(images.cuda(), ids.cuda(), epoch=1, view=1).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


def test_the_side_stream_pipeline_yields_the_plain_loops_views():
    augment = BatchAugment(32, 3, (0.5,) * 3, (0.25,) * 3, seed=3)

    def make_views(images, ids, epoch):
        return augment(images, ids, epoch, view=0), augment(images, ids, epoch, view=1)

    batches = [  # pinned host batches, as the loader leaves them: the pipeline copies them on its side stream
        (
            torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8).pin_memory(),
            torch.arange(8).pin_memory() + 8 * i,
        )
        for i in range(5)
    ]
    pipeline = ViewPipeline(make_views, torch.device("cuda"))
    streamed = [tuple(v.cpu() for v in views) for _, views in pipeline((2, batch) for batch in batches)]
    plain = [tuple(v.cpu() for v in make_views(images.cuda(), ids.cuda(), 2)) for images, ids in batches]
    assert len(streamed) == len(plain) == 5
    for a, b in zip(streamed, plain, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_features_on_the_gpu_match_the_cpu():
    from zoo import create_backbone
    from zoo.data import eval_transform

    encoder = create_backbone("resnet18").eval()
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    transform = eval_transform({"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.25,) * 3})
    cpu = extract_features(encoder, images, transform, autocast=False)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:  # cuDNN convolutions use TF32 by default on Ampere and later (~1e-3 relative): compare in full fp32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        gpu = extract_features(encoder.cuda(), images, transform, autocast=False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)


def test_a_short_pretraining_run_on_the_gpu(tmp_path):
    reset_accelerate_state()
    out = tmp_path / "run"
    argv = ["--max-steps", "6", "--eval-every", "3", "--export-name", "null", "--output-dir", str(out)]
    assert main([*argv, "--progress", "false", "--log-every", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["knn_test_final"] > 0 and summary["steps"] == 6
    reset_accelerate_state()


def test_every_loss_on_the_gpu_equals_the_cpu():
    """Device-agnostic losses (masks and constants made on the inputs' device): values and gradients agree."""
    from zoo import losses as L

    torch.manual_seed(0)
    inputs = [torch.randn(8, 16) for _ in range(5)]
    cases = {  # a fresh loss per device (DINO's centre moves with every call)
        "SimCLR": (L.SimCLRLoss, 2),
        "DCLW": (L.DCLWLoss, 2),
        "DCLW paper": (lambda: L.DCLWLoss(paper_mode=True), 2),
        "VICReg": (L.VICRegLoss, 2),
        "BarlowTwins": (L.BarlowTwinsLoss, 2),
        "SimSiam": (L.SimSiamLoss, 4),
        "BYOL": (L.BYOLLoss, 4),
        "MoCoV3": (L.MoCoV3Loss, 4),
        "DINO": (lambda: L.DINOLoss(16), 5),  # 3 student crops, 2 teacher crops
    }

    def value_and_grads(make, count, device):
        xs = [x.to(device).requires_grad_() for x in inputs[:count]]
        loss = make().to(device)
        out = loss(*xs) if count != 5 else loss(xs[:3], xs[3:])
        out.backward()
        return out.item(), [None if x.grad is None else x.grad.cpu() for x in xs]

    for name, (make, count) in cases.items():
        cpu_value, cpu_grads = value_and_grads(make, count, "cpu")
        gpu_value, gpu_grads = value_and_grads(make, count, "cuda")
        assert gpu_value == pytest.approx(cpu_value, rel=1e-4), name
        for a, b in zip(cpu_grads, gpu_grads, strict=True):
            assert (a is None) == (b is None), name
            if a is not None:
                torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "byol"],  # a teacher-student method (EMA on the GPU)
        ["--method", "dino", "--local-crops", "4", "--local-size", "32"],  # DINO multi-crop
        ["--grad-accum-steps", "2"],
        ["--compile", "true"],
    ],
    ids=["byol", "dino-multicrop", "grad-accum-2", "compile"],
)
def test_short_runs_of_the_paths_a_gpu_takes(tmp_path, extra):
    reset_accelerate_state()
    out = tmp_path / "run"
    argv = ["--max-steps", "4", "--eval-every", "1000", "--checkpoint-every", "2", "--export-name", "null"]
    assert main([*argv, "--output-dir", str(out), "--progress", "false", *extra]) == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps if m["event"] == "step"] == [1, 2, 3, 4]
    reset_accelerate_state()


def test_a_gpu_run_resumes_exactly(tmp_path):
    common = ["--max-steps", "6", "--checkpoint-every", "3", "--eval-every", "1000", "--export-name", "null"]
    common += ["--progress", "false", "--mixed-precision", "no"]
    for run, extra in (("straight", []), ("resumed", ["--halt-at-step", "3"]), ("resumed", ["--resume"])):
        reset_accelerate_state()
        assert main([*common, "--output-dir", str(tmp_path / run), *extra]) == 0
    records = {
        run: [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("straight", "resumed")
    }
    losses = {run: [m["loss"] for m in ms if m["event"] == "step"] for run, ms in records.items()}
    assert losses["resumed"][-3:] == pytest.approx(losses["straight"][-3:], rel=1e-4)
    reset_accelerate_state()
