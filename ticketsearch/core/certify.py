"""Certified robustness: provable lower bounds on logit margins over an L-inf ball, in plain torch.

For an image x with label y the input set is the box [clip(x - eps), clip(x + eps)] (clipped to the
valid pixel range [0, 1]); a bound method returns, for every other class j, a number no larger than
min over the box of logit_y - logit_j. An example is *certified* when every such bound is positive.

Methods (`METHODS`):
- "ibp": interval bound propagation (Gowal et al. 2018, "On the Effectiveness of Interval Bound
  Propagation for Training Verifiably Robust Models"). One forward pass of a lower and an upper
  tensor; the last linear layer is merged with the margin matrix ("elision"), as in that paper.
  Supports every registered model: conv, linear, batch norm, ReLU, max and average pooling, flatten,
  and residual blocks (`IBP_RULES`, keyed by module type).
- "crown": CROWN (Zhang et al. 2018, "Efficient Neural Network Robustness Certification with General
  Activation Functions"): the margin is propagated backwards as a linear function of the input through
  a linear relaxation of every ReLU (and max-pool), then minimised over the box in closed form. The
  pre-activation bounds each relaxation needs come from CROWN itself, layer by layer (intersected
  with IBP's), which is tight but costs a backward pass per layer with one row per neuron. The
  margin bound is the larger of CROWN's and IBP's, so it never certifies fewer examples than IBP.
- "crown-ibp": the same backward pass for the margin with IBP's pre-activation bounds (Zhang et al.
  2020, "Towards Stable and Efficient Training of Verifiably Robust Neural Networks"): about the cost
  of one CROWN pass, tighter than IBP on most networks but not always.
CROWN covers feed-forward networks (`SEQUENTIAL_RULES` lay a model out as a list of layers); a
residual block is refused with a one-line `UserError` that names it and points to IBP.

Batch norm is bounded with its running statistics, i.e. the network as it computes in eval mode.
Pruned weights are zero in the modules themselves (masks are applied in place), so bounds see them.
Every function works batched on whatever device the model and images are on.

Certified training (`certified_training_loss`, `schedule`): the IBP loss of Gowal et al. (clean and
worst-case cross-entropy mixed by kappa, eps ramped up) and CROWN-IBP's (the worst case from a beta
mix of CROWN-IBP and IBP bounds).
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

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

METHODS = ("ibp", "crown-ibp", "crown")

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


def channel_affine(layer: nn.Module, ndim: int) -> tuple[Tensor, Tensor]:
    """(scale, shift) per channel of a batch norm (running statistics) or `Normalize`, shaped to
    broadcast over an activation with `ndim` dimensions."""
    if isinstance(layer, Normalize):
        scale, shift = 1 / layer.std.flatten(), -layer.mean.flatten() / layer.std.flatten()
    else:
        if layer.running_mean is None:
            raise UserError(f"certify: a {type(layer).__name__} keeps no running statistics; bounds need them")
        scale = torch.rsqrt(layer.running_var + layer.eps)
        if layer.weight is not None:
            scale = scale * layer.weight
        shift = -layer.running_mean * scale
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


# ----------------------------------------------------------------------------------------- CROWN

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


def _forward_boxes(layers: Layers, box: Box, crown_intermediate: bool) -> list[Box]:
    """Bounds of the input of every layer and of the output (IBP; with `crown_intermediate`, CROWN
    where a nonlinearity follows, intersected with IBP)."""
    boxes, mixing = [box], 0
    for i, (path, layer) in enumerate(layers):
        out = interval_bounds(layer, boxes[-1], path)
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


# ----------------------------------------------------------------------------------------- margins


def margin_matrix(labels: Tensor, num_classes: int) -> Tensor:
    """C of shape (N, K-1, K) with rows e_y - e_j for every j != y: C logits = the margins."""
    eye = torch.eye(num_classes, device=labels.device)
    rows = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # (N, K, K); row y is zero
    keep = torch.arange(num_classes, device=labels.device).unsqueeze(0) != labels.unsqueeze(1)
    return rows[keep].view(len(labels), num_classes - 1, num_classes)


def input_box(images: Tensor, eps: float) -> Box:
    """The L-inf ball of radius eps around images in [0, 1], clipped to [0, 1]."""
    return (images - eps).clamp(0, 1), (images + eps).clamp(0, 1)


def _check_input(model: nn.Module, images: Tensor) -> None:
    if isinstance(model, ImageClassifier):
        resized = model.input_size is not None and tuple(images.shape[-2:]) != (model.input_size,) * 2
        if images.shape[1] != model.in_channels or resized:
            raise UserError(
                f"certify: the model adapts {tuple(images.shape[1:])} images to its own input (grey to RGB "
                f"or model.input_size); bounds need images of the model's own shape"
            )


def _ibp_margins(layers: Layers, box: Box, labels: Tensor) -> Tensor:
    *body, (path, last) = layers
    for name, layer in body:
        box = interval_bounds(layer, box, name)
    if isinstance(last, nn.Linear):
        # Elision (Gowal et al. 2018): bound C W h + C b from the bounds of h, the last layer's input,
        # rather than C times the logits' interval, which loses the correlation between logits.
        spec = margin_matrix(labels, last.out_features).to(box[0].dtype)
        weight = spec @ last.weight  # (N, K-1, features)
        centre, radius = ((box[1] + box[0]) / 2).unsqueeze(-1), ((box[1] - box[0]) / 2).unsqueeze(-1)
        bias = spec @ last.bias if last.bias is not None else 0
        return (weight @ centre).squeeze(-1) - (weight.abs() @ radius).squeeze(-1) + bias
    lo, hi = interval_bounds(last, box, path)
    spec = margin_matrix(labels, lo.shape[1]).to(lo.dtype)
    return (spec.clamp(min=0) @ lo.unsqueeze(-1) + spec.clamp(max=0) @ hi.unsqueeze(-1)).squeeze(-1)


def margin_lower_bounds(model: nn.Module, images: Tensor, labels: Tensor, eps: float, method: str = "ibp") -> Tensor:
    """Lower bounds, shape (N, K-1), of logit_y - logit_j over the clipped L-inf ball of radius eps
    (pixel units, images in [0, 1]) around each image, for every class j != y in increasing order.

    Differentiable in the model's parameters (certified training back-propagates through it).
    """
    if method not in METHODS:
        raise UserError(f"certify.method: unknown method {method!r}; known: {', '.join(METHODS)}")
    _check_input(model, images)
    box = input_box(images, eps)
    if method == "ibp":
        return _ibp_margins(leaf_layers(model), box, labels)
    layers = _crown_layers(model)
    boxes = _forward_boxes(layers, box, crown_intermediate=method == "crown")
    spec = margin_matrix(labels, boxes[-1][0].shape[1]).to(images.dtype)
    bounds = _backward(layers, boxes, spec, box)
    if method == "crown":
        # Both bounds are sound, so the larger one is too; on IBP-trained networks the linear
        # relaxation alone is often looser than IBP (Zhang et al. 2020, section 3).
        bounds = torch.maximum(bounds, _ibp_margins(layers[-1:], boxes[-2], labels))
    return bounds


def check_supported(model: nn.Module, method: str) -> None:
    """Refuse a model `method` cannot bound, with the one-line error naming the layer; reads only the
    modules' types and settings, so it works on a model built on the meta device."""
    if method not in METHODS:
        raise UserError(f"certify.method: unknown method {method!r}; known: {', '.join(METHODS)}")
    if method == "ibp":
        leaf_layers(model)
    else:
        _crown_layers(model)


