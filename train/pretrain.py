"""Self-supervised pre-training with Accelerate on CPU, one or many GPUs, one or many machines.

accelerate launch train/pretrain.py                       # the embedded default (synthetic, ~2 min on 2 CPUs)
accelerate launch train/pretrain.py --recipe simclr-breast --data-root ~/data/archive
accelerate launch train/pretrain.py --resume --output-dir runs/simclr-breast
python train/pretrain.py --max-steps 20                   # plain python works too (one process)
medssl-pretrain --processes 2 --max-steps 20              # two local processes, no launcher traceback on failure

Exit codes: 0 finished (or halted by --halt-at-step), 1 the final kNN is not finite, 2 an error (one line saying
what to do), 130 Ctrl-C, 143 SIGTERM (the current step was finished and checkpointed: continue with --resume).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python train/pretrain.py` / `accelerate launch train/pretrain.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, parse_flag_from_env, set_seed
from safetensors import SafetensorError
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from medssl_zoo.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from medssl_zoo.train.config import PretrainConfig, parse_args
from medssl_zoo.train.data import load_pretrain_data
from medssl_zoo.train.init_weights import InitialWeights, fit_initial_weights, load_initial_weights
from medssl_zoo.train.launch import launch
from medssl_zoo.train.lifecycle import (
    RunClaim,
    RunDirError,
    abandon_run_dir,
    checkpoint_config,
    claim_run_dir,
    write_run_config,
)
from medssl_zoo.train.monitor import (
    CollapseDetector,
    EmbeddingHealth,
    KnnMonitor,
    MetricsLog,
    embedding_spread,
    plot_curves,
)
from medssl_zoo.train.pipeline import MultiCropViews, ViewPipeline, make_loader
from medssl_zoo.train.stopping import TERMINATED_EXIT, SigtermStop, Terminated
from medssl_zoo.train.tracking import check_trackers, end_trackers, log_image, parse_trackers, start_trackers
from zoo.data.batch_augment import BatchAugment
from zoo.data.run_data import RunData, load_run_data
from zoo.distributed import GlobalBatchNorm
from zoo.files import atomic_write_text, save_safetensors
from zoo.host_memory import keep_freed_host_memory
from zoo.messages import first_line
from zoo.methods import SSLModel, TeacherStudentModel, create_method, get_method_spec
from zoo.run_dir import (
    BEST_ENCODER_FILE,
    CURVES_FILE,
    ENCODER_FILE,
    METRICS_FILE,
    SPLIT_FILE,
    SUMMARY_FILE,
)
from zoo.runtime import bf16_is_fast

log = logging.getLogger("train")


class LossNotFiniteError(FloatingPointError):
    pass


class RunWriteError(OSError):
    """Writing into the run directory failed (a full disk, a quota, permissions); the message says what to do."""


@contextlib.contextmanager
def writing(what: str, run_dir: Path):
    """Turn a failed write (``OSError``, safetensors' ``SafetensorError``, torch.save's ``RuntimeError``) into one
    line saying what to do; every write of the run is atomic, so nothing half-written is left behind."""
    try:
        yield
    except RunWriteError:
        raise
    except (OSError, RuntimeError, SafetensorError) as e:
        reason = first_line(e)
        raise RunWriteError(
            f"writing {what} into {run_dir} failed ({reason}): free some space (or fix the folder's permissions), "
            "then continue with --resume; the newest checkpoint is kept"
        ) from e


def choose_precision(requested: str) -> str:
    """``auto``: bf16 where the run's device computes it fast, else fp32. The device is the CPU under
    ``accelerate launch --cpu`` on a GPU machine: ACCELERATE_USE_CPU read as Accelerate reads it (it writes
    ``True``, capitalised)."""
    if requested != "auto":
        return requested
    on_cpu = not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU")
    return "bf16" if bf16_is_fast("cpu" if on_cpu else "cuda") else "no"


def build_accelerator(cfg: PretrainConfig) -> Accelerator:
    return Accelerator(
        mixed_precision=choose_precision(cfg.mixed_precision),
        # no gradient_accumulation_steps: the Trainer decides which batch ends an optimizer step from its own count
        # of batches (Accelerate's decision follows the loader's state, one batch early behind a prefetcher)
        # split_batches: the loader yields the *global* batch and each process takes its slice, so a run on N
        # processes sees the same batches as one process; the seedable sampler reshuffles by (seed, epoch); the
        # batches stay on the host: the view pipeline copies them (on GPUs on its side stream, without blocking)
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True),
        # --compile: Accelerate compiles in prepare, outside DDP (torch.compile(DDP(model)), its documented order)
        **({"dynamo_backend": "inductor"} if cfg.compile else {}),
    )


def build_model(
    cfg: PretrainConfig,
    channels: int,
    accelerator: Accelerator,
    epoch_fraction: float = 0.0,
    init: InitialWeights | None = None,
) -> SSLModel:
    """The method on its backbone (starting from ``init``, the weights ``cfg.init`` names), global BatchNorm on
    several processes; ``epoch_fraction`` (one epoch / the run) goes to the method's spec, which sets what depends
    on the run's length (DINO: the part of training during which its last layer is fixed)."""
    model_options = get_method_spec(cfg.method).options_for_run(epoch_fraction)
    if cfg.ema_momentum is not None:
        model_options["momentum"] = cfg.ema_momentum
    model = create_method(
        cfg.method,
        cfg.backbone,
        in_chans=channels,
        paper_mode=cfg.paper_mode,
        loss_options=cfg.loss_options,
        model_options=model_options,
        image_size=cfg.image_size,
    )

    if init is not None:
        with torch.random.fork_rng(devices=[]):  # fitting the weights never moves the run's random stream
            state = fit_initial_weights(init, cfg, channels)
        model.backbone.load_state_dict(state, strict=True)  # names and shapes checked by fit_initial_weights
        if isinstance(model, TeacherStudentModel):
            model.reset_teacher()
    if accelerator.num_processes > 1:  # normalise with global-batch statistics, as one process would
        if accelerator.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            model = GlobalBatchNorm.convert(model)
    return model.to(memory_format=torch.channels_last)


