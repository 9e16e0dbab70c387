"""BYOL, MoCo v3 and DINO through pre-training: the EMA teacher, the centre and the schedules survive a checkpoint
exactly, two processes compute what one does, the paper's encoder is exported, --init continues from weights."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from medssl_zoo.train.pretrain import main
from tests.helpers.launch import accelerate_launch
from tests.train.tiny import args, step_losses
from zoo.methods.model import cosine_momentum

TEACHER = {"byol": (), "mocov3": (), "dino": ("--local-crops", "2", "--local-size", "16")}


def test_ema_teacher_follows_the_student_with_the_cosine_momentum():
    model = zoo.create_method("byol", "test_resnet")
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)  # the student moved by +1 everywhere
    before = {k: v.clone() for k, v in model.teacher_backbone.named_parameters()}
    model.after_optimizer_step(0.0)  # momentum 0.99 at the start: the teacher moves 1 % of the way
    for name, p in model.teacher_backbone.named_parameters():
        student = dict(model.backbone.named_parameters())[name]
        torch.testing.assert_close(p, 0.99 * before[name] + 0.01 * student)
    assert [cosine_momentum(0.99, x) for x in (0.0, 0.5, 1.0)] == pytest.approx([0.99, 0.995, 1.0])
    assert not any(p.requires_grad for p in model.teacher_backbone.parameters())


def test_each_method_exports_the_encoder_its_paper_evaluates():
    byol, mocov3, dino = (zoo.create_method(m, "test_resnet") for m in ("byol", "mocov3", "dino"))
    assert byol.evaluated_encoder is byol.backbone and mocov3.evaluated_encoder is mocov3.backbone
    assert dino.evaluated_encoder is dino.teacher_backbone
    assert zoo.methods.get_method_spec("dino").exported_encoder == "the teacher (EMA) encoder"


@pytest.mark.parametrize("method", sorted(TEACHER))
def test_resume_restores_teacher_centre_and_schedules_exactly(tmp_path, method):
    common = (
        "--method",
        method,
        "--max-steps",
        "8",
        "--checkpoint-every",
        "3",
        "--log-every",
        "1",
        *TEACHER[method],
    )
    common += ("--mixed-precision", "no", "--export-name", "null")
    assert main(args(tmp_path / "straight", *common)) == 0
    assert main([*args(tmp_path / "resumed", *common), "--halt-at-step", "4"]) == 0
    assert main([*args(tmp_path / "resumed", *common), "--resume"]) == 0
    assert step_losses(tmp_path / "resumed") == step_losses(tmp_path / "straight")
    straight, resumed = (load_file(tmp_path / p / "encoder.safetensors") for p in ("straight", "resumed"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    checkpoints = [
        load_file(next((tmp_path / p / "checkpoints").glob("step_0000008")) / "model.safetensors")
        for p in ("straight", "resumed")
    ]
    teacher_keys = [k for k in checkpoints[0] if k.startswith("teacher_") or k.endswith("center")]
    assert teacher_keys and all(torch.equal(checkpoints[0][k], checkpoints[1][k]) for k in teacher_keys)


@pytest.mark.distributed
def test_dino_on_two_processes_equals_one(tmp_path):
    common = ("--method", "dino", *TEACHER["dino"], "--max-steps", "3", "--checkpoint-every", "1000")
    common += ("--lr", "1e-2", "--mixed-precision", "no", "--export-name", "null")
    accelerate_launch("train/pretrain.py", *args(tmp_path / "two", *common), num_processes=2)
    accelerate_launch("train/pretrain.py", *args(tmp_path / "one", *common), num_processes=1)
    one, two = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert two[0] == pytest.approx(
        one[0], rel=2e-6
    )  # the budget of the SimCLR test (float32 summation order)
    assert two == pytest.approx(one, rel=1e-3)
    one_encoder, two_encoder = (load_file(tmp_path / r / "encoder.safetensors") for r in ("one", "two"))
    for key, value in one_encoder.items():  # the teacher (the exported encoder), BatchNorm buffers included
        torch.testing.assert_close(two_encoder[key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_init_from_a_zoo_encoder_and_from_a_weights_file(tiny_export, tmp_path, caplog):
    out = tmp_path / "continued"
    common = ("--max-steps", "2", "--export-name", "null", "--lr", "1e-9", "--warmup-steps", "0")
    assert main(args(out, *common, "--init", str(tiny_export))) == 0
    full = zoo.load(tiny_export, features_only=True).state_dict()
    continued = load_file(out / "encoder.safetensors")
    start = {
        k: v for k, v in full.items() if "running" not in k and "num_batches" not in k
    }  # trained weights

    assert all(
        torch.allclose(continued[k].float(), v.float(), atol=1e-5)
        for k, v in start.items()
        if v.is_floating_point()
    )
    assert (
        json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["encoder"] == f"init: {tiny_export}"
    )
    weights = tmp_path / "imagenet.safetensors"
    save_file(full, str(weights))
    assert main(args(tmp_path / "file", *common, "--init", "imagenet", "--init-weights", str(weights))) == 0
    from_file = load_file(tmp_path / "file" / "encoder.safetensors")
    assert all(torch.equal(from_file[k], v) for k, v in continued.items())  # the same start, the same run
    # offline, no weights file: one clear message saying how to get them
    assert main(args(tmp_path / "offline", *common, "--init", "imagenet")) == 2
    assert "cannot be downloaded here" in caplog.text and "--init-weights" in caplog.text
    assert main(args(tmp_path / "other", *common, "--init", str(tiny_export), "--backbone", "resnet18")) == 2
    assert "is a test_resnet" in caplog.text
    save_file(start, str(weights))  # a file that lacks the BatchNorm statistics: named, not a traceback
    assert (
        main(args(tmp_path / "partial", *common, "--init", "imagenet", "--init-weights", str(weights))) == 2
    )
    assert "do not fit test_resnet" in caplog.text and "running_mean" in caplog.text
