"""Interval bound propagation (IBP; Gowal et al. 2018, "On the Effectiveness of Interval Bound
Propagation for Training Verifiably Robust Models"): elementwise bounds on every activation for
inputs in a box, one forward pass of a lower and an upper tensor.

Every registered model is covered: conv, linear, batch norm, ReLU, max and average pooling, flatten,
and residual blocks (`IBP_RULES`, keyed by module type). `SEQUENTIAL_RULES` lay a model out as the
list of leaf layers it runs (`leaf_layers`), which CROWN (core/linear_bounds.py) walks backwards.

Batch norm is bounded with its running statistics, i.e. the network as it computes in eval mode, unless
a certified-training step supplies the statistics of its clean batch (`batch_norm_statistics`). Pruned weights are zero in the
modules themselves (masks are applied in place), so bounds see them.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ticketsearch.core.models import ImageClassifier, Normalize
from ticketsearch.core.models.certified_cnn import CertifiedCNN
from ticketsearch.core.models.layers import Projection
from ticketsearch.core.models.preact_resnet import PreActBlock, PreActResNet
from ticketsearch.core.models.resnet_cifar import BasicBlock, CifarResNet
from ticketsearch.core.models.small_cnn import SmallCNN
from ticketsearch.core.models.vgg import VGG
from ticketsearch.errors import UserError

Box = tuple[Tensor, Tensor]  # (lower, upper), elementwise, same shape as the activation
Layers = list[tuple[str, nn.Module]]  # (path in the model, module), in the order they run

# ------------------------------------------------------------------------------------ registries

# How to bound one module type by IBP: rule(module, box, path) -> box of its output.
IBP_RULES: dict[type, Callable[[nn.Module, Box, str], Box]] = {}
# How to lay a feed-forward module type out as the layers it runs, in order: rule(module, path).
SEQUENTIAL_RULES: dict[type, Callable[[nn.Module, str], Layers]] = {}


def _registrar(table: dict[type, Callable]) -> Callable:
    def register(*types: type) -> Callable:
        def add(rule: Callable) -> Callable:
            table.update(dict.fromkeys(types, rule))
            return rule

        return add

    return register


ibp_rule = _registrar(IBP_RULES)
sequential_rule = _registrar(SEQUENTIAL_RULES)


def _lookup(table: dict[type, Callable], module: nn.Module) -> Callable | None:
    if "torchvision.models.resnet" in sys.modules:
        _register_torchvision_resnets()  # cached: registers once
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None


def _child(module: nn.Module, path: str, name: str) -> tuple[str, nn.Module]:
    return (f"{path}.{name}" if path else name), getattr(module, name)


def _unsupported(path: str, module: nn.Module) -> UserError:
    return UserError(
        f"certify: no bound rule for layer {path or '<model>'} ({type(module).__name__}); "
        f"supported: conv, linear, batch norm, ReLU, max/average pooling, flatten, residual blocks"
    )


# ------------------------------------------------------------------------------------------- IBP


def interval_bounds(module: nn.Module, box: Box, path: str = "") -> Box:
    """IBP (Gowal et al. 2018): elementwise bounds on `module`'s output for inputs in `box`."""
    layers = _lookup(SEQUENTIAL_RULES, module)
    if layers is not None:
        for name, layer in layers(module, path):
            box = interval_bounds(layer, box, name)
        return box
    rule = _lookup(IBP_RULES, module)
    if rule is None:
        raise _unsupported(path, module)
    return rule(module, box, path)


def _affine_box(box: Box, linear: Callable[[Tensor], Tensor], abs_linear: Callable[[Tensor], Tensor]) -> Box:
    # Centre and radius: the centre goes through the layer, the radius through |W| (no bias).
    centre, radius = (box[1] + box[0]) / 2, (box[1] - box[0]) / 2
    centre, radius = linear(centre), abs_linear(radius)
    return centre - radius, centre + radius


@ibp_rule(nn.Linear)
def _ibp_linear(layer: nn.Linear, box: Box, path: str) -> Box:
    return _affine_box(box, layer, lambda r: F.linear(r, layer.weight.abs()))


