"""Batch augmentation on the batch's own device: random crop after zero padding, random flip.

The standard CIFAR augmentation (He et al., "Deep Residual Learning for Image Recognition", 2016,
section 4.2: pad 4 pixels, random 32x32 crop, random horizontal flip), done for a whole batch with a
few tensor operations instead of a per-image Python loop, as in KellerJordan/cifar10-airbench. All
randomness comes from one `torch.Generator`, so a run can be repeated and resumed exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def to_float(x: Tensor) -> Tensor:
    """uint8 images (0..255) to float32 in [0, 1], keeping the memory format (channels_last)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {x.dtype}")
    return x.to(torch.float32).div_(255)


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def augment_batch(
    x: Tensor, *, crop_padding: int, flip: bool, generator: torch.Generator | None
) -> Tensor:
    """Randomly crop (after zero padding by `crop_padding` pixels) and horizontally flip each image.

    x: N x C x H x W float images in [0, 1]. Returns a new tensor of the same shape, dtype, device
    and memory format. Each image gets its own offsets and coin; all are drawn at once from
    `generator`, which must live on x's device (None: torch's global generator, not reproducible).
    With crop_padding=0 and flip=False, x itself is returned.
    """
    n, _, h, w = x.shape
    fmt = _memory_format(x)
    if crop_padding == 0:
        if not flip:
            return x
        coin = torch.rand(n, generator=generator, device=x.device) < 0.5
        return torch.where(coin[:, None, None, None], x.flip(3), x).contiguous(memory_format=fmt)
    p = crop_padding
    padded = F.pad(x, (p, p, p, p))  # zeros
    # Offsets of each crop's top-left corner in the padded image, 0..2p (p: no shift).
    dy, dx = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # N x H x 1
    columns = torch.arange(w, device=x.device)
    if flip:
        # The flip is folded into the crop's column indices (column j reads w-1-j), so crop and flip
        # are one gather: no flipped copy of the batch and no select between two copies.
        coin = torch.rand(n, generator=generator, device=x.device) < 0.5
        columns = torch.where(coin[:, None], columns.flip(0), columns)  # N x W
    cols = (dx[:, None] + columns)[:, None, :]  # N x 1 x W
    image = torch.arange(n, device=x.device)[:, None, None]  # N x 1 x 1
    # Advanced indices separated by the channel slice come first: the result is N x H x W x C,
    # which permuted is an N x C x H x W view in channels_last layout.
    out = padded[image, :, rows, cols].permute(0, 3, 1, 2)
    return out.contiguous(memory_format=fmt)
