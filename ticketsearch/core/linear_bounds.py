"""Linear bounds: CROWN (Zhang et al. 2018, "Efficient Neural Network Robustness Certification with
General Activation Functions") on a feed-forward network laid out as leaf layers.

A linear function of the output (the margins, or one neuron) is carried backwards through every
layer: exactly through affine layers, through a linear relaxation of every ReLU and max-pool, then
minimised over the input box in closed form. The relaxations need bounds on their inputs: IBP's
(`_forward_boxes`; CROWN-IBP, Zhang et al. 2020) or CROWN's own, layer by layer, intersected with IBP's.
A residual block is refused with a one-line `UserError` that names it and points to IBP.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ticketsearch.core.interval_bounds import Box, Layers, interval_bounds, leaf_layers, channel_affine
from ticketsearch.core.models import Normalize
from ticketsearch.errors import UserError

AFFINE = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, Normalize, nn.Flatten, nn.Identity,
          nn.AvgPool2d, nn.AdaptiveAvgPool2d)  # fmt: skip
# Affine layers that act on each element alone: IBP through a chain of them and one mixing layer
# (conv, linear, pooling) is exact, so CROWN's intermediate bounds are not computed there.
ELEMENTWISE = (nn.BatchNorm1d, nn.BatchNorm2d, Normalize, nn.Flatten, nn.Identity)
NONLINEAR = (nn.ReLU, nn.MaxPool2d)


def _crown_layers(model: nn.Module) -> Layers:
    layers = leaf_layers(model)
    for path, layer in layers:
        if isinstance(layer, AFFINE + NONLINEAR):
            if isinstance(layer, nn.MaxPool2d) and not _disjoint_windows(layer):
                raise UserError(
                    f"certify: CROWN bounds max-pools with disjoint windows (kernel = stride, dilation 1); "
                    f"{path} is not one; method='ibp' supports it"
                )
            continue
        raise UserError(
            f"certify: CROWN bounds feed-forward networks only; {path} ({type(layer).__name__}) is not "
            f"a layer it relaxes; method='ibp' supports it"
        )
    return layers


def _disjoint_windows(pool: nn.MaxPool2d) -> bool:
    pair = nn.modules.utils._pair
    return pair(pool.kernel_size) == pair(pool.stride) and pair(pool.dilation) == (1, 1)


def _backward_affine(layer: nn.Module, a: Tensor, in_shape: torch.Size) -> tuple[Tensor, Tensor]:
    """(A W, A b) for the affine layer y = W x + b, with `a` shaped (N, S, *y.shape[1:])."""
    n, s = a.shape[:2]
    if isinstance(layer, nn.Linear):
        bias = a @ layer.bias if layer.bias is not None else a.new_zeros(n, s)
        return a @ layer.weight, bias
    if isinstance(layer, nn.Conv2d):
        bias = a.sum((3, 4)) @ layer.bias if layer.bias is not None else a.new_zeros(n, s)
        # The transposed convolution maps (C_out, H', W') back onto (C_in, H, W); output_padding
        # restores the rows and columns a strided convolution drops.
        out_h, out_w = a.shape[-2:]
        extra = [
            in_shape[i + 2] - ((o - 1) * layer.stride[i] - 2 * layer.padding[i]
                               + layer.dilation[i] * (layer.kernel_size[i] - 1) + 1)
            for i, o in enumerate((out_h, out_w))
        ]  # fmt: skip
        x = F.conv_transpose2d(a.flatten(0, 1), layer.weight, None, layer.stride, layer.padding, extra,
                               layer.groups, layer.dilation)  # fmt: skip
        return x.view(n, s, *in_shape[1:]), bias
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, Normalize)):
        scale, shift = channel_affine(layer, a.dim() - 1)
        return a * scale.unsqueeze(0), (a * shift.unsqueeze(0)).flatten(2).sum(-1)
    if isinstance(layer, (nn.Flatten, nn.Identity)):
        return a.reshape(n, s, *in_shape[1:]), a.new_zeros(n, s)
    # Average pooling: linear without bias; its transpose is its vector-Jacobian product.
    zeros = a.new_zeros(n * s, *in_shape[1:])
    _, vjp = torch.func.vjp(layer, zeros)
    return vjp(a.flatten(0, 1))[0].view(n, s, *in_shape[1:]), a.new_zeros(n, s)


def _backward_relu(a: Tensor, pre: Box) -> tuple[Tensor, Tensor]:
    """CROWN's relaxation of relu(z) for z in [l, u], for a lower bound of A relu(z).

    Upper line through (l, 0) and (u, u) where l < 0 < u; lower line z or 0, whichever is closer to the
    function on [l, u] (slope 1 if u > -l), the adaptive choice of Zhang et al. 2018.
    """
    lo, hi = pre
    active, unstable = lo >= 0, (lo < 0) & (hi > 0)
    up_slope = torch.where(unstable, hi / (hi - lo).clamp(min=1e-12), active.to(lo.dtype))
    up_shift = torch.where(unstable, -lo * up_slope, torch.zeros_like(lo))
    low_slope = torch.where(unstable, (hi > -lo).to(lo.dtype), active.to(lo.dtype))
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    bias = (neg * up_shift.unsqueeze(1)).flatten(2).sum(-1)
    return pos * low_slope.unsqueeze(1) + neg * up_slope.unsqueeze(1), bias


def _backward_maxpool(pool: nn.MaxPool2d, a: Tensor, pre: Box) -> tuple[Tensor, Tensor]:
    """A relaxation of a max over disjoint windows, for a lower bound of A maxpool(z).

    Below: the max is at least the window's element with the highest lower bound, j*. Above: it is
    exactly z[j*] when l[j*] is at least every other element's upper bound, else at most the window's
    highest upper bound (a constant).
    """
    lo, hi = pre
    n, s = a.shape[:2]
    low_max, index = F.max_pool2d(lo, pool.kernel_size, pool.stride, pool.padding, 1, pool.ceil_mode, True)
    flat_hi = hi.flatten(2).scatter(2, index.flatten(2), float("-inf")).view_as(hi)
    others = F.max_pool2d(flat_hi, pool.kernel_size, pool.stride, pool.padding, 1, pool.ceil_mode)
    exact = low_max >= others
    top = pool(hi)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    through = pos + neg * exact.unsqueeze(1)
    bias = (neg * (~exact * top).unsqueeze(1)).flatten(2).sum(-1)
    idx = index.unsqueeze(1).expand(n, s, *index.shape[1:]).flatten(3)
    out = a.new_zeros(n, s, lo.shape[1], lo.shape[2] * lo.shape[3])
    out = out.scatter_add(3, idx, through.flatten(3))
    return out.view(n, s, *lo.shape[1:]), bias


def _backward(layers: Layers, inputs: list[Box], a: Tensor, box: Box) -> Tensor:
    """Lower bounds of a x_k (x_k: the output of layers[k-1], k = len(layers)) over the input box.

    `inputs[i]` bounds the input of layers[i]; `a` is shaped (N, S, *x_k.shape[1:]).
    """
    bias = a.new_zeros(a.shape[:2])
    for (_, layer), pre in zip(reversed(layers), reversed(inputs[: len(layers)])):
        if isinstance(layer, nn.ReLU):
            a, b = _backward_relu(a, pre)
        elif isinstance(layer, nn.MaxPool2d):
            a, b = _backward_maxpool(layer, a, pre)
        else:
            a, b = _backward_affine(layer, a, pre[0].shape)
        bias = bias + b
    lo, hi = (t.unsqueeze(1) for t in box)
    return bias + (a.clamp(min=0) * lo + a.clamp(max=0) * hi).flatten(2).sum(-1)


# Rows bounded per backward pass, so that an (N, rows, *activation) matrix stays near 2^21 floats
# (8 MiB in fp32). Larger chunks were slower on a CPU, not faster: with 2^26 floats the process spent
# more time in the kernel (page faults of fresh allocations) than in arithmetic (small_cnn width 0.5,
# 64 digits: 20 s system against 15 s user time; 2^21: no system time, 24 s wall against 56 s).
_CHUNK_FLOATS = 1 << 21


def _crown_tighten(layers: Layers, inputs: list[Box], box: Box, neurons: Tensor) -> Box:
    """`inputs[-1]` (the bounds of the output of `layers`) with the flat indices `neurons` tightened
    by CROWN: one backward row per neuron and sign, in chunks of rows."""
    lower, upper = (b.flatten(1).clone() for b in inputs[-1])
    shape = inputs[-1][0].shape
    n = shape[0]
    widest = max(math.prod(b[0].shape[1:]) for b in inputs)
    chunk = max(1, _CHUNK_FLOATS // (2 * n * widest))  # two rows (both signs) per neuron
    for part in neurons.split(chunk):
        rows = lower.new_zeros(len(part), lower.shape[1])
        rows[torch.arange(len(part), device=part.device), part] = 1
        spec = torch.cat([rows, -rows]).view(1, -1, *shape[1:]).expand(n, -1, *shape[1:])
        bound = _backward(layers, inputs, spec, box)
        lower[:, part] = torch.maximum(lower[:, part], bound[:, : len(part)])
        upper[:, part] = torch.minimum(upper[:, part], -bound[:, len(part) :])
    return lower.view(shape), upper.view(shape)


# Linear maps without a bias that only resample (pooling, flatten). IBP through a pool and then the
# linear layer after it loses the correlation between the copies of one value that the pool spreads
# (AdaptiveAvgPool2d upsamples small images: cnn_7layer on 8x8 digits copies each value of its 4x4
# map 16 times into the hidden layer's input), so a linear layer after such a run is bounded as one
# affine map with the run: its weight carried back onto the run's input. Exact composition of affine
# maps: sound, and never looser than layer by layer.
RESAMPLING = (nn.Flatten, nn.Identity, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _resampling_run(layers: Layers, end: int) -> int:
    """The index where the run of resampling layers just before layers[end] starts (`end`: none)."""
    start = end
    while start > 0 and isinstance(layers[start - 1][1], RESAMPLING):
        start -= 1
    pools = any(not isinstance(layer, (nn.Flatten, nn.Identity)) for _, layer in layers[start:end])
    return start if pools else end


def _through_run(layers: Layers, boxes: list[Box], start: int, end: int, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(A carried back through layers[start:end] onto their input, the centre and the radius of that
    input's box); `a` is shaped (N or 1, S, *output of layers[end-1]) and `boxes[i]` bounds layers[i]'s input."""
    for (_, layer), pre in zip(reversed(layers[start:end]), reversed(boxes[start:end])):
        a, _ = _backward_affine(layer, a, pre[0].shape)
    lo, hi = boxes[start]
    return a, (hi + lo) / 2, (hi - lo) / 2


