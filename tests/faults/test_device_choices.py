"""Device and precision choices that hold on every machine (issue 21.5), checked on the CPU with the GPU parts
emulated: `accelerate launch --cpu` on a GPU machine, the fused optimizer's device, the order of compile and DDP."""

import socket
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from medssl_zoo.train import pretrain as pretrain_module
from medssl_zoo.train.config import parse_args
from medssl_zoo.train.pretrain import Trainer, choose_precision
from tests.train.tiny import args


@pytest.mark.parametrize("flag", ["True", "true", "1", "yes"])
def test_a_cpu_run_on_a_gpu_machine_never_picks_bf16(monkeypatch, flag):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(pretrain_module, "bf16_is_fast", lambda device_type: device_type == "cuda")
    monkeypatch.setenv("ACCELERATE_USE_CPU", flag)  # `accelerate launch --cpu` writes "True"
    assert choose_precision("auto") == "no"
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    assert choose_precision("auto") == "bf16"  # the GPU run does pick it
    assert choose_precision("fp16") == "fp16"  # an explicit choice is kept


class _Stop(Exception):
    pass


def test_the_optimizer_is_built_on_the_models_device(tmp_path, monkeypatch):
    """The fused optimizer wants the parameters on the device at construction: emulate a device that is not the
    CPU (``meta``) and look at the parameters the optimizer is given."""

    class ElsewhereAccelerator(Accelerator):
        @property
        def device(self):
            return torch.device("meta") if getattr(self, "_emulate", False) else super().device

    def build_accelerator(cfg):
        accelerator = ElsewhereAccelerator(cpu=True)
        accelerator._emulate = True
        return accelerator

    seen = []

    def build_optimizer(cfg, model, device_type):
        seen.append({p.device.type for p in model.parameters()})
        raise _Stop

    monkeypatch.setattr(pretrain_module, "build_accelerator", build_accelerator)
    monkeypatch.setattr(pretrain_module, "build_optimizer", build_optimizer)
    cfg, _ = parse_args(args(tmp_path / "run", "--max-steps", "2"))
    with pytest.raises(_Stop):
        Trainer(cfg)
    assert seen == [{"meta"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_compile_wraps_ddp_and_the_method_unwraps_without_undoing_it(monkeypatch):
    """Accelerate's order is torch.compile(DDP(model)); the Trainer's ``method`` (the SSL model) must not re-point
    the compiled wrapper past DDP, as ``unwrap_model``'s default (keep_torch_compile=True) does."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        inner = torch.nn.Linear(3, 2)
        compiled = torch.compile(torch.nn.parallel.DistributedDataParallel(inner), backend="eager")
        trainer = type("T", (), {"accelerator": Accelerator(cpu=True), "model": compiled})()
        assert Trainer.method.fget(trainer) is inner
        assert isinstance(compiled._orig_mod, torch.nn.parallel.DistributedDataParallel)  # still synchronised
    finally:
        torch.distributed.destroy_process_group()


def test_setup_cfg_asks_for_a_torch_with_cpu_fused_kernels():
    setup = Path(__file__).resolve().parents[2] / "setup.cfg"
    lines = [line.strip() for line in setup.read_text().splitlines()]
    (requirement,) = [line for line in lines if line.startswith("torch>=")]
    minimum = tuple(int(x) for x in requirement.removeprefix("torch>=").split(".")[:2])
    assert minimum >= (2, 4)  # fused AdamW/SGD CPU kernels exist from 2.4
    assert (
        tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= minimum
    )  # the tests run it
