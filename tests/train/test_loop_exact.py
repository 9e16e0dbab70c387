"""The prefetching pipeline steps exactly like the plain loop (issue 21.3), checked on the CPU: its order with the
stream calls recorded, and whole runs with the prefetch forced on against the plain loop."""

import pytest
import torch
from safetensors.torch import load_file

from medssl_zoo.train import pretrain as pretrain_module
from medssl_zoo.train.pipeline import InlineStreams, StreamPrefetch, ViewPipeline
from medssl_zoo.train.pretrain import main
from tests.train.tiny import args, metrics


class RecordingStreams(InlineStreams):
    """Emulated CUDA stream calls: a log of what the prefetcher did, in order."""

    def __init__(self, log: list):
        self.log, self.on_side = log, False

    def side(self):
        streams = self

        class Side:
            def __enter__(self):
                streams.on_side = True

            def __exit__(self, *exc):
                streams.on_side = False

        return Side()

    def main_waits_for_side(self):
        self.log.append(("main waits",))

    def used_by_main(self, tensors):
        self.log.append(("used", int(tensors[0][0])))


def test_the_prefetcher_yields_each_batchs_own_views_one_batch_ahead(monkeypatch):
    log = []
    streams = RecordingStreams(log)
    copy = StreamPrefetch.to_device

    def recorded_copy(prefetcher, tensor):
        if tensor.dtype == torch.long:  # the batch's ids
            log.append(("copy", int(tensor[0]), streams.on_side))
        return copy(prefetcher, tensor)

    monkeypatch.setattr(StreamPrefetch, "to_device", recorded_copy)

    def make_views(images, ids, epoch):
        log.append(("make", int(ids[0]), streams.on_side))
        return ids.clone(), ids + epoch  # each view says which batch it came from

    # five batches over an epoch end: three of epoch 7, two of epoch 8
    batches = [
        (7 if k < 3 else 8, (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([k, k])))
        for k in range(5)
    ]
    yielded = []
    for epoch, views in ViewPipeline(make_views, torch.device("cpu"), streams=streams)(batches):
        yielded.append((epoch, [int(v[0]) for v in views]))
        log.append(("step", int(views[0][0])))
    # each batch's own views with its epoch, in order, none lost or repeated
    assert yielded == [(epoch, [k, k + epoch]) for k, (epoch, _) in enumerate(batches)]
    for k in range(5):
        copied, made = log.index(("copy", k, True)), log.index(("make", k, True))
        used, step = log.index(("used", k)), log.index(("step", k))
        waited = max(i for i, e in enumerate(log[:used]) if e == ("main waits",))
        # copied to the device and augmented on the side stream; the main stream waits before it uses them
        assert copied < made < waited < used < step
        if (
            k < 4
        ):  # the next batch's copy and views are enqueued before this step runs, across the epoch end too
            assert log.index(("make", k + 1, True)) < step
    assert all(e[2] for e in log if e[0] in ("make", "copy"))  # on the side stream only


def _forced_prefetch(monkeypatch):
    def prefetching(make_views, device, **options):
        return ViewPipeline(make_views, device, streams=InlineStreams())

    monkeypatch.setattr(pretrain_module, "ViewPipeline", prefetching)


def _steps(run_dir):
    return [(m["step"], m["epoch"], m["loss"]) for m in metrics(run_dir) if m["event"] == "step"]


def _expected_epochs(steps: int, batches_per_epoch: int, accum: int) -> list[int]:
    """A second computation: each epoch's batches in windows of ``accum``, the last window shorter."""
    per_epoch = -(-batches_per_epoch // accum)
    return [(s - 1) // per_epoch for s in range(1, steps + 1)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("accum", [1, 2, 3])
def test_prefetching_steps_like_the_plain_loop(tmp_path, monkeypatch, accum):
    # 96 images → 67 train, 4 batches of 16 per epoch: with 3 batches per step, 2 steps per epoch (3 + 1 batches)
    common = ("--max-steps", "5", "--grad-accum-steps", str(accum), "--checkpoint-every", "2")
    common += ("--mixed-precision", "no")
    assert main(args(tmp_path / "plain", *common)) == 0
    _forced_prefetch(monkeypatch)
    assert main(args(tmp_path / "prefetch", *common)) == 0
    assert main([*args(tmp_path / "resumed", *common), "--halt-at-step", "3"]) == 0
    assert main([*args(tmp_path / "resumed", *common), "--resume"]) == 0

    plain = _steps(tmp_path / "plain")
    assert [s for s, _, _ in plain] == [1, 2, 3, 4, 5]
    assert [e for _, e, _ in plain] == _expected_epochs(5, 4, accum)
    assert _steps(tmp_path / "prefetch") == plain  # same steps, epochs and losses, bit for bit
    resumed = _steps(tmp_path / "resumed")
    assert [(s, e) for s, e, _ in resumed] == [(s, e) for s, e, _ in plain]
    assert [loss for _, _, loss in resumed] == pytest.approx([loss for _, _, loss in plain], rel=1e-5)
    weights = {
        run: load_file(tmp_path / run / "encoder.safetensors") for run in ("plain", "prefetch", "resumed")
    }
    for key, value in weights["plain"].items():
        assert torch.equal(weights["prefetch"][key], value), key
        torch.testing.assert_close(weights["resumed"][key], value, rtol=1e-5, atol=1e-6, msg=key)
