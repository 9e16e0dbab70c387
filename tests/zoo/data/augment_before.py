"""The batched augmentation as it was before it became free of host synchronisation (commit 5731bf4), frozen.

The second computation :mod:`tests.zoo.test_sync_free` compares today's :class:`zoo.data.batch_augment.BatchAugment`
with: the sync-free rewrite (constants on the device, the hue matrix's inverse made once, the blur applied to all
samples and chosen with ``torch.where``) must give bit-identical views on the CPU, so that the embedded default
run's weights do not change. Only the class name and this docstring differ from that commit's code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from zoo.data.augment_policies import AugmentPolicy, blur_kernel, get_policy
from zoo.data.batch_augment import VIEWS_PER_SAMPLE, RandomStream, hash_uniform

_LUMA = torch.tensor([0.299, 0.587, 0.114])
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


class BatchAugmentBefore:
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
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(
        self, images: torch.Tensor, sample_ids: torch.Tensor, epoch: int = 0, view: int = 0
    ) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(
                f"BatchAugment expects uint8 N x {self.channels} x H x W, got {images.dtype} {tuple(images.shape)}"
            )
        if not 0 <= view < VIEWS_PER_SAMPLE:
            raise ValueError(f"view must be in 0..{VIEWS_PER_SAMPLE - 1}, got {view}")
        keys = (
            (self.seed * 1_000_003 + epoch) * 1_000_003 + sample_ids.long()
        ) * VIEWS_PER_SAMPLE + view  # N
        rand = lambda stream: hash_uniform(keys, stream)  # noqa: E731
        x = self._crop(images.float().div_(255), rand)  # N x C x S x S in [0, 1]
        x = torch.where((rand(RandomStream.FLIP) < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
        if self.policy.jitter_p:
            x = self._jitter(x, rand)
        if self.channels == 3 and self.policy.grayscale_p:
            gray = self._gray(x).expand_as(x)
            x = torch.where(
                (rand(RandomStream.GRAYSCALE) < self.policy.grayscale_p).view(-1, 1, 1, 1), gray, x
            )
        view_policy = self.policy.for_view(view)  # asymmetric policies blur / solarize each view differently
        x = self._blur(x, rand, view_policy.blur_p)
        if view_policy.solarize_p:
            solarize = (rand(RandomStream.SOLARIZE) < view_policy.solarize_p).view(-1, 1, 1, 1) & (x >= 0.5)
            x = torch.where(solarize, 1 - x, x)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x.contiguous(memory_format=torch.channels_last)

    def _crop(self, x: torch.Tensor, rand) -> torch.Tensor:
        """RandomResizedCrop: area fraction ~ U(scale), log aspect ~ U(log ratio), clamped to the image."""
        n, _, h, w = x.shape
        lo, hi = self.policy.crop_scale
        area = h * w * (lo + (hi - lo) * rand(RandomStream.CROP_AREA))
        log_lo, log_hi = (math.log(r) for r in self.policy.crop_ratio)
        ratio = torch.exp(log_lo + (log_hi - log_lo) * rand(RandomStream.CROP_RATIO))
        cw = torch.sqrt(area * ratio).clamp(max=w)
        ch = torch.sqrt(area / ratio).clamp(max=h)
        x0, y0 = rand(RandomStream.CROP_X) * (w - cw), rand(RandomStream.CROP_Y) * (h - ch)
        theta = torch.zeros(n, 2, 3, device=x.device)  # output [-1, 1]² → the crop box in input coordinates
        theta[:, 0, 0], theta[:, 0, 2] = cw / w, (2 * x0 + cw) / w - 1
        theta[:, 1, 1], theta[:, 1, 2] = ch / h, (2 * y0 + ch) / h - 1
        grid = F.affine_grid(theta, [n, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    @staticmethod
    def _gray(x: torch.Tensor) -> torch.Tensor:  # N x 3 x H x W → N x 1 x H x W
        return torch.einsum("nchw,c->nhw", x, _LUMA.to(x.device)).unsqueeze(1)

    def _jitter(self, x: torch.Tensor, rand) -> torch.Tensor:
        """ColorJitter with probability p: brightness, contrast, saturation (blends, as torchvision), hue."""
        b, c, s, h = self.policy.jitter
        apply = (rand(RandomStream.JITTER_APPLY) < self.policy.jitter_p).float()  # N
        factor = lambda strength, stream: (1 + apply * strength * (2 * rand(stream) - 1)).view(-1, 1, 1, 1)  # noqa: E731
        x = (x * factor(b, RandomStream.BRIGHTNESS)).clamp_(0, 1)
        gray = self._gray(x) if self.channels == 3 else x
        x = torch.lerp(gray.mean(dim=(1, 2, 3), keepdim=True), x, factor(c, RandomStream.CONTRAST)).clamp_(
            0, 1
        )
        if self.channels == 3:
            x = torch.lerp(self._gray(x), x, factor(s, RandomStream.SATURATION)).clamp_(0, 1)
            x = self._hue(x, apply * h * (2 * rand(RandomStream.HUE) - 1))
        return x

    @staticmethod
    def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """Hue shift (fraction of a turn, per sample) as a rotation of the YIQ chroma plane."""
        angle = 2 * math.pi * shift  # N
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.zeros(len(x), 3, 3, device=x.device)
        rotation[:, 0, 0] = 1
        rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
        yiq = _RGB_TO_YIQ.to(x.device)
        matrix = torch.linalg.inv(yiq) @ rotation @ yiq  # N x 3 x 3
        return torch.einsum("nij,njhw->nihw", matrix, x).clamp_(0, 1)

    def _blur(self, x: torch.Tensor, rand, probability: float) -> torch.Tensor:
        """Gaussian blur of the selected samples: one separable grouped convolution, reflect padding."""
        selected = torch.nonzero(rand(RandomStream.BLUR_APPLY) < probability).flatten()

        if len(selected) == 0:
            return x
        lo, hi = self.policy.blur_sigma
        sigma = lo + (hi - lo) * rand(RandomStream.BLUR_SIGMA)[selected]  # M
        half = self.kernel // 2
        t = torch.arange(-half, half + 1, dtype=torch.float32, device=x.device)
        kernel = torch.exp(-(t**2) / (2 * sigma.view(-1, 1) ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(x.shape[1], dim=0)  # M*C x K
        part = x[selected].reshape(1, -1, *x.shape[2:])  # 1 x M*C x S x S
        groups = part.shape[1]
        part = F.conv2d(
            F.pad(part, (half, half, 0, 0), mode="reflect"), kernel.view(groups, 1, 1, -1), groups=groups
        )
        part = F.conv2d(
            F.pad(part, (0, 0, half, half), mode="reflect"), kernel.view(groups, 1, -1, 1), groups=groups
        )
        out = x.clone()
        out[selected] = part.view(len(selected), *x.shape[1:])
        return out
