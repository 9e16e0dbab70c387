"""The training step's zoo parts never make the host wait for the device (issue 21.1), and the views stay what they
were.

On a GPU the host runs ahead of the device only if nothing in the step reads a result back. Two checks that need
no GPU (../shared/notes/gpu.md):
- on the CPU, a ``TorchDispatchMode`` sees every aten op of augmentation, forward, loss, backward and the EMA, and
  fails on those that read device memory on the host: ``_local_scalar_dense`` (``.item()``), ``nonzero``,
  ``masked_select``, boolean-mask indexing (whose output size the host must know), ``linalg_inv_ex`` (the inverse's
  info checked on the host);
- the same step on the ``meta`` device fails on any copy from a CPU tensor and on any ``torch.tensor(data,
  device=...)``: a constant made on the host and moved to the device per call (a blocking copy from pageable memory
  on CUDA).
Both run a warm-up step first: constants copied to a device once (a per-device cache) are allowed.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from tests.zoo.data.augment_before import BatchAugmentBefore
from tests.zoo.test_distributed import mirrored_world  # noqa: F401  (a fixture)
from zoo import create_method, list_methods
from zoo.data.augment_policies import AUGMENT_POLICIES, blur_kernel
from zoo.data.batch_augment import VIEWS_PER_SAMPLE, BatchAugment, RandomStream, _grid_base, hash_uniform

aten = torch.ops.aten
HOST_READS = {  # ops whose result (or output shape) the host must read from device memory
    aten._local_scalar_dense,
    aten.item,
    aten.nonzero,
    aten.masked_select,
    aten.linalg_inv_ex,
    aten.is_nonzero,
    aten.equal,
}
INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}
COPIES = {aten._to_copy, aten.copy_, aten.copy, aten._copy_from, aten._copy_from_and_resize}
LITERALS = {"tensor", "as_tensor", "asarray", "new_tensor"}  # Python data → a tensor
METHOD_POLICY = {"byol": "byol", "mocov3": "byol", "dino": "byol"}  # the others use the default "simclr"


class HostWaitError(AssertionError):
    pass


def _tensors(values) -> list[torch.Tensor]:
    found = []
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, list | tuple):
            found += _tensors(v)
    return found


class NoHostSync(TorchDispatchMode):
    """Fail on any op that would make the host wait for a device; record every op seen."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        self.seen.add(packet)
        if packet in HOST_READS:
            raise HostWaitError(f"{func} reads device memory on the host")
        if packet in INDEXING and any(t.dtype == torch.bool for t in _tensors(args[1:2])):
            raise HostWaitError(f"{func} with a boolean mask: its output size is read on the host")
        return func(*args, **(kwargs or {}))


class NoHostCopy(TorchDispatchMode):
    """Fail on any copy whose source is a CPU tensor (the step runs on ``meta``: such a copy is a host constant
    moved to the device)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in COPIES:
            source = args[0] if func.overloadpacket is aten._to_copy else args[1]
            if source.device.type == "cpu":
                raise HostWaitError(f"{func} copies a CPU tensor {tuple(source.shape)} to the device")
        return func(*args, **(kwargs or {}))


class NoDeviceLiterals(TorchFunctionMode):
    """Fail on ``torch.tensor(data, device=...)`` and its kin made off the CPU: their copy from host memory runs
    below the dispatcher (a ``TorchDispatchMode`` does not see it), so it is caught at the Python API."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in LITERALS and isinstance(out, torch.Tensor) and out.device.type != "cpu":
            data = args[1] if name == "new_tensor" else args[0]
            if not isinstance(data, torch.Tensor) or data.device.type == "cpu":
                raise HostWaitError(f"torch.{name}(...) {tuple(out.shape)} made on the device from host data")
        return out


@contextlib.contextmanager
def no_host_data():
    """Neither copies from CPU tensors nor tensor literals made on the device."""
    with NoDeviceLiterals(), NoHostCopy():
        yield


def _augmenters(policy: str, channels: int = 3) -> tuple[BatchAugment, BatchAugment]:
    mean, std = (0.5,) * channels, (0.25,) * channels
    return (
        BatchAugment(32, channels, mean, std, policy=policy, seed=3),
        BatchAugment(16, channels, mean, std, policy=policy, crop_scale=(0.05, 0.4), seed=3),
    )


