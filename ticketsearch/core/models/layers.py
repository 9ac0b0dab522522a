"""Building blocks shared by every architecture: input normalisation, width scaling, init."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ticketsearch.errors import UserError


class Normalize(nn.Module):
    """`(x - mean) / std` per channel, so the model takes images in [0, 1].

    Keeping normalisation inside the model lets adversarial attacks work in pixel space
    (eps = 8/255 means 8 grey levels) without knowing the data set's statistics. mean and std are
    persistent buffers shaped (1, C, 1, 1): they travel with state dicts and `.to(device)`, and
    broadcasting works for both contiguous and channels_last inputs.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _round_half_up(value: float) -> int:
    # Python's round() rounds halves to even (round(0.5) == 0); widths should round predictably.
    return math.floor(value + 0.5)


def scale_channels(channels: int, width: float) -> int:
    """The channel count of a `channels`-wide layer at width multiplier `width`.

    Above 8 channels the result is rounded to the nearest multiple of 8 (at least 8): multiples of 8
    fill vector units and tensor cores, and rounding lets a float width be searched continuously
    (as timm's `make_divisible`). At or below 8 it is rounded to the nearest integer, so tiny models
    for tests and 8x8 digits stay possible.

    >>> scale_channels(64, 0.3)   # 19.2 -> 16
    16
    """
    scaled = channels * width
    if scaled > 8:
        return max(8, 8 * _round_half_up(scaled / 8))
    result = _round_half_up(scaled)
    if result < 1:
        min_width = 0.5 / channels  # channels * width >= 0.5 rounds up to 1
        raise UserError(
            f"model.width: {width} gives no channels for a {channels}-channel layer; "
            f"use a width of at least {min_width:g}"
        )
    return result


def reject_depth(arch: str, depth: int | None) -> None:
    """Fixed-depth architectures call this: a depth they would ignore is a user mistake."""
    if depth is not None:
        raise UserError(f"model.depth: {arch} has a fixed depth; remove model.depth")


def init_weights(model: nn.Module) -> None:
    """He et al. 2015 init for convs (fan_out, relu), BN as identity, PyTorch's default for linear.

    Linear layers keep `nn.Linear.reset_parameters` (uniform, bound 1/sqrt(fan_in)), the usual
    choice in the CIFAR reference implementations.
    """
    if any(p.is_meta for p in model.parameters()):
        # A shape-only build (`check_config`): nothing to initialise, and normal_ on the meta device
        # imports torch._dynamo (2 s of the search driver's start, measured).
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            module.reset_parameters()


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a batch norm always follows or precedes it)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class Projection(nn.Module):
    """The 1x1 strided convolution (no bias) of a shortcut that changes shape.

    Computed as subsample-then-1x1-conv, the same function as `nn.Conv2d(in, out, 1, stride=s)`
    (a 1x1 kernel with stride s reads x[..., ::s, ::s]). Why not that conv: on CPU, torch 2.15's
    oneDNN (3.13) corrupts the heap (crash or hang) computing the weight gradient of a channels_last
    1x1 stride-2 conv with fewer than 8 input channels, which the resnets have below width 0.5.
    The weight is `self.conv.weight`, an ordinary nn.Conv2d.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return self.conv(x)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"