def _ibp_step(layers: Layers, boxes: list[Box], i: int) -> Box:
    """IBP's box of layers[i]'s output, from `boxes` (those of the inputs of layers[:i+1])."""
    path, layer = layers[i]
    start = _resampling_run(layers, i) if isinstance(layer, nn.Linear) else i
    if start == i:
        return interval_bounds(layer, boxes[i], path)
    weight, centre, radius = _through_run(layers, boxes, start, i, layer.weight.unsqueeze(0))
    for _, resample in layers[start : i + 1]:  # the centre through the layers themselves: affine, exact
        centre = resample(centre)
    spread = radius.flatten(1) @ weight[0].abs().flatten(1).T
    return centre - spread, centre + spread


def _forward_boxes(layers: Layers, box: Box, crown_intermediate: bool) -> list[Box]:
    """Bounds of the input of every layer and of the output (IBP; with `crown_intermediate`, CROWN
    where a nonlinearity follows, intersected with IBP)."""
    boxes, mixing = [box], 0
    for i, (path, layer) in enumerate(layers):
        out = _ibp_step(layers, boxes, i)
        mixing += not isinstance(layer, ELEMENTWISE)
        after = layers[i + 1][1] if i + 1 < len(layers) else None
        if crown_intermediate and isinstance(after, NONLINEAR) and isinstance(layer, AFFINE) and mixing > 1:
            if isinstance(after, nn.ReLU):
                # A ReLU's relaxation is exact where IBP already fixes its sign: tighten the rest
                # (those unstable for some example of the batch), most of a trained net's cost.
                neurons = ((out[0] < 0) & (out[1] > 0)).flatten(1).any(0).nonzero().squeeze(1)
            else:
                neurons = torch.arange(out[0][0].numel(), device=out[0].device)
            out = _crown_tighten(layers[: i + 1], boxes + [out], box, neurons)
        boxes.append(out)
    return boxes