def certified_accuracy(
    model: nn.Module, images: Tensor, labels: Tensor, eps: float, method: str = "ibp", batch_size: int = 256
) -> float:
    """The share of examples classified correctly whose every margin lower bound is positive.

    Runs the model in eval mode (restoring its mode after), without gradients, `batch_size` examples
    at a time (CROWN holds a (batch, neurons, activation) matrix per layer: keep it small).
    """
    was_training = model.training
    model.eval()
    certified = 0
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x, y = images[start : start + batch_size], labels[start : start + batch_size]
                correct = model(x).argmax(1) == y
                bounds = margin_lower_bounds(model, x, y, eps, method)
                certified += int((correct & (bounds > 0).all(1)).sum())
    finally:
        model.train(was_training)
    return certified / max(1, len(images))


# ------------------------------------------------------------------------------ certified training


@dataclass(frozen=True)
class Mix:
    """What a certified-training step uses: eps (pixel units), kappa (weight of the clean loss) and
    beta (weight of CROWN-IBP's bound against IBP's)."""

    eps: float
    kappa: float
    beta: float


def ramp(step: int, start: int, length: int, begin: float, end: float) -> float:
    """`begin` until `start`, then linear to `end` over `length` steps, then `end`."""
    if length <= 0:
        return end if step >= start else begin
    t = min(max((step - start) / length, 0.0), 1.0)
    return begin + t * (end - begin)


