"""SSL augmentations vectorised over a batch, with counter-based randomness.

Per-image torchvision transforms cost ~2 ms per 64 px view in Python dispatch alone — more than a small
encoder's forward/backward on a 2-core CPU. :class:`BatchAugment` applies the same policies
(:mod:`zoo.data.augment_policies`) to a whole uint8 batch with a handful of tensor ops: RandomResizedCrop and the
flip as one ``grid_sample`` over per-sample grids (bilinear; 3.4x faster than ``roi_align`` here), colour jitter as
per-sample blends (hue as a rotation of the YIQ chroma plane), grayscale, separable Gaussian blur as one grouped
convolution, solarize. A view of the default run's batch (128 at 64 px) takes 10 ms on a 2-core CPU (with
:func:`zoo.host_memory.keep_freed_host_memory`, as the trainer runs it; 27-29 ms before both).

Random parameters are a hash of (seed, epoch, sample index, view, parameter): a sample's views do not depend on
which batch or process it lands in, so a run on N processes, or resumed mid-epoch, sees exactly the augmented
images of an uninterrupted single-process run.

Nothing here makes the host wait for the device (so a CUDA side stream can augment the next batch while the step
runs; see the PyTorch notes on CUDA semantics, "asynchronous execution"): the constants are copied to a device once
and kept there, the inverse colour transform is computed once, and data-dependent choices (which samples are
blurred) are blends of all samples by 0 or 1 instead of indexing the selected ones, whose count the host would have
to read back.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from zoo.data.augment_policies import AugmentPolicy, blur_kernel, get_policy

__all__ = ["BatchAugment", "RandomStream", "VIEWS_PER_SAMPLE", "hash_uniform", "unit_batch"]

VIEWS_PER_SAMPLE = 8  # views are packed into the counter as key * 8 + view: view indices 0..7

_M1, _M2 = (
    -4658895280553007687,
    -7723592293110705685,
)  # splitmix64 constants 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_LUMA = torch.tensor([0.299, 0.587, 0.114])
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
# inverted once, on the CPU: an inverse per call on the device checks its result on the host (a synchronisation)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


class _Constants(NamedTuple):
    """The fixed tensors of one :class:`BatchAugment` on one device."""

    mean: torch.Tensor  # 1 x C x 1 x 1
    std: torch.Tensor  # 1 x C x 1 x 1
    luma: torch.Tensor  # 3
    rgb_to_yiq: torch.Tensor  # 3 x 3
    yiq_to_rgb: torch.Tensor  # 3 x 3
    stream_offsets: torch.Tensor  # S x 1 int64: each random stream's counter offset


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix(x: torch.Tensor) -> torch.Tensor:
    x = (x ^ _shift_right(x, 30)) * _M1
    x = (x ^ _shift_right(x, 27)) * _M2
    return x ^ _shift_right(x, 31)


class RandomStream(enum.IntEnum):
    """Independent random streams of one view: each augmentation parameter draws from its own."""

    CROP_AREA = 1
    CROP_RATIO = 2
    CROP_X = 3
    CROP_Y = 4
    FLIP = 10
    JITTER_APPLY = 11
    BRIGHTNESS = 12
    CONTRAST = 13
    SATURATION = 14
    HUE = 15
    GRAYSCALE = 20
    SOLARIZE = 30
    BLUR_APPLY = 40
    BLUR_SIGMA = 41


def _stream_offset(stream: int) -> int:
    return stream * 0x9E3779B97F4A7C15 % (1 << 63)


def hash_uniform(keys: torch.Tensor, stream: int) -> torch.Tensor:
    """Uniform [0, 1) floats, one per int64 key, for random stream ``stream`` (splitmix64 counter hash)."""
    return _to_unit(_splitmix(_splitmix(keys) + _stream_offset(stream)))


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return _shift_right(x, 11).double().mul_(2.0**-53).float()


_STREAM_ROW = {stream: row for row, stream in enumerate(RandomStream)}
_STREAM_OFFSETS = torch.tensor([_stream_offset(stream) for stream in RandomStream]).view(-1, 1)  # S x 1


def hash_uniform_all(keys: torch.Tensor, offsets: torch.Tensor) -> dict[RandomStream, torch.Tensor]:
    """:func:`hash_uniform` of every :class:`RandomStream` at once, the same bits (integer operations, elementwise):
    two dozen operations on an S x N table instead of two dozen per stream (the Python dispatch of ~350 small
    operations per view cost more than the view's arithmetic on a 2-core CPU). ``offsets``: the streams' offsets
    on the keys' device (``_Constants.stream_offsets``)."""
    table = _to_unit(_splitmix(_splitmix(keys).unsqueeze(0) + offsets))  # S x N
    return {stream: table[row] for stream, row in _STREAM_ROW.items()}


class BatchAugment:
    """Augment a uint8 batch (N x C x H x W) into normalised float views (N x C x S x S).

    Args:
        image_size: output size S.
        channels: 1 or 3 (colour steps are skipped for 1).
        mean, std: normalisation.
        policy, paper_mode, crop_scale: as :func:`zoo.data.ssl_transform`.
        seed: base seed of the counter-based random parameters.

    Example:
        >>> augment = BatchAugment(64, 3, mean, std, seed=0)
        >>> v1 = augment(images, sample_ids, epoch=0, view=0)
        >>> v2 = augment(images, sample_ids, epoch=0, view=1)
    """

    def __init__(
        self,
        image_size: int,
        channels: int = 3,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        policy: str = "simclr",
        paper_mode: bool = False,
        crop_scale: tuple[float, float] | None = None,
        seed: int = 0,
    ):
        self.size, self.channels, self.seed = image_size, channels, seed
        self.policy: AugmentPolicy = get_policy(policy, paper_mode, crop_scale)
        self.kernel = blur_kernel(self.policy, image_size)
        _check_blur_fits(self.policy, self.kernel, image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._on_device: dict[torch.device, _Constants] = {}

    def constants(self, device: torch.device) -> _Constants:
        """The constants on ``device``, copied there on first use only: a copy from pageable host memory waits
        for the device, so making them per call would serialise augmentation with the training step."""
        found = self._on_device.get(device)
        if found is None:
            host = _Constants(self.mean, self.std, _LUMA, _RGB_TO_YIQ, _YIQ_TO_RGB, _STREAM_OFFSETS)
            found = self._on_device[device] = _Constants(*(t.to(device) for t in host))
        return found

    def __call__(
        self, images: torch.Tensor, sample_ids: torch.Tensor, epoch: int = 0, view: int = 0
    ) -> torch.Tensor:
        return self.augment_unit(unit_batch(images, self.channels), sample_ids, epoch, view)

    def augment_unit(
        self, unit: torch.Tensor, sample_ids: torch.Tensor, epoch: int = 0, view: int = 0
    ) -> torch.Tensor:
        """The view of a batch already converted by :func:`unit_batch` (N x C x H x W floats in [0, 1], left
        unchanged): the views of one batch share one conversion (the pre-training pipeline's multi-crop views).
        One view at a time: two views made as one batch of 2N were 10 % slower here (intermediates twice the
        size of the cache), and so were chunks of a batch (more, smaller operations)."""
        if not 0 <= view < VIEWS_PER_SAMPLE:
            raise ValueError(f"view must be in 0..{VIEWS_PER_SAMPLE - 1}, got {view}")
        keys = (
            (self.seed * 1_000_003 + epoch) * 1_000_003 + sample_ids.long()
        ) * VIEWS_PER_SAMPLE + view  # N
        const = self.constants(unit.device)
        rand = hash_uniform_all(keys, const.stream_offsets).__getitem__  # stream -> N uniforms
        x = self._crop(unit, rand)  # N x C x S x S in [0, 1], flipped where drawn (``unit`` is unchanged)
        if self.policy.jitter_p:
            x = self._jitter(x, rand, const)
        if self.channels == 3 and self.policy.grayscale_p:
            gray = _gray(x, const.luma).expand_as(x)
            x = _choose(rand(RandomStream.GRAYSCALE) < self.policy.grayscale_p, gray, x)
        view_policy = self.policy.for_view(view)  # asymmetric policies blur / solarize each view differently
        if view_policy.blur_p >= 1:
            x = self._blur(x, rand)
        elif view_policy.blur_p > 0:
            x = _choose(rand(RandomStream.BLUR_APPLY) < view_policy.blur_p, self._blur(x, rand), x)
        if view_policy.solarize_p:
            solarize = (rand(RandomStream.SOLARIZE) < view_policy.solarize_p).view(-1, 1, 1, 1) & (x >= 0.5)
            x = torch.where(solarize, 1 - x, x)
        # in place (``x`` is this call's own tensor by now: the crop made it), then the step's layout: elementwise
        # operations broadcasting over channels are 2.5x slower on a channels_last tensor
        return x.sub_(const.mean).div_(const.std).contiguous(memory_format=torch.channels_last)

    def _crop(self, x: torch.Tensor, rand) -> torch.Tensor:
        """RandomResizedCrop: area fraction ~ U(scale), log aspect ~ U(log ratio), clamped to the image; then the
        horizontal flip, drawn per sample.

        One ``grid_sample`` over a sampling grid made by broadcasting: the crop box is an axis-aligned scale and
        shift, so each grid coordinate is ``scale * base + shift`` (the values ``F.affine_grid`` computes with a
        batched matrix product, 10x slower here), and a flipped sample reads its grid's columns in reverse order
        (the same pixels as flipping the output: each output pixel depends on its grid point only)."""
        h, w = x.shape[-2:]
        lo, hi = self.policy.crop_scale
        area = h * w * (lo + (hi - lo) * rand(RandomStream.CROP_AREA))
        log_lo, log_hi = (math.log(r) for r in self.policy.crop_ratio)
        ratio = torch.exp(log_lo + (log_hi - log_lo) * rand(RandomStream.CROP_RATIO))
        cw = torch.sqrt(area * ratio).clamp(max=w)
        ch = torch.sqrt(area / ratio).clamp(max=h)
        x0, y0 = rand(RandomStream.CROP_X) * (w - cw), rand(RandomStream.CROP_Y) * (h - ch)
        base = _grid_base(self.size, x.device)  # S: pixel centres of the output in [-1, 1]
        flip = (rand(RandomStream.FLIP) < 0.5).view(-1, 1)  # N x 1
        across = torch.where(flip, base.flip(0), base)  # N x S
        gx = (cw / w).view(-1, 1) * across + ((2 * x0 + cw) / w - 1).view(-1, 1)  # N x S: input x per column
        gy = (ch / h).view(-1, 1) * base + ((2 * y0 + ch) / h - 1).view(-1, 1)  # N x S: input y per row
        grid = torch.stack(
            (gx.unsqueeze(1).expand(-1, self.size, -1), gy.unsqueeze(2).expand(-1, -1, self.size)), -1
        )
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: torch.Tensor, rand, const: _Constants) -> torch.Tensor:
        """ColorJitter with probability p: brightness, contrast, saturation (blends, as torchvision), hue."""
        b, c, s, h = self.policy.jitter
        apply = (rand(RandomStream.JITTER_APPLY) < self.policy.jitter_p).float()  # N
        factor = lambda strength, stream: (1 + apply * strength * (2 * rand(stream) - 1)).view(-1, 1, 1, 1)  # noqa: E731
        x = (x * factor(b, RandomStream.BRIGHTNESS)).clamp_(0, 1)
        gray = _gray(x, const.luma) if self.channels == 3 else x
        # each sample's mean gray written out at full size: a broadcast first operand takes lerp's slow path
        mean = gray.mean(dim=(1, 2, 3), keepdim=True).expand_as(x).contiguous()  # N x C x H x W
        x = torch.lerp(mean, x, factor(c, RandomStream.CONTRAST)).clamp_(0, 1)
        if self.channels == 3:
            x = torch.lerp(_gray(x, const.luma), x, factor(s, RandomStream.SATURATION)).clamp_(0, 1)
            x = _hue(x, apply * h * (2 * rand(RandomStream.HUE) - 1), const)
        return x

    def _blur(self, x: torch.Tensor, rand) -> torch.Tensor:
        """Gaussian blur of every sample, sigma drawn per sample: one separable grouped convolution (reflect
        padding); the caller keeps it where drawn (a blend: no host-side count of the selected samples)."""
        n, c = x.shape[:2]
        lo, hi = self.policy.blur_sigma
        sigma = lo + (hi - lo) * rand(RandomStream.BLUR_SIGMA)  # N
        half = self.kernel // 2
        t = torch.arange(-half, half + 1, dtype=torch.float32, device=x.device)
        kernel = torch.exp(-(t**2) / (2 * sigma.view(-1, 1) ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # N*C x K
        # padded once on all sides: the rows added above and below are reflections of image rows, and blurring a
        # reflected row along itself gives the reflection of the blurred row (the same bits as padding in between)
        padded = F.pad(x.reshape(1, n * c, *x.shape[2:]), (half,) * 4, mode="reflect")  # 1 x NC x S+2h x S+2h
        rows = F.conv2d(padded, kernel.view(n * c, 1, 1, -1), groups=n * c)  # 1 x N*C x S+2h x S
        return F.conv2d(rows, kernel.view(n * c, 1, -1, 1), groups=n * c).view_as(x)  # along columns


def unit_batch(images: torch.Tensor, channels: int) -> torch.Tensor:
    """A uint8 batch (N x C x H x W) as floats in [0, 1], checked: the input of :meth:`BatchAugment.augment_unit`."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != channels:
        raise ValueError(
            f"BatchAugment expects uint8 N x {channels} x H x W, got {images.dtype} {tuple(images.shape)}"
        )
    return images.float().div_(255)


def _check_blur_fits(policy: AugmentPolicy, kernel: int, size: int) -> None:
    """Refuse, when the augmenter is made, views too small for the policy's blur: its reflect padding needs more
    pixels than the kernel's half (``F.pad``), and every sample is blurred (the choice is a blend), so the first batch
    would fail with PyTorch's own message otherwise."""
    if size <= kernel // 2 and any(policy.for_view(v).blur_p > 0 for v in range(VIEWS_PER_SAMPLE)):
        raise ValueError(
            f"the {policy.name!r} augmentation policy blurs with a {kernel} px kernel, which needs views of at least "
            f"{kernel // 2 + 1} px, got {size} px: use a larger --image-size / --local-size, or another --augment"
        )


def _grid_base(size: int, device: torch.device) -> torch.Tensor:
    """The output's pixel centres in [-1, 1] (size S), computed as ``F.affine_grid`` does (align_corners=False)."""
    return torch.linspace(-1, 1, size, device=device) * (size - 1) / size


def _choose(chosen: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` for the samples where ``chosen`` (N bools), else ``old``: ``torch.where`` with a per-sample condition
    as a blend by 0 or 1, the same values for finite images (x + 0 * d = x; y - d * 0 = y) in a third of the time
    (a broadcast boolean condition takes the elementwise kernels' slow path here)."""
    return torch.lerp(old, new, chosen.to(old.dtype).view(-1, *[1] * (old.ndim - 1)))


def _gray(x: torch.Tensor, luma: torch.Tensor) -> torch.Tensor:  # N x 3 x H x W → N x 1 x H x W
    """The luma-weighted sum of the channels: three multiply-adds (an einsum was a batched matmul per call, 6x
    slower here; the same bits on the CPU: tests/zoo/test_sync_free.py)."""
    return x[:, 0:1] * luma[0] + x[:, 1:2] * luma[1] + x[:, 2:3] * luma[2]


def _hue(x: torch.Tensor, shift: torch.Tensor, const: _Constants) -> torch.Tensor:
    """Hue shift (fraction of a turn, per sample) as a rotation of the YIQ chroma plane."""
    angle = 2 * math.pi * shift  # N
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(x), 3, 3, device=x.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = const.yiq_to_rgb @ rotation @ const.rgb_to_yiq  # N x 3 x 3
    return torch.bmm(matrix, x.reshape(len(x), 3, -1)).view_as(x).clamp_(0, 1)  # N x 3 x 3 @ N x 3 x HW
