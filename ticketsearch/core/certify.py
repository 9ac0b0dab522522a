"""Certified robustness: provable lower bounds on logit margins over an L-inf ball, in plain torch.

For an image x with label y the input set is the box [clip(x - eps), clip(x + eps)] (clipped to the
valid pixel range [0, 1]); a bound method returns, for every other class j, a number no larger than
min over the box of logit_y - logit_j. An example is *certified* when every such bound is positive.

Methods (`METHODS`):
- "ibp": interval bound propagation (core/interval_bounds.py; Gowal et al. 2018), the last linear
  layer merged with the margin matrix ("elision"), as in that paper. Every registered model.
- "crown": CROWN (core/linear_bounds.py; Zhang et al. 2018) with CROWN's own pre-activation bounds,
  tight but a backward pass per layer with one row per neuron. The margin bound is the larger of
  CROWN's and IBP's, so it never certifies fewer examples than IBP.
- "crown-ibp": the same backward pass for the margin with IBP's pre-activation bounds (Zhang et al.
  2020, "Towards Stable and Efficient Training of Verifiably Robust Neural Networks"): about the cost
  of one CROWN pass, tighter than IBP on most networks but not always. Feed-forward networks only.

Batch norm is bounded with its running statistics (the network as evaluated) unless certified
training (core/certified_training.py) supplies its clean batch's. Every function works batched on
whatever device the model and images are on.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ticketsearch.core.interval_bounds import Box, Layers, interval_bounds, leaf_layers
from ticketsearch.core.linear_bounds import (
    _backward,
    _crown_layers,
    _forward_boxes,
    _resampling_run,
    _through_run,
)
from ticketsearch.core.models import ImageClassifier
from ticketsearch.errors import UserError

METHODS = ("ibp", "crown-ibp", "crown")

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
    return _elided_margins(layers, _forward_boxes(layers[:-1], box, crown_intermediate=False), labels)


def _elided_margins(layers: Layers, boxes: list[Box], labels: Tensor) -> Tensor:
    """IBP's margin bounds from `boxes`, the bounds of the input of every layer (the output of the last
    need not be there)."""
    path, last = layers[-1]
    if isinstance(last, nn.Linear):
        # Elision (Gowal et al. 2018): bound C W h + C b from the bounds of h, the last layer's input
        # (or of the input of the resampling run before it, `_ibp_step`), rather than C times the
        # logits' interval, which loses the correlation between logits.
        start = _resampling_run(layers, len(layers) - 1)
        spec = margin_matrix(labels, last.out_features).to(boxes[0][0].dtype)
        weight, centre, radius = _through_run(layers, boxes, start, len(layers) - 1, spec @ last.weight)
        for _, layer in layers[start:]:  # the logits at the centre, through the layers themselves
            centre = layer(centre)
        spread = (weight.abs().flatten(2) @ radius.flatten(1).unsqueeze(-1)).squeeze(-1)
        return (spec @ centre.unsqueeze(-1)).squeeze(-1) - spread
    lo, hi = interval_bounds(last, boxes[len(layers) - 1], path)
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
        bounds = torch.maximum(bounds, _elided_margins(layers, boxes, labels))
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
