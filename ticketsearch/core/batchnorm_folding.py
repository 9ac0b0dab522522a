"""Attack passes with each batch norm folded into the convolution that feeds it.

An attack runs its passes in eval mode (torchattacks switches the model), where a batch norm is a
fixed affine map per channel: bn(conv(x)) = conv(x) * scale + shift, with
scale = gamma / sqrt(running_var + eps) and shift = beta - running_mean * scale. Folding that map into
the convolution's weight and bias computes the same function with one pass over the activations
fewer in the forward pass and one fewer in the input-gradient backward pass: a ResNet-20 PGD-10
training step ran 1.2-1.3x faster on CPU (BENCHMARKS.md).

What is folded: a `Conv2d` whose output goes only to an eval-mode `BatchNorm2d` that tracks running
statistics, as `torch.fx` sees the model's code (ResNets' conv-BN, PreAct blocks' conv1 -> bn2, VGG).
A model fx cannot trace is searched child by child. Training passes (batch statistics) are never
folded, and nothing the optimiser owns is written: the folded weights are new tensors, recomputed
from the current weights, masks and running statistics at the start of every attack call, so they
are never stale after an optimiser step.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Pair = tuple[nn.Conv2d, nn.BatchNorm2d]


def conv_bn_pairs(model: nn.Module) -> list[Pair]:
    """The (conv, batch norm) pairs of `model` that `folded` can fold, in the model's call order."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - fx fails in many ways (shape branches, iteration over proxies)
        # e.g. ImageClassifier branches on the input's shape: its body traces.
        return [pair for child in model.children() for pair in conv_bn_pairs(child)]
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        conv = modules.get(source.target) if isinstance(source, torch.fx.Node) and source.op == "call_module" else None
        if (
            isinstance(conv, nn.Conv2d)
            and len(source.users) == 1  # the conv's output feeds nothing but this batch norm
            and calls[source.target] == calls[node.target] == 1  # neither module is shared
            and conv.padding_mode == "zeros"
            and bn.track_running_stats  # without running statistics eval mode uses the batch's
            and not (conv._forward_hooks or conv._forward_pre_hooks or bn._forward_hooks or bn._forward_pre_hooks)
        ):
            pairs.append((conv, bn))
    return pairs


def _folded_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale = scale * bn.weight
        shift = shift * bn.weight + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    # The weight keeps the conv's memory format (channels-last under the fast path).
    layout = torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    weight = (conv.weight * scale.view(-1, 1, 1, 1)).contiguous(memory_format=layout)
    return weight, shift


@contextlib.contextmanager
def folded(pairs: list[Pair]) -> Iterator[None]:
    """Within the block, each pair's conv computes bn(conv(x)) with folded weights and the batch norm
    passes its input through, whenever the batch norm is in eval mode (train mode is untouched)."""
    with torch.no_grad():  # the attack wants input gradients only; the folded weights are constants
        weights = [_folded_weights(conv, bn) for conv, bn in pairs]
        device_type = pairs[0][0].weight.device.type if pairs else "cpu"
        if torch.is_autocast_enabled(device_type):
            # Cast once here: autocast caches its casts of parameters only, and would cast these
            # non-leaf weights again in every pass of the attack.
            dtype = torch.get_autocast_dtype(device_type)
            weights = [(weight.to(dtype), bias.to(dtype)) for weight, bias in weights]
    for (conv, bn), (weight, bias) in zip(pairs, weights):
        # Instance attributes shadow the class's forward for these modules only, and only here.
        conv.forward = _folded_conv_forward(conv, bn, weight, bias)
        bn.forward = _skip_in_eval(bn)
    try:
        yield
    finally:
        for conv, bn in pairs:
            del conv.forward, bn.forward


def _folded_conv_forward(conv: nn.Conv2d, bn: nn.BatchNorm2d, weight: Tensor, bias: Tensor):
    def forward(x: Tensor) -> Tensor:
        if bn.training:
            return nn.Conv2d.forward(conv, x)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    return forward


def _skip_in_eval(bn: nn.BatchNorm2d):
    def forward(x: Tensor) -> Tensor:
        return nn.BatchNorm2d.forward(bn, x) if bn.training else x

    return forward