def build_optimizer(
    cfg: PretrainConfig, model: torch.nn.Module, device_type: str = "cpu"
) -> torch.optim.Optimizer:
    """timm's optimizer ``cfg.optimizer``; norms and biases (1-D parameters) get no weight decay; PyTorch's fused
    kernels for SGD / Adam / AdamW on GPUs (one kernel per step instead of one per parameter)."""
    fused = {"fused": True} if device_type == "cuda" and cfg.optimizer in ("sgd", "adam", "adamw") else {}
    return create_optimizer_v2(
        model,
        opt=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        filter_bias_and_bn=True,
        **fused,
    )


def build_scheduler(cfg: PretrainConfig, optimizer, steps: int) -> CosineLRScheduler | None:
    """timm's warmup + cosine, stepped per optimizer step; None for a constant learning rate."""
    if cfg.schedule != "cosine":
        return None
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=steps,
        lr_min=cfg.min_lr,
        warmup_t=cfg.warmup_steps,
        warmup_lr_init=cfg.lr * 0.01,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    scheduler.step_update(0)
    return scheduler


def build_views(cfg: PretrainConfig, dataset) -> MultiCropViews:
    """The augmenters of the run's views: global views at ``image_size``, multi-crop local views at their own size
    and scale (``local_crops`` of them)."""

    def augmenter(size: int, crop_scale) -> BatchAugment:
        return BatchAugment(
            size,
            dataset.channels,
            dataset.mean,
            dataset.std,
            policy=cfg.augment,
            paper_mode=cfg.paper_mode,
            crop_scale=tuple(crop_scale) if crop_scale else None,
            seed=cfg.seed,
        )

    return MultiCropViews(
        augmenter(cfg.image_size, cfg.crop_scale),
        augmenter(cfg.local_size, cfg.local_crop_scale),
        cfg.local_crops,
    )