def _step(
    model, augmenters, images, ids, local_crops: int, progress: float, autocast: bool = False
) -> torch.Tensor:
    """The zoo parts of one training step: views (global and local crops), the method's schedules, forward and loss
    (under bf16 autocast when ``autocast``, as Accelerate wraps the model's forward), backward and the EMA (the
    optimizer and Accelerate are train's)."""
    augment, local = augmenters
    views = [augment(images, ids, epoch=1, view=v) for v in (0, 1)]
    views += [local(images, ids, epoch=1, view=2 + i) for i in range(local_crops)]
    model.set_progress(progress)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(*views)
    out["loss"].backward()
    model.before_optimizer_step(progress)
    model.after_optimizer_step(progress)
    return out["loss"]


def _batch(device: str, channels: int = 3, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    if device == "meta":
        return torch.empty(n, channels, 40, 40, dtype=torch.uint8, device="meta"), torch.empty(
            n, dtype=torch.long, device="meta"
        )
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, channels, 40, 40), generator=g, dtype=torch.uint8), torch.arange(
        10, 10 + n
    )


def _method(name: str, device: str):
    torch.manual_seed(0)
    model = create_method(name, backbone="test_resnet")
    if name == "dino":
        model.freeze_last_layer = 0.5  # the frozen-last-layer branch runs too (progress 0.1 below)
    return model.to(device).train(), 4 if model.multi_crop else 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("method", list_methods())
def test_a_training_step_never_reads_device_memory_on_the_host(method, autocast):
    model, local_crops = _method(method, "cpu")
    augmenters = _augmenters(METHOD_POLICY.get(method, "simclr"))
    images, ids = _batch("cpu")
    _step(
        model, augmenters, images, ids, local_crops, 0.1, autocast
    )  # warm-up: per-device constants made once
    with NoHostSync() as mode:
        loss = _step(model, augmenters, images, ids, local_crops, 0.1, autocast)
    assert torch.isfinite(loss)
    saw = {aten.grid_sampler_2d, aten.convolution_backward}  # the check saw augmentation and backward
    saw |= {aten._foreach_lerp_} if method in METHOD_POLICY else set()  # and the EMA
    assert saw <= mode.seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", list_methods())