@ibp_rule(nn.Conv2d)
def _ibp_conv(layer: nn.Conv2d, box: Box, path: str) -> Box:
    if layer.padding_mode != "zeros":
        raise UserError(f"certify: {path} pads with {layer.padding_mode!r}; bounds support zero padding only")
    return _affine_box(
        box,
        layer,
        lambda r: F.conv2d(r, layer.weight.abs(), None, layer.stride, layer.padding, layer.dilation, layer.groups),
    )


# The (mean, variance) per channel that each batch norm is bounded with instead of its running
# statistics: set by a certified-training step to those of its clean batch, so that the bounds follow
# the network as it trains (Gowal et al. 2018, CROWN-IBP and auto_LiRPA bound it in training mode).
# Bounding with running statistics while the clean pass uses the batch's made the robust loss's
# gradient ignore the batch's mean and variance: small_cnn and cnn_7layer fell to chance in 2 epochs.
_BATCH_STATISTICS: ContextVar[dict[nn.Module, tuple[Tensor, Tensor]] | None] = ContextVar("batch_stats", default=None)


@contextlib.contextmanager
def batch_norm_statistics(statistics: dict[nn.Module, tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Bound each batch norm in `statistics` with the (mean, biased variance) given there."""
    token = _BATCH_STATISTICS.set(statistics)
    try:
        yield
    finally:
        _BATCH_STATISTICS.reset(token)


def channel_affine(layer: nn.Module, ndim: int) -> tuple[Tensor, Tensor]:
    """(scale, shift) per channel of a batch norm or `Normalize`, shaped to broadcast over an activation
    with `ndim` dimensions. Batch norm uses its running statistics, or the batch's where
    `batch_norm_statistics` supplies them."""
    if isinstance(layer, Normalize):
        scale, shift = 1 / layer.std.flatten(), -layer.mean.flatten() / layer.std.flatten()
    else:
        batch = (_BATCH_STATISTICS.get() or {}).get(layer)
        if batch is None and layer.running_mean is None:
            raise UserError(f"certify: a {type(layer).__name__} keeps no running statistics; bounds need them")
        mean, var = batch if batch is not None else (layer.running_mean, layer.running_var)
        scale = torch.rsqrt(var + layer.eps)
        if layer.weight is not None:
            scale = scale * layer.weight
        shift = -mean * scale
        if layer.bias is not None:
            shift = shift + layer.bias
    shape = (1, -1) + (1,) * (ndim - 2)
    return scale.view(shape), shift.view(shape)


@ibp_rule(nn.BatchNorm1d, nn.BatchNorm2d, Normalize)
def _ibp_channel_affine(layer: nn.Module, box: Box, path: str) -> Box:
    scale, shift = channel_affine(layer, box[0].dim())
    return _affine_box(box, lambda c: c * scale + shift, lambda r: r * scale.abs())


# Monotone non-decreasing in every input: the bounds are the layer applied to each bound.
@ibp_rule(nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Identity)
def _ibp_monotone(layer: nn.Module, box: Box, path: str) -> Box:
    return layer(box[0]), layer(box[1])


@ibp_rule(Projection)
def _ibp_projection(layer: Projection, box: Box, path: str) -> Box:
    s = layer.stride
    box = (box[0][:, :, ::s, ::s], box[1][:, :, ::s, ::s])
    return interval_bounds(layer.conv, box, f"{path}.conv")


def _add(a: Box, b: Box) -> Box:
    return a[0] + b[0], a[1] + b[1]


def _relu(box: Box) -> Box:
    # Not the module: the models' nn.ReLU(inplace=True) would overwrite the pre-activation bounds,
    # which CROWN reads after the forward pass.
    return box[0].clamp(min=0), box[1].clamp(min=0)


@ibp_rule(nn.ReLU)
def _ibp_relu(layer: nn.ReLU, box: Box, path: str) -> Box:
    return _relu(box)


def _chain(module: nn.Module, box: Box, path: str, *names: str) -> Box:
    for name in names:
        child_path, child = _child(module, path, name)
        box = interval_bounds(child, box, child_path)
    return box


@ibp_rule(BasicBlock)
def _ibp_basic_block(block: BasicBlock, box: Box, path: str) -> Box:
    out = _chain(block, _relu(_chain(block, box, path, "conv1", "bn1")), path, "conv2", "bn2")
    return _relu(_add(out, _chain(block, box, path, "shortcut")))


@ibp_rule(PreActBlock)
def _ibp_preact_block(block: PreActBlock, box: Box, path: str) -> Box:
    pre = _relu(_chain(block, box, path, "bn1"))
    out = _chain(block, _relu(_chain(block, pre, path, "conv1", "bn2")), path, "conv2")
    shortcut = _chain(block, pre, path, "shortcut") if block.shortcut is not None else box
    return _add(out, shortcut)


def _torchvision_block(block: nn.Module, box: Box, path: str) -> Box:
    # torchvision's BasicBlock (two convs) and Bottleneck (three): conv-bn-relu ..., conv-bn, add, relu.
    convs = 3 if hasattr(block, "conv3") else 2
    out = box
    for i in range(1, convs + 1):
        out = _chain(block, out, path, f"conv{i}", f"bn{i}")
        if i < convs:
            out = _relu(out)
    shortcut = _chain(block, box, path, "downsample") if block.downsample is not None else box
    return _relu(_add(out, shortcut))


@functools.cache
def _register_torchvision_resnets() -> None:
    """torchvision's ResNet blocks, registered once torchvision is loaded (which only ImageNet models
    do: importing it costs seconds)."""
    from torchvision.models.resnet import BasicBlock as TVBasic, Bottleneck

    from ticketsearch.core.models.torchvision_resnet import _imagenet_resnet

    IBP_RULES[TVBasic] = IBP_RULES[Bottleneck] = _torchvision_block

    @sequential_rule(_imagenet_resnet()[0])
    def _imagenet_resnet_layers(net: nn.Module, path: str) -> Layers:
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
        return [_child(net, path, n) for n in names] + _flatten_then(net, path, "classifier")


# ----------------------------------------------------------------------- models laid out as layers


def _flatten_then(module: nn.Module, path: str, name: str) -> Layers:
    return [(f"{path}.flatten", nn.Flatten()), _child(module, path, name)]


@sequential_rule(nn.Sequential)
def _sequential_layers(seq: nn.Sequential, path: str) -> Layers:
    return [_child(seq, path, name) for name, _ in seq.named_children()]


@sequential_rule(ImageClassifier)
def _classifier_layers(model: ImageClassifier, path: str) -> Layers:
    # The grey-to-RGB repetition and resizing of `ImageClassifier.forward` are not bounded: they are
    # refused by `_check_input` before any bound is computed.
    return [_child(model, path, "normalize"), _child(model, path, "body")]


@sequential_rule(SmallCNN, VGG)
def _pooled_cnn_layers(net: nn.Module, path: str) -> Layers:
    return [_child(net, path, "features"), _child(net, path, "pool")] + _flatten_then(net, path, "classifier")


@sequential_rule(CertifiedCNN)
def _certified_cnn_layers(net: CertifiedCNN, path: str) -> Layers:
    return [_child(net, path, "features"), _child(net, path, "classifier")]


@sequential_rule(CifarResNet)
def _cifar_resnet_layers(net: CifarResNet, path: str) -> Layers:
    stem = [_child(net, path, "conv1"), _child(net, path, "bn1"), (f"{path}.relu", nn.ReLU())]
    return stem + [_child(net, path, "layers"), _child(net, path, "pool")] + _flatten_then(net, path, "classifier")


@sequential_rule(PreActResNet)
def _preact_resnet_layers(net: PreActResNet, path: str) -> Layers:
    head = [_child(net, path, "bn"), (f"{path}.relu", nn.ReLU()), _child(net, path, "pool")]
    return [_child(net, path, "conv1"), _child(net, path, "layers")] + head + _flatten_then(net, path, "classifier")


def leaf_layers(module: nn.Module, path: str = "") -> Layers:
    """`module` as the flat list of the leaf layers it runs, expanding every `SEQUENTIAL_RULES` entry;
    a module with neither a sequential rule nor an IBP rule of its own is refused."""
    rule = _lookup(SEQUENTIAL_RULES, module)
    if rule is None:
        if _lookup(IBP_RULES, module) is None:
            raise _unsupported(path, module)
        return [(path, module)]
    return [leaf for name, child in rule(module, path) for leaf in leaf_layers(child, name)]