def total_steps(cfg: PretrainConfig, num_train: int) -> tuple[int, int]:
    """(optimizer steps of the whole run, loader batches per epoch)."""
    batches_per_epoch = num_train // cfg.batch_size
    steps = cfg.max_steps or cfg.epochs * math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    return steps, batches_per_epoch


def ends_a_step(batch_index: int, batches_per_epoch: int, accum: int) -> bool:
    """Whether the ``batch_index``-th batch of the run (0-based) is the last of an optimizer step: every ``accum``
    batches, and the last batch of each epoch (a shorter window, as Accelerate's sync at the end of a loader)."""
    within = batch_index % batches_per_epoch
    return (within + 1) % accum == 0 or within + 1 == batches_per_epoch


def batches_before(step: int, batches_per_epoch: int, accum: int) -> int:
    """Loader batches consumed by ``step`` optimizer steps (the inverse of :func:`ends_a_step`): where a resumed
    run continues."""
    epochs, within = divmod(step, math.ceil(batches_per_epoch / accum))
    return epochs * batches_per_epoch + within * accum


def setup_threads(cfg: PretrainConfig, accelerator: Accelerator) -> None:
    if accelerator.device.type == "cpu":
        per_process = cfg.num_threads or max(1, (os.cpu_count() or 1) // accelerator.num_processes)
        torch.set_num_threads(per_process)


@dataclass(frozen=True)
class Due:
    """What the loop does after an optimizer step."""

    log: bool
    evaluate: bool
    checkpoint: bool
    stop: str | None  # "halted_at_step" / "terminated_at_step"


class Trainer:
    """One pre-training run: claims its run directory, builds data, model and optimizer, runs the loop."""

    def __init__(
        self,
        cfg: PretrainConfig,
        resume: str | None = None,
        halt_at_step: int | None = None,
        stop: SigtermStop | None = None,
    ):
        self.cfg, self.halt_at_step = cfg, halt_at_step
        self.stop = stop or SigtermStop()  # SIGTERM handling (inert unless installed, as main does)
        trackers = parse_trackers(cfg.log_with)
        check_trackers(trackers)  # packages and destinations (bounded), before the folder is claimed
        self.accelerator = build_accelerator(cfg)
        self.main = self.accelerator.is_main_process
        setup_threads(cfg, self.accelerator)
        log.info("host memory a step frees (zoo.host_memory): %s", keep_freed_host_memory())
        claim = claim_run_dir(self.accelerator, cfg, resume)
        self.run_dir, self.run_id = claim.run_dir, claim.run_id
        try:
            self._setup(claim)
        except BaseException:
            if self.main:
                abandon_run_dir(claim)  # no-op once config.yaml is written: the folder is a run from then on
            raise
        start_trackers(self.accelerator, trackers, self.run_dir, f"{cfg.method}-{cfg.dataset}", cfg.to_dict())

    def _setup(self, claim: RunClaim) -> None:
        """Initial weights, data, model, the checkpoint's state; then ``config.yaml``: from then on it is a run."""
        cfg = self.cfg
        set_seed(cfg.seed)
        init = None  # a run resumed from a checkpoint needs no initial weights: the checkpoint has them all
        if claim.checkpoint is None:
            with torch.random.fork_rng(devices=[]):  # fetching weights never moves the run's random stream
                init = load_initial_weights(cfg)
        self.data = load_pretrain_data(
            cfg,
            manifest=self.run_dir / SPLIT_FILE if claim.resumed else None,  # a resumed run keeps its split
            manifest_out=self.run_dir / SPLIT_FILE if self.main else None,
        )
        self.steps, self.batches_per_epoch = total_steps(cfg, len(self.data.train[0]))
        self._build(init)
        self.state, self.checkpoint = TrainState(), None
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE, enabled=self.main)
        if claim.checkpoint is not None:
            self._resume_from(claim)
        if claim.resumed:
            self.metrics.truncate(self.state.step if claim.checkpoint else -1)
        elif self.main:
            record = {**claim.record, **({"init_weights": init.record} if init and init.record else {})}
            write_run_config(self.run_dir, cfg, record)  # setup succeeded: from now on the folder is a run
        self.accelerator.wait_for_everyone()
        self.monitor_data = self._monitor_data()
        self.knn = KnnMonitor(self.monitor_data, cfg.knn_k, cfg.knn_metric) if self.monitor_data else None
        self.health = EmbeddingHealth(self.data)
        if self.knn is None:
            log.warning(
                "%s has no labels and no --eval-dataset: monitoring embedding health only", cfg.dataset
            )
        self.collapse = CollapseDetector(after_step=cfg.warmup_steps)
        self.pending: list[dict] = []  # step records whose loss is still a device tensor
        self.bar = tqdm(
            total=self.steps,
            initial=self.state.step,
            desc="pretrain",
            disable=not (self.main and cfg.progress),
            mininterval=0.5 if sys.stderr.isatty() else 15.0,  # a log file gets a line every 15 s
        )
        self.stop.connect(self.accelerator)

    def _resume_from(self, claim: RunClaim) -> None:
        if claim.state.step > self.steps:
            raise RunDirError(
                f"--resume: {claim.checkpoint} is at step {claim.state.step}, beyond this run's {self.steps} steps"
            )
        load_checkpoint(self.accelerator, claim.checkpoint)
        self.state = claim.state
        if self.scheduler:
            self.scheduler.step_update(self.state.step)
        log.info("resumed from %s at step %d", claim.checkpoint, self.state.step)

    def _build(self, init: InitialWeights | None) -> None:
        """``self.model`` (the SSL model, in its distributed / compiled wrapper: what steps), the optimizer, the
        loader, the schedule and the view pipeline; ``self.method`` is the SSL model itself."""
        cfg = self.cfg
        epoch_fraction = min(1.0, self.batches_per_epoch / self.steps)
        method = build_model(cfg, self.data.dataset.channels, self.accelerator, epoch_fraction, init)
        method = method.to(self.accelerator.device)  # before the optimizer: fused kernels take the device's
        optimizer = build_optimizer(cfg, method, self.accelerator.device.type)
        on_gpu = self.accelerator.device.type == "cuda"
        loader = make_loader(
            self.data.train[0], cfg.batch_size, pin_memory=on_gpu, workers=cfg.loader_workers
        )
        self.model, self.optimizer, self.loader = self.accelerator.prepare(
            method,
            optimizer,
            loader,
            device_placement=[True, True, False],  # the pipeline moves the batches
        )
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps)
        self.pipeline = ViewPipeline(
            build_views(cfg, self.data.dataset),
            self.accelerator.device,
            overlap=cfg.input_overlap,
            window=4 * cfg.grad_accum_steps,  # whole optimizer steps in each timed window
        )

    @property
    def knn_name(self) -> str:
        """What the kNN monitor reports (accuracy, or mean AUROC on multi-label data)."""
        return self.knn.name if self.knn else "accuracy"

    @property
    def encoder(self) -> torch.nn.Module:
        """The encoder the method's paper evaluates (BYOL: online, MoCo v3: base, DINO: teacher)."""
        return self.method.evaluated_encoder

    def _monitor_data(self) -> RunData | None:
        """The labelled data kNN runs on: the run's own, an --eval-dataset (normalised like the run), or None."""
        labelled = self.cfg.labelled_data()
        if labelled is None or labelled.dataset == self.cfg.dataset:
            return self.data if labelled is not None else None
        return load_run_data(labelled, data_config=self.data.data_config)

    def evaluate(self, split: str = "val") -> dict[str, float]:
        """On the main process: the encoder's kNN accuracy on ``split`` (memory bank: train), or, without labels,
        its embedding health."""
        result = {}
        if self.main:
            result = {"knn": self.knn(self.encoder, split)} if self.knn else self.health(self.encoder)
        self.accelerator.wait_for_everyone()
        return result

    @property
    def method(self) -> SSLModel:
        """The SSL model itself (not its distributed or compiled wrapper): its schedules and evaluated encoder.
        ``keep_torch_compile=False``: Accelerate's default re-points a compiled wrapper at the unwrapped module,
        which would take a compiled DDP model out of its DDP wrapper."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def optimize(self, views: tuple[torch.Tensor, ...], ends_step: bool = True) -> dict | None:
        """Forward, backward and, when this batch ``ends_step``, an optimizer step, with the method's schedules
        around it; the step's loss and embedding spread as device tensors (no host synchronisation here). Gradients
        of the other batches accumulate without an all-reduce (DDP's ``no_sync``), each loss divided by
        ``grad_accum_steps`` (as Accelerate's ``accumulate`` does, the epoch's shorter last window included)."""
        progress = self.state.step / self.steps
        self.method.set_progress(progress)
        with contextlib.nullcontext() if ends_step else self.accelerator.no_sync(self.model):
            out = self.model(*views)
            loss = out["loss"] / self.cfg.grad_accum_steps if self.cfg.grad_accum_steps > 1 else out["loss"]
            self.accelerator.backward(loss)
        if not ends_step:
            return None
        self.method.before_optimizer_step(progress)
        if self.cfg.clip_grad:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.method.after_optimizer_step(self.state.step / self.steps)  # the EMA teacher follows the student
        if self.scheduler:
            self.scheduler.step_update(self.state.step)
        return {"loss": out["loss"].detach(), "spread": embedding_spread(out["z1"])}

    def run(self) -> dict:
        """The loop, as DINO's ``train_one_epoch`` reads: views → optimize → log / evaluate / checkpoint / stop."""
        if self.state.step == 0:
            self.evaluate_initial()
        self.stop.in_loop = True  # from here SIGTERM ends the run at the end of the current step
        for epoch, views in self.pipeline(self.batches()):
            stats = self.optimize(views, self.next_batch_ends_a_step())
            if stats is None:  # gradients accumulate over this batch
                continue
            self.log_step(epoch, stats)
            due = self.due_after(self.state.step)
            if due.log:
                self.flush_steps()
            if due.evaluate:
                self.evaluate_and_keep_best(self.state.step, epoch)
            if due.checkpoint:
                self.save_checkpoint()
            if due.stop:
                return self.stop_here(due.stop)
        # SIGTERM during the final evaluation stops at once: the last step is checkpointed already
        self.stop.in_loop = False
        self.bar.close()
        return self.finish()

    def evaluate_initial(self) -> None:
        """Step 0: the encoder before training (random or the initial weights), the baseline of every curve."""
        initial = "random-init" if self.cfg.init == "random" else f"init: {self.cfg.init}"
        result = self.evaluate()
        self.record(event="eval", step=0, **result, encoder=initial)
        if self.main:
            log.info("%s encoder: %s", initial, _describe(result, self.knn_name))

    def batches(self) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor]]]:
        """``(epoch, batch)`` for every batch the run still uses, from where it stands to its last step: each
        epoch's loader reshuffled by (seed, epoch), the batches a resumed run already consumed skipped. The
        position is this generator's own (the pipeline takes a batch ahead of the steps)."""
        accum = self.cfg.grad_accum_steps
        self.batches_done = batches_before(self.state.step, self.batches_per_epoch, accum)
        remaining = batches_before(self.steps, self.batches_per_epoch, accum) - self.batches_done
        epoch, skip = divmod(self.batches_done, self.batches_per_epoch)
        while remaining > 0:
            self.loader.set_epoch(epoch)
            loader = self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
            before = remaining
            for batch in itertools.islice(loader, remaining):
                remaining -= 1
                yield epoch, batch
            if remaining == before:  # an empty epoch (batches_per_epoch is >= 1): never an endless loop
                return
            epoch, skip = epoch + 1, 0

    def next_batch_ends_a_step(self) -> bool:
        """Count the batch about to be used; whether it is the last of an optimizer step (:func:`ends_a_step`)."""
        self.batches_done += 1
        return ends_a_step(self.batches_done - 1, self.batches_per_epoch, self.cfg.grad_accum_steps)

    def log_step(self, epoch: int, stats: dict) -> None:
        """Keep the step's record; its loss stays a device tensor until :meth:`flush_steps`."""
        lr = self.optimizer.param_groups[0]["lr"]  # a Python float: no synchronisation
        self.pending.append({"step": self.state.step, "epoch": epoch, "lr": lr, **stats})

    def due_after(self, step: int) -> Due:
        """What is due after ``step``: logging, evaluation (every eval_every steps, or each epoch), a checkpoint
        (every checkpoint_every steps, each epoch, the last step, and before any stop), a stop (--halt-at-step,
        SIGTERM: agreed by every process, so every process calls this after every step)."""
        cfg, end_of_epoch = self.cfg, self.batches_done % self.batches_per_epoch == 0
        halt = self.halt_at_step is not None and step >= self.halt_at_step
        terminated = step < self.steps and self.stop.agreed(self.accelerator)
        stop = "terminated_at_step" if terminated else "halted_at_step" if halt else None
        last = step == self.steps
        evaluate = (step % cfg.eval_every == 0 if cfg.eval_every else end_of_epoch) or last
        every = step % cfg.checkpoint_every == 0 if cfg.checkpoint_every else end_of_epoch
        checkpoint = every or last or stop is not None
        return Due(step % cfg.log_every == 0 or evaluate or checkpoint, evaluate, checkpoint, stop)

    def save_checkpoint(self) -> None:
        step = self.state.step
        with writing(f"the checkpoint of step {step}", self.run_dir):
            self.checkpoint = save_checkpoint(
                self.accelerator,
                self.run_dir,
                self.state,
                checkpoint_config(self.cfg),
                self.run_id,
                keep=self.cfg.keep_checkpoints,
            )

    def stop_here(self, why: str) -> dict:
        """``{why: step}``: the run stops at this (checkpointed) step; continue it with --resume."""
        self.bar.close()
        end_trackers(self.accelerator)
        return {why: self.state.step}

    def flush_steps(self) -> None:
        """Move the pending steps' losses to the host at once, check them, write and log them."""
        if not self.pending:
            return
        values = torch.stack([torch.stack([p["loss"], p["spread"]]) for p in self.pending]).float().tolist()
        for pending, (loss, spread) in zip(self.pending, values, strict=True):
            step, lr = pending["step"], pending["lr"]
            if not math.isfinite(loss):
                raise LossNotFiniteError(
                    f"the loss became {loss} at step {step}: lower the learning rate "
                    f"(lr={self.cfg.lr}), add warmup_steps, or set mixed_precision=no"
                )
            self.record(event="step", step=step, epoch=pending["epoch"], lr=lr, loss=loss, spread=spread)
            self.collapse.update(step, spread)
        self.bar.update(len(self.pending))
        self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)
        self.pending = []

    def record(self, event: str, step: int, **values) -> None:
        """One event to metrics.jsonl and to the experiment trackers."""
        with writing("metrics.jsonl", self.run_dir):
            self.metrics.write(event=event, step=step, **values)
        scalars = {f"{event}/{k}": v for k, v in values.items() if isinstance(v, float) and math.isfinite(v)}
        if self.accelerator.trackers and scalars:
            self.accelerator.log(scalars, step=step)

    def evaluate_and_keep_best(self, step: int, epoch: int) -> None:
        result = self.evaluate()
        self.record(event="eval", step=step, epoch=epoch, **result)
        if self.main:
            log.info("step %d: %s", step, _describe(result, self.knn_name))
            if "knn" in result and result["knn"] > self.state.best_knn:
                self.state.best_knn, self.state.best_step = result["knn"], step
                self.save_encoder(self.run_dir / BEST_ENCODER_FILE)

    def save_encoder(self, path: Path) -> None:
        """The backbone's weights as safetensors (written whole or not at all)."""
        metadata = {"architecture": self.cfg.backbone, "method": self.cfg.method}
        with writing(path.name, self.run_dir):
            save_safetensors(self.encoder.state_dict(), path, metadata=metadata)

    def finish(self) -> dict:
        """Final encoder, kNN on val and test against the random-init encoder, plot, summary, export."""
        summary = {}
        if self.main:
            self.save_encoder(self.run_dir / ENCODER_FILE)
        final = self.evaluate("test")
        if self.main:
            summary = self.summarise(final)
            with writing("the summary and curves", self.run_dir):
                atomic_write_text(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
                plot_curves(
                    self.metrics.read(),
                    self.run_dir / CURVES_FILE,
                    f"{self.cfg.method} on {self.cfg.dataset}",
                    self.knn_name,
                )
            self.accelerator.log(
                {f"final/{k}": v for k, v in summary.items() if isinstance(v, float)}, step=self.state.step
            )
            log_image(self.accelerator, self.run_dir / CURVES_FILE, self.state.step)
            if self.cfg.export_name and self.monitor_data is None:
                log.warning("not exported: a classifier needs classes (pass --eval-dataset to probe on one)")
            elif self.cfg.export_name:
                summary["exported_to"] = str(self._export())

        self.accelerator.wait_for_everyone()
        end_trackers(self.accelerator)
        return summary

    def summarise(self, final: dict[str, float]) -> dict:
        evals = [m for m in self.metrics.read() if m["event"] == "eval"]
        summary = {
            "method": self.cfg.method,
            "backbone": self.cfg.backbone,
            "dataset": self.cfg.dataset,
            "eval_dataset": self.monitor_data.dataset.spec.name if self.monitor_data else None,
            "steps": self.state.step,
            "data_config": self.data.data_config,
        }
        if "knn" not in final:  # unlabelled: how the embeddings spread, at the start and the end
            initial = {k: evals[0][k] for k in ("spread", "effective_rank")}
            return {
                **summary,
                **{f"{k}_initial": v for k, v in initial.items()},
                **{f"{k}_final": v for k, v in final.items()},
            }
        return {
            **summary,
            "knn_k": self.cfg.knn_k,
            "knn_metric": self.knn_name,
            "knn_val_random_init": evals[0]["knn"],
            "knn_val_final": evals[-1]["knn"],
            "knn_val_best": self.state.best_knn,
            "best_step": self.state.best_step,
            "knn_test_final": final["knn"],
            "knn_test_random_init": self._random_init_knn(),
        }

    def _random_init_knn(self) -> float:
        """Test kNN of the same architecture at the run's seeded random initialisation (the step-0 encoder of a
        random-init run; the baseline any initialisation is compared with)."""
        set_seed(self.cfg.seed)
        channels, size = self.data.dataset.channels, self.cfg.image_size
        fresh = create_method(self.cfg.method, self.cfg.backbone, in_chans=channels, image_size=size).backbone

        fresh = fresh.to(self.accelerator.device, memory_format=torch.channels_last)
        return self.knn(fresh, "test")

    def _export(self) -> Path:
        from medssl_zoo.hub.export import export_run, zoo_home

        out = zoo_home() / self.cfg.export_name
        return export_run(self.run_dir, out, encoder=self.encoder, data=self.monitor_data)


def _result_line(cfg: PretrainConfig, summary: dict) -> str:
    where = f"{cfg.method} / {cfg.backbone} on {cfg.dataset}"
    if "knn_test_final" in summary:
        final, initial = summary["knn_test_final"], summary["knn_test_random_init"]
        on = f" ({summary['eval_dataset']})" if summary["eval_dataset"] != cfg.dataset else ""
        what = summary.get("knn_metric", "accuracy")
        return f"{where}: kNN test {what}{on} {final:.3f} (random-init encoder {initial:.3f}, {final - initial:+.3f})"
    return (
        f"{where}: effective rank {summary['effective_rank_initial']:.1f} → {summary['effective_rank_final']:.1f}, "
        f"spread {summary['spread_initial']:.3f} → {summary['spread_final']:.3f} (no labels to score)"
    )


def _describe(result: dict[str, float], knn_name: str = "accuracy") -> str:
    if "knn" in result:
        return f"kNN val {knn_name} {result['knn']:.3f}"
    return (
        f"embedding spread {result['spread']:.3f}, effective rank {result['effective_rank']:.1f} (no labels)"
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    trainer = None
    with SigtermStop() as stop:
        try:
            cfg, args = parse_args(argv)  # checked here once, before any process is started
            if args.processes > 1 and "LOCAL_RANK" not in os.environ:
                return _launch(argv, args.processes)
            start = time.time()
            trainer = Trainer(cfg, args.resume, args.halt_at_step, stop=stop)
            summary = trainer.run()
        except (ValueError, FileNotFoundError, FileExistsError, RunWriteError, LossNotFiniteError) as e:
            log.error("%s", e)
            return 2
        except (KeyboardInterrupt, Terminated) as e:
            what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            if _where(trainer):
                log.error(
                    "%s%s; its newest checkpoint is kept: continue with --resume", what, _where(trainer)
                )
            else:
                log.error("%s before training started: there is nothing to resume", what)
            return TERMINATED_EXIT if isinstance(e, Terminated) else 130
    return _report(cfg, trainer, summary, time.time() - start)


def _launch(argv: list[str] | None, processes: int) -> int:
    """``--processes N``: the same command in N processes (train/launch.py), ending with their exit code."""
    if "ACCELERATE_MIXED_PRECISION" in os.environ:  # set by `accelerate launch` in the processes it starts
        raise ValueError(
            "--processes starts its own processes: run medssl-pretrain --processes N without accelerate launch, "
            "or accelerate launch --num_processes N without --processes"
        )
    return launch("medssl_zoo.train.pretrain", sys.argv[1:] if argv is None else argv, processes)


def _where(trainer: Trainer | None) -> str:
    if trainer is None or not hasattr(trainer, "state"):
        return ""
    return f" {trainer.run_dir} at step {trainer.state.step}"


def _report(cfg: PretrainConfig, trainer: Trainer, summary: dict, seconds: float) -> int:
    """The run's last lines (main process) and its exit code."""
    stopped = {k: v for k, v in summary.items() if k in ("halted_at_step", "terminated_at_step")}
    if stopped and trainer.main:
        (key, step), where = next(iter(stopped.items())), trainer.checkpoint
        why = "--halt-at-step" if key == "halted_at_step" else "SIGTERM"
        print(f"Halted at step {step} ({why}): checkpoint {where}; continue with --resume.", flush=True)
    if "terminated_at_step" in summary:
        return TERMINATED_EXIT
    if trainer.main and "steps" in summary:
        print(f"\n{_result_line(cfg, summary)} after {summary['steps']} steps in {seconds:.0f} s.")
        print(f"Run directory: {trainer.run_dir}")
        if "exported_to" in summary:
            print(f"Exported for zoo.load: {summary['exported_to']}")
    if not math.isfinite(summary.get("knn_test_final", 0.0)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
