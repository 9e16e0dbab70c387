"""Checkpoints reload whatever the process count and --compile (issue 21.4): DDP saves ``module.*`` keys,
torch.compile ``_orig_mod.*``; checkpoints store the unwrapped names and are read by them in any combination, and
``medssl-evaluate RUN/checkpoints/step_*`` loads them."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from medssl_zoo.train import evaluate
from medssl_zoo.train.pretrain import main
from tests.helpers.accelerate_state import reset_accelerate_state
from tests.helpers.launch import accelerate_launch
from tests.train.tiny import args, step_losses
from zoo.run_dir import read_run
from zoo.wrapped import unwrapped_keys

COMMON = ("--max-steps", "4", "--checkpoint-every", "2", "--mixed-precision", "no", "--lr", "1e-2")
EVALUATE = ["--fractions", "1.0", "--seeds", "0", "--protocols", "knn", "--baselines", "none", "--no-plots"]


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with its eager backend: the same ``_orig_mod.`` wrapper, no C++ compiler needed."""
    real = torch.compile

    def eager(model, **options):  # Accelerate passes backend="inductor": replaced
        return real(model, **{**options, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", eager)


def _checkpoint(run, step: int):
    return run / "checkpoints" / f"step_{step:07d}"


def _assert_unwrapped_and_evaluable(run, step: int, tmp_path) -> None:
    weights = load_file(_checkpoint(run, step) / "model.safetensors")
    assert not [k for k in weights if k.startswith(("module.", "_orig_mod."))]
    encoder = read_run(run).load_encoder(_checkpoint(run, step) / "model.safetensors")
    for key, value in encoder.state_dict().items():  # the checkpoint's backbone, not a fresh one
        assert torch.equal(value, weights[f"backbone.{key}"]), key
    out = tmp_path / f"eval-{run.name}"
    assert evaluate.main([str(_checkpoint(run, step)), "--output-dir", str(out), *EVALUATE]) == 0


def _assert_same_run(a, b, rel: float) -> None:
    assert step_losses(a) == pytest.approx(step_losses(b), rel=rel)
    wa, wb = load_file(a / "encoder.safetensors"), load_file(b / "encoder.safetensors")
    for key, value in wa.items():
        torch.testing.assert_close(wb[key], value, rtol=rel, atol=rel / 10, msg=key)


@pytest.mark.timeout(600)
def test_compiled_and_plain_checkpoints_resume_into_each_other(tmp_path, eager_compile):
    assert main(args(tmp_path / "straight", *COMMON)) == 0
    for first, then in ((["--compile", "true"], []), ([], ["--compile", "true"])):
        run = tmp_path / ("compiled-first" if first else "plain-first")
        reset_accelerate_state()
        assert main([*args(run, *COMMON, *first), "--halt-at-step", "2"]) == 0
        _assert_unwrapped_and_evaluable(run, 2, tmp_path)
        reset_accelerate_state()
        assert main([*args(run, *COMMON, *then), "--resume"]) == 0
        _assert_same_run(tmp_path / "straight", run, rel=1e-5)


@pytest.mark.distributed
@pytest.mark.timeout(600)
def test_a_two_process_checkpoint_resumes_with_one_process_and_evaluates(tmp_path):
    run = tmp_path / "two-then-one"
    accelerate_launch("train/pretrain.py", *args(run, *COMMON), "--halt-at-step", "2", num_processes=2)
    _assert_unwrapped_and_evaluable(run, 2, tmp_path)
    reset_accelerate_state()
    assert main([*args(run, *COMMON), "--resume"]) == 0
    assert main(args(tmp_path / "one", *COMMON)) == 0
    # two processes and one differ by float32 summation order only (tests/train/test_pretrain.py's budget)
    _assert_same_run(tmp_path / "one", run, rel=1e-3)


def test_old_wrapped_checkpoint_weights_still_load_for_evaluation(tiny_run, tmp_path):
    """A checkpoint an older version wrote from a DDP model (``module.`` keys) loads in evaluate's reader."""
    folder = next((tiny_run / "checkpoints").glob("step_*"))
    weights = load_file(folder / "model.safetensors")
    wrapped = tmp_path / "model.safetensors"
    save_file({f"module._orig_mod.{k}": v for k, v in weights.items()}, wrapped)
    encoder = read_run(tiny_run).load_encoder(wrapped)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, weights[f"backbone.{key}"]), key


def test_unwrapped_keys_refuses_a_mixed_state_dict():
    assert unwrapped_keys({"_orig_mod.module.a.b": 1, "module.c": 2}) == {"a.b": 1, "c": 2}
    with pytest.raises(ValueError, match="twice"):
        unwrapped_keys({"module.a": 1, "a": 2})
