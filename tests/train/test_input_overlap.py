"""On the CPU, input work overlaps with the step (issue 21.8): a producer thread makes the next batch's views while
the step runs, with its own intra-op thread, and a run chooses it (``input_overlap: auto``) only when its own first
batches time faster with it. The views, and so the run, are the same in every mode, bit for bit."""

import threading

import pytest
import torch
from safetensors.torch import load_file

from medssl_zoo.train.pipeline import InOrder, OverlapTrial, ProducerThread, ViewPipeline
from medssl_zoo.train.pretrain import main
from tests.train.tiny import args, metrics
from zoo.data.batch_augment import BatchAugment

CPU = torch.device("cpu")


def _batches(count: int, epoch: int = 0):
    return [(epoch, (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([k, k]))) for k in range(count)]


@pytest.mark.parametrize("policy", ["simclr", "byol"])
def test_views_are_the_same_with_any_intra_op_thread_count(policy):
    """What lets the producer run with one thread while the step keeps its own: augmentation does not depend on
    the thread count (no reduction whose order follows the threads)."""
    images = torch.randint(
        0, 256, (48, 3, 80, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    augment = BatchAugment(64, 3, policy=policy, seed=5)
    before = torch.get_num_threads()
    try:
        made = {}
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            made[threads] = [augment(images, torch.arange(48), epoch=2, view=v) for v in (0, 1)]
    finally:
        torch.set_num_threads(before)
    for threads in (2, 3):
        assert all(torch.equal(a, b) for a, b in zip(made[1], made[threads], strict=True))


@pytest.mark.timeout(60)
def test_the_producer_makes_the_next_views_while_the_step_runs():
    """Each step waits until the next batch's views are being made on another thread: in order, this could never
    happen (the step would wait forever; the timeout fails it in seconds)."""
    started = {k: threading.Event() for k in range(4)}
    makers = {}

    def make_views(images, ids, epoch):
        k = int(ids[0])
        makers[k] = threading.current_thread()
        started[k].set()
        return (ids.clone(),)

    for _, views in ViewPipeline(make_views, CPU, overlap="thread")(_batches(4)):
        k = int(views[0][0])
        if k < 3:
            assert started[k + 1].wait(timeout=20), f"batch {k + 1}'s views were not started during step {k}"
    assert all(maker is not threading.current_thread() for maker in makers.values())


def test_in_order_makes_the_views_when_the_step_asks():
    made = []
    pipeline = ViewPipeline(
        lambda images, ids, epoch: made.append(int(ids[0])) or (ids,), CPU, overlap="none"
    )
    for _, views in pipeline(_batches(3)):
        assert made[-1] == int(views[0][0])  # nothing made ahead: the plain loop


def test_the_producer_thread_has_one_intra_op_thread_and_the_step_keeps_its_own():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        producer = ProducerThread(threads=1)
        seen = producer.executor.submit(
            lambda: (torch.ones(4096, 4096).sum(), torch.get_num_threads())[1]
        ).result()
        producer.close()
        assert seen == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.timeout(60)
def test_a_producer_error_reaches_the_loop_and_no_thread_is_left():
    def make_views(images, ids, epoch):
        if int(ids[0]) == 2:
            raise ValueError("bad batch 2")
        return (ids,)

    seen = []
    with pytest.raises(ValueError, match="bad batch 2"):
        for _, views in ViewPipeline(make_views, CPU, overlap="thread")(_batches(5)):
            seen.append(int(views[0][0]))
    assert seen == [0, 1]
    stopped = ViewPipeline(lambda images, ids, epoch: (ids,), CPU, overlap="thread")(_batches(5))
    next(stopped)
    stopped.close()  # a run that stops early (SIGTERM, --halt-at-step) ends the thread with the loop
    assert not [t for t in threading.enumerate() if t.name.startswith("views")]


def test_the_trial_times_each_mode_in_its_steady_state_and_keeps_the_faster():
    trial = OverlapTrial(window=4)
    modes = [trial.mode(k) for k in range(11)]
    assert modes == [InOrder.name] * 6 + [ProducerThread.name] * 5
    # iteration k: in order 100 ms, with the thread 70 ms; iteration 0 (allocations) and the switch don't count
    times = {0: 5.0, 5: 0.4, 8: 3.0}  # 8: an evaluation inside the thread's window, dropped as its slowest
    for k in range(10):
        trial.observe(k, times.get(k, 0.1 if k < 6 else 0.07))
    assert trial.seconds == {"none": [0.1] * 4, "thread": [0.07, 0.07, 3.0, 0.07]}
    assert trial.mode(11) == ProducerThread.name and trial.chosen == ProducerThread.name


@pytest.mark.parametrize(
    ("in_order", "thread", "chosen"),
    [(0.1, 0.1, "none"), (0.1, 0.099, "none"), (0.1, 0.12, "none"), (0.1, 0.09, "thread")],
)
def test_the_thread_is_kept_only_when_it_is_faster_by_the_margin(in_order, thread, chosen):
    trial = OverlapTrial(window=3, margin=0.02)
    for k in range(8):
        trial.observe(k, in_order if k <= 4 else thread)
    assert trial.mode(9) == chosen


@pytest.mark.timeout(600)
def test_a_run_is_the_same_bit_for_bit_in_every_input_mode(tmp_path):
    common = ("--max-steps", "14", "--grad-accum-steps", "1", "--mixed-precision", "no")
    runs = {mode: tmp_path / mode for mode in ("none", "thread", "auto")}
    for mode, out in runs.items():
        assert main(args(out, *common, "--input-overlap", mode)) == 0
    losses = {mode: [m["loss"] for m in metrics(out) if m["event"] == "step"] for mode, out in runs.items()}
    assert len(losses["none"]) == 14 and losses["thread"] == losses["none"] == losses["auto"]
    weights = {mode: load_file(out / "encoder.safetensors") for mode, out in runs.items()}
    for key, value in weights["none"].items():
        assert torch.equal(weights["thread"][key], value) and torch.equal(weights["auto"][key], value), key


def test_another_accelerator_makes_its_views_there_in_order():
    """MPS / XPU: no stream prefetcher and no CPU producer; each batch is moved to the device and made there."""
    pipeline = ViewPipeline(lambda images, ids, epoch: (images,), torch.device("meta"), overlap="thread")
    assert pipeline.mode == "none" and pipeline.settling_batches == 0
    (_, (views,)), *_ = pipeline(_batches(2))
    assert views.device.type == "meta"
