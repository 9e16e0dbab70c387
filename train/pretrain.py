"""Self-supervised pre-training with Accelerate on CPU, one or many GPUs, one or many machines.

accelerate launch train/pretrain.py                       # the embedded default (synthetic, ~2 min on 2 CPUs)
accelerate launch train/pretrain.py --config simclr-breast --data-root ~/data/archive
accelerate launch train/pretrain.py --resume latest --output-dir runs/simclr-breast
python train/pretrain.py --max-steps 20                   # plain python works too (one process)
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # `python train/pretrain.py` / `accelerate launch train/pretrain.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import yaml
from accelerate import Accelerator
from accelerate.tracking import TensorBoardTracker
from accelerate.utils import (
    DataLoaderConfiguration,
    broadcast_object_list,
    is_tensorboard_available,
    set_seed,
)
from safetensors.torch import save_file
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from train.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from train.config import RESUMABLE_CHANGES, PretrainConfig, parse_args
from train.data import IndexedImages, PretrainData, load_pretrain_data
from train.monitor import COLLAPSE_THRESHOLD, MetricsLog, embedding_spread, knn_eval, plot_curves
from zoo.data.batch_augment import BatchAugment
from zoo.distributed import GlobalBatchNorm
from zoo.methods import SSLModel, create_method
from zoo.runtime import bf16_is_fast

log = logging.getLogger("train")


class LossNotFiniteError(FloatingPointError):
    pass


def build_accelerator(cfg: PretrainConfig) -> Accelerator:
    if cfg.log_with == "tensorboard" and not is_tensorboard_available():
        raise ValueError("log_with=tensorboard needs the tensorboard package: pip install tensorboard")
    precision = cfg.mixed_precision
    if precision == "auto":
        device_type = (
            "cuda" if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU") != "true" else "cpu"
        )
        precision = "bf16" if bf16_is_fast(device_type) else "no"
    return Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        # split_batches: the loader yields the *global* batch and each process takes its slice, so a run on N
        # processes sees the same batches as one process; the seedable sampler reshuffles by (seed, epoch)
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True),
    )


def resolve_run_dir(cfg: PretrainConfig, resume: str | None) -> Path:
    """The run directory (the same on every process); an earlier run is never silently overwritten."""
    name = cfg.output_dir or f"runs/{cfg.method}-{cfg.dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(broadcast_object_list([name])[0])
    if resume is None and (run_dir / "config.yaml").exists():
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or a new --output-dir"
        )
    if resume is not None and resume != "latest" and not Path(resume).exists():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder")
    return run_dir


def check_resume_config(run_dir: Path, cfg: PretrainConfig) -> None:
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    differing = sorted(
        k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k) != v
    )
    if differing:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {getattr(cfg, k)!r}" for k in differing)
        raise ValueError(f"--resume: the configuration does not match the checkpoint's run ({details})")


def build_model(cfg: PretrainConfig, channels: int, accelerator: Accelerator) -> SSLModel:
    model = create_method(cfg.method, cfg.backbone, in_chans=channels, paper_mode=cfg.paper_mode)
    if accelerator.num_processes > 1:  # normalise with global-batch statistics, as one process would
        if accelerator.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            model = GlobalBatchNorm.convert(model)
    return model.to(memory_format=torch.channels_last)


def total_steps(cfg: PretrainConfig, num_train: int) -> tuple[int, int]:
    """(optimizer steps of the whole run, loader batches per epoch)."""
    batches_per_epoch = num_train // cfg.batch_size
    steps = cfg.max_steps or cfg.epochs * batches_per_epoch // cfg.grad_accum_steps
    return steps, batches_per_epoch


def setup_threads(cfg: PretrainConfig, accelerator: Accelerator) -> None:
    if accelerator.device.type == "cpu":
        per_process = cfg.num_threads or max(1, (os.cpu_count() or 1) // accelerator.num_processes)
        torch.set_num_threads(per_process)


class Trainer:
    """One pre-training run: owns the accelerator, model, data and run directory."""

    def __init__(self, cfg: PretrainConfig, resume: str | None, halt_at_step: int | None = None):
        self.cfg, self.halt_at_step = cfg, halt_at_step
        self.accelerator = build_accelerator(cfg)
        self.main = self.accelerator.is_main_process
        setup_threads(cfg, self.accelerator)
        self.run_dir = resolve_run_dir(cfg, resume)
        if resume is not None:
            check_resume_config(self.run_dir, cfg)
        elif self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self.accelerator.wait_for_everyone()
        set_seed(cfg.seed)
        self.data: PretrainData = load_pretrain_data(cfg, self.run_dir / "split.csv" if self.main else None)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.main)
        if (
            cfg.log_with == "tensorboard" and self.main
        ):  # an Accelerate tracker, writing into the run directory
            tracker = TensorBoardTracker("tensorboard", logging_dir=str(self.run_dir))
            tracker.start()
            tracker.store_init_configuration(
                {k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}
            )
            self.accelerator.trackers.append(tracker)
        self.steps, self.batches_per_epoch = total_steps(cfg, len(self.data.train[0]))
        self._build(resume)

    def _build(self, resume: str | None) -> None:
        cfg, ds = self.cfg, self.data.dataset
        model = build_model(cfg, ds.channels, self.accelerator)
        optimizer = create_optimizer_v2(
            model,
            opt=cfg.optimizer,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            filter_bias_and_bn=True,  # no weight decay on norms and biases
        )
        loader = DataLoader(
            IndexedImages(self.data.train[0]), batch_size=cfg.batch_size, shuffle=True, drop_last=True
        )
        self.model, self.optimizer, self.loader = self.accelerator.prepare(model, optimizer, loader)
        self.scheduler = None
        if cfg.schedule == "cosine":
            self.scheduler = CosineLRScheduler(
                self.optimizer,
                t_initial=self.steps,
                lr_min=cfg.min_lr,
                warmup_t=cfg.warmup_steps,
                warmup_lr_init=cfg.lr * 0.01,
                warmup_prefix=True,
                t_in_epochs=False,
            )
            self.scheduler.step_update(0)
        self.augment = BatchAugment(
            cfg.image_size,
            ds.channels,
            ds.mean,
            ds.std,
            recipe=cfg.augment,
            paper_mode=cfg.paper_mode,
            crop_scale=tuple(cfg.crop_scale) if cfg.crop_scale else None,
            seed=cfg.seed,
        )
        self.state = TrainState()
        if resume is not None:
            folder = latest_checkpoint(self.run_dir) if resume == "latest" else Path(resume)
            if folder is None:
                raise FileNotFoundError(f"--resume latest: {self.run_dir} has no complete checkpoint")
            self.state = load_checkpoint(self.accelerator, folder)
            if self.scheduler:
                self.scheduler.step_update(self.state.step)
            log.info("resumed from %s at step %d", folder, self.state.step)

    @property
    def encoder(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model).backbone

    def evaluate(self, split: str = "val") -> float:
        """kNN accuracy of the current encoder on ``split`` (memory bank: train), on the main process."""
        acc = float("nan")
        if self.main:
            queries = self.data.val if split == "val" else self.data.test
            acc = knn_eval(
                self.encoder,
                self.data.train,
                queries,
                self.data.eval_transform,
                self.data.dataset.num_classes,
                self.cfg.knn_k,
                self.cfg.knn_metric,
            )
        self.accelerator.wait_for_everyone()
        return acc

    def make_views(
        self, images: torch.Tensor, ids: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented views of a uint8 batch; a function of (seed, epoch, sample id, view) only."""
        return self.augment(images, ids, epoch, view=0), self.augment(images, ids, epoch, view=1)

    def optimize(self, view1: torch.Tensor, view2: torch.Tensor) -> dict | None:
        """Forward, backward and (every grad_accum_steps) an optimizer step; stats after an optimizer step."""
        with self.accelerator.accumulate(self.model):
            out = self.model(view1, view2)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise LossNotFiniteError(
                    f"the loss became {loss.item()} at step {self.state.step}: lower the learning rate "
                    f"(lr={self.cfg.lr}), add warmup_steps, or set mixed_precision=no"
                )
            self.accelerator.backward(loss)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if not self.accelerator.sync_gradients:
            return None
        self.state.step += 1
        if self.scheduler:
            self.scheduler.step_update(self.state.step)
        return {"loss": loss.item(), "spread": embedding_spread(out["z1"])}

    def run(self) -> dict:
        cfg = self.cfg
        if self.state.step == 0:
            random_knn = self.evaluate()
            self.record(event="eval", step=0, knn=random_knn, encoder="random-init")
            log.info("random-init encoder: kNN val accuracy %.3f", random_knn)
        bar = tqdm(
            total=self.steps,
            initial=self.state.step,
            desc="pretrain",
            disable=not (self.main and cfg.progress),
            mininterval=0.5
            if sys.stderr.isatty()
            else 15.0,  # a log file gets a line every 15 s, not every step
        )
        batches_done = self.state.step * cfg.grad_accum_steps
        collapse_warned = False
        while self.state.step < self.steps:
            epoch, skip = divmod(batches_done, self.batches_per_epoch)
            self.loader.set_epoch(epoch)
            batches = self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
            for images, ids in batches:
                batches_done += 1
                stats = self.optimize(*self.make_views(images, ids, epoch))
                if stats is None:
                    continue
                step = self.state.step
                lr = self.optimizer.param_groups[0]["lr"]
                self.record(event="step", step=step, epoch=epoch, lr=lr, **stats)
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
                if stats["spread"] < COLLAPSE_THRESHOLD and step > cfg.warmup_steps and not collapse_warned:
                    log.warning(
                        "representation collapse: embedding spread %.3f at step %d", stats["spread"], step
                    )
                    collapse_warned = True
                end_of_epoch = batches_done % self.batches_per_epoch == 0
                self._maybe_evaluate(step, epoch, end_of_epoch)
                self._maybe_checkpoint(step, end_of_epoch)
                if self.halt_at_step is not None and step >= self.halt_at_step:
                    bar.close()
                    return {"halted_at_step": step}
                if step >= self.steps:
                    break
        bar.close()
        return self.finish()

    def record(self, event: str, step: int, **values) -> None:
        """One event to metrics.jsonl and, when configured, to the Accelerate trackers (TensorBoard)."""
        self.metrics.write(event=event, step=step, **values)
        if self.cfg.log_with != "none":
            scalars = {
                f"{event}/{k}": v for k, v in values.items() if isinstance(v, float) and math.isfinite(v)
            }
            self.accelerator.log(scalars, step=step)

    def _maybe_evaluate(self, step: int, epoch: int, end_of_epoch: bool) -> None:
        due = step % self.cfg.eval_every == 0 if self.cfg.eval_every else end_of_epoch
        if not (due or step == self.steps):
            return
        acc = self.evaluate()
        self.record(event="eval", step=step, epoch=epoch, knn=acc)
        if self.main:
            log.info("step %d: kNN val accuracy %.3f", step, acc)
            if acc > self.state.best_knn:
                self.state.best_knn, self.state.best_step = acc, step
                self.save_encoder(self.run_dir / "encoder_best.safetensors")

    def _maybe_checkpoint(self, step: int, end_of_epoch: bool) -> None:
        due = step % self.cfg.checkpoint_every == 0 if self.cfg.checkpoint_every else end_of_epoch
        if due or step == self.steps or step == self.halt_at_step:
            save_checkpoint(self.accelerator, self.run_dir, self.state, keep=self.cfg.keep_checkpoints)

    def save_encoder(self, path: Path) -> None:
        """The backbone's weights as safetensors (temporary file, then rename)."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"architecture": self.cfg.backbone, "method": self.cfg.method})
        tmp.replace(path)

    def finish(self) -> dict:
        """Final encoder, kNN on val and test against the random-init encoder, plot, summary, export."""
        summary = {}
        if self.main:
            self.save_encoder(self.run_dir / "encoder.safetensors")
        test_knn = self.evaluate("test")
        if self.main:
            random_test = self._random_init_knn()
            evals = [m for m in self.metrics.read() if m["event"] == "eval"]
            summary = {
                "method": self.cfg.method,
                "backbone": self.cfg.backbone,
                "dataset": self.cfg.dataset,
                "steps": self.state.step,
                "knn_k": self.cfg.knn_k,
                "knn_val_random_init": evals[0]["knn"],
                "knn_val_final": evals[-1]["knn"],
                "knn_val_best": self.state.best_knn,
                "best_step": self.state.best_step,
                "knn_test_final": test_knn,
                "knn_test_random_init": random_test,
                "data_config": self.data.data_config,
            }
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            plot_curves(
                self.metrics.read(), self.run_dir / "curves.png", f"{self.cfg.method} on {self.cfg.dataset}"
            )
            if self.cfg.export_name:
                summary["exported_to"] = str(self._export())
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return summary

    def _random_init_knn(self) -> float:
        """Test kNN of the same architecture at the run's seeded initialisation (its step-0 encoder)."""
        set_seed(self.cfg.seed)
        fresh = create_method(
            self.cfg.method, self.cfg.backbone, in_chans=self.data.dataset.channels
        ).backbone
        fresh = fresh.to(self.accelerator.device, memory_format=torch.channels_last)
        return knn_eval(
            fresh,
            self.data.train,
            self.data.test,
            self.data.eval_transform,
            self.data.dataset.num_classes,
            self.cfg.knn_k,
            self.cfg.knn_metric,
        )

    def _export(self) -> Path:
        from hub.export import export_run, zoo_home

        return export_run(
            self.run_dir, zoo_home() / self.cfg.export_name, encoder=self.encoder, data=self.data
        )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    try:
        cfg, args = parse_args(argv)
        start = time.time()
        trainer = Trainer(cfg, args.resume, args.halt_at_step)
        summary = trainer.run()
    except (ValueError, FileNotFoundError, FileExistsError, LossNotFiniteError) as e:
        log.error("%s", e)
        return 2
    if trainer.main and "knn_test_final" in summary:
        gain = summary["knn_test_final"] - summary["knn_test_random_init"]
        print(
            f"\n{cfg.method} / {cfg.backbone} on {cfg.dataset}: kNN test accuracy {summary['knn_test_final']:.3f} "
            f"(random-init encoder {summary['knn_test_random_init']:.3f}, {gain:+.3f}) after {summary['steps']} "
            f"steps in {time.time() - start:.0f} s.\nRun directory: {trainer.run_dir}"
            + (f"\nExported for zoo.load: {summary['exported_to']}" if "exported_to" in summary else "")
        )
    if not math.isfinite(summary.get("knn_test_final", 0.0)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