def schedule(step: float, *, eps: float, warmup: float, ramp_steps: float, method: str = "ibp") -> Mix:
    """The schedules of the papers, by optimiser step (or any measure of progress: the trainers give
    the share of the round done, and `warmup` and `ramp_steps` as shares of the round).

    Both ramp eps linearly from 0 to `eps` over `ramp_steps` steps after `warmup` clean steps.
    - "ibp" (Gowal et al. 2018): kappa from 1 to 0.5 along the eps ramp; IBP bounds (beta 0).
    - "crown-ibp" (Zhang et al. 2020): kappa from 1 to 0 and beta from 1 to 0 along the ramp, so
      training starts on CROWN-IBP's tighter bounds and ends on IBP's.
    """
    if method not in ("ibp", "crown-ibp"):
        raise UserError(f"certified training method: unknown {method!r}; known: ibp, crown-ibp")
    current = ramp(step, warmup, ramp_steps, 0.0, eps)
    kappa_end = 0.5 if method == "ibp" else 0.0
    beta = 0.0 if method == "ibp" else ramp(step, warmup, ramp_steps, 1.0, 0.0)
    return Mix(eps=current, kappa=ramp(step, warmup, ramp_steps, 1.0, kappa_end), beta=beta)


def certified_training_loss(model: nn.Module, images: Tensor, labels: Tensor, mix: Mix) -> Tensor:
    """kappa * CE(clean logits) + (1 - kappa) * CE(worst-case logits) (Gowal et al. 2018, eq. 12)."""
    return certified_training_terms(model, images, labels, mix)[0]


def certified_training_terms(model: nn.Module, images: Tensor, labels: Tensor, mix: Mix) -> tuple[Tensor, Tensor]:
    """(loss, worst-case logits) of one certified-training batch; the loss as `certified_training_loss`.

    The worst-case logits, in class order, are -(margin lower bound) for every other class and 0 for
    the true one (their cross-entropy bounds the cross-entropy of every input in the ball from above);
    their argmax is the label exactly when the example is certified at mix.eps, so their accuracy is
    the batch's certified accuracy. Without a bound term (kappa 1 or eps 0) they are the clean logits.
    The bounds are beta * CROWN-IBP + (1 - beta) * IBP (Zhang et al. 2020); beta = 0 computes no CROWN
    pass. The clean pass runs in the model's current mode; the bounds use batch norm's running statistics.
    """
    logits = model(images)
    if mix.kappa >= 1 or mix.eps <= 0:
        return F.cross_entropy(logits, labels), logits
    bounds = margin_lower_bounds(model, images, labels, mix.eps, "ibp")
    if mix.beta > 0:
        crown = margin_lower_bounds(model, images, labels, mix.eps, "crown-ibp")
        bounds = mix.beta * crown + (1 - mix.beta) * bounds
    others = F.one_hot(labels, logits.shape[1]) == 0  # row-major: the other classes in increasing order
    worst = bounds.new_zeros(logits.shape).masked_scatter(others, -bounds)
    robust = F.cross_entropy(worst, labels)
    return mix.kappa * F.cross_entropy(logits, labels) + (1 - mix.kappa) * robust, worst