def test_a_training_step_on_the_meta_device_copies_nothing_from_the_host(method):
    model, local_crops = _method(method, "meta")
    augmenters = _augmenters(METHOD_POLICY.get(method, "simclr"))
    images, ids = _batch("meta")
    _step(model, augmenters, images, ids, local_crops, 0.1)  # warm-up: per-device constants made once
    with no_host_data():
        loss = _step(model, augmenters, images, ids, local_crops, 0.1)
    assert loss.device.type == "meta"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("paper_mode", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policy", sorted(AUGMENT_POLICIES))
def test_every_augmentation_policy_is_free_of_host_waits(policy, channels, paper_mode):
    for device, mode in (("cpu", NoHostSync), ("meta", no_host_data)):
        augment = BatchAugment(
            24, channels, (0.5,) * channels, (0.25,) * channels, policy, paper_mode, seed=1
        )
        images, ids = _batch(device, channels)
        augment(images, ids, epoch=0, view=0)  # warm-up
        with mode():
            for view in range(VIEWS_PER_SAMPLE):
                augment(images, ids, epoch=2, view=view)


def _affine_grid_is_multiply_add() -> bool:
    """Whether this machine's ``F.affine_grid`` (a batched matrix product) rounds each coordinate as one multiply
    then one add (scale * base + shift), as the crop's broadcast grid does; true here (AMD EPYC, AVX-512). A BLAS
    that fuses the two (one rounding) would make the views differ by rounding only."""
    g = torch.Generator().manual_seed(0)
    theta = torch.zeros(64, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = torch.rand(64, generator=g), torch.rand(64, generator=g) - 0.5
    theta[:, 1, 1], theta[:, 1, 2] = 1, 0
    grid = F.affine_grid(theta, [64, 1, 40, 40], align_corners=False)[..., 0]  # N x S x S: x coordinates
    ours = theta[:, 0, 0].view(-1, 1, 1) * _grid_base(40, torch.device("cpu")) + theta[:, 0, 2].view(-1, 1, 1)
    return torch.equal(grid, ours.expand_as(grid))


def _blurred_count(augment: BatchAugment, ids: torch.Tensor, epoch: int, view: int) -> int:
    keys = ((augment.seed * 1_000_003 + epoch) * 1_000_003 + ids.long()) * VIEWS_PER_SAMPLE + view
    return int((hash_uniform(keys, RandomStream.BLUR_APPLY) < augment.policy.for_view(view).blur_p).sum())


GRID_EXACT = _affine_grid_is_multiply_add()
CASES = list(
    itertools.product(
        sorted(AUGMENT_POLICIES),
        [1, 3],
        [(40, 40, 24, None), (80, 60, 64, (0.25, 1.0)), (96, 96, 32, (0.05, 0.4))],
        [1, 2, 5, 33],
    )
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("policy, channels, shape, batch", CASES)
def test_views_are_bit_identical_to_the_implementation_before(policy, channels, shape, batch):
    """The sync-free rewrite, and the faster crop (a broadcast grid, the flip read from it), blend and blur after
    it, give the same bits on the CPU as the code before them (tests/zoo/data/augment_before.py) for every policy,
    global and local crops, views 0-7. Exceptions, where the rounding differs by design (<= 1e-6 of a pixel's
    range): a 1-channel batch of which exactly one sample is blurred, where the old code convolved a single image
    (groups = 1: oneDNN's plain convolution, not its depthwise one); and every view on a machine whose
    ``F.affine_grid`` fuses its multiply-add (:func:`_affine_grid_is_multiply_add`). Every 3-channel batch, the
    default run's, is exact here."""
    h, w, size, scale = shape
    g = torch.Generator().manual_seed(batch * 7 + channels)
    images = torch.randint(0, 256, (batch, channels, h, w), generator=g, dtype=torch.uint8)
    ids = torch.randperm(10_000, generator=g)[:batch]
    mean, std = (0.4,) * channels, (0.2,) * channels
    for seed, epoch, view in [(0, 0, 0), (3, 5, 1), (16, 2, 2), (1, 1, 5), (2, 9, 7)]:
        new = BatchAugment(size, channels, mean, std, policy=policy, crop_scale=scale, seed=seed)
        old = BatchAugmentBefore(size, channels, mean, std, policy=policy, crop_scale=scale, seed=seed)
        ours, before = new(images, ids, epoch, view), old(images, ids, epoch, view)
        assert ours.is_contiguous(memory_format=torch.channels_last)  # as before (1 channel: either strides)
        if not GRID_EXACT or (channels == 1 and _blurred_count(new, ids, epoch, view) == 1):
            torch.testing.assert_close(ours, before, rtol=0, atol=1e-6 / 0.2)  # 1e-6 of a pixel's range
        else:
            assert torch.equal(ours, before), (seed, epoch, view)


def test_the_paper_mode_views_are_bit_identical_too():
    images = torch.randint(
        0, 256, (16, 3, 80, 80), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    ids = torch.arange(100, 116)
    for view in range(3):
        ours = BatchAugment(64, 3, paper_mode=True, seed=5)(images, ids, 4, view)
        assert torch.equal(ours, BatchAugmentBefore(64, 3, paper_mode=True, seed=5)(images, ids, 4, view))
    assert blur_kernel(AUGMENT_POLICIES["original"], 64) == 23  # the original policy's blur ran


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("mirrored_world")
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_the_multi_process_pieces_are_free_of_host_waits_too(momentum):
    """Global BatchNorm (its sample count, its cumulative-average weight) and the gathered losses, in a 2-process
    world faked in one process (tests/zoo/test_distributed.py)."""
    from zoo.distributed import GlobalBatchNorm
    from zoo.losses import SimCLRLoss

    for device, mode in (("cpu", NoHostSync), ("meta", no_host_data)):
        bn = GlobalBatchNorm(3, momentum=momentum).to(device).train()
        x = torch.randn(4, 3, 5, 5, device=device, requires_grad=True)
        z = torch.randn(4, 8, device=device, requires_grad=True)
        bn(x)  # warm-up
        with mode():
            (bn(x).sum() + SimCLRLoss()(z, z.flip(0))).backward()
