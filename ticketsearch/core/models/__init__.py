"""Image classifiers: a registry of architectures with a float width multiplier.

Every architecture is a builder `fn(*, width, num_classes, in_channels, depth) -> nn.Module` whose
body exposes its last linear layer as `classifier`. `create_model` wraps the body in an
`ImageClassifier` that normalises its input itself, so attacks and data pipelines work on [0, 1]
images.

>>> model = create_model("resnet20", width=0.5, num_classes=10, in_channels=3,
...                      mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketsearch.core.models.layers import Normalize, scale_channels
from ticketsearch.errors import UserError
from ticketsearch.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

# The architecture modules import MODELS from here to register themselves, so they are imported
# after it is defined.
from ticketsearch.core.models import (  # noqa: E402, F401
    certified_cnn,
    preact_resnet,
    resnet_cifar,
    small_cnn,
    torchvision_resnet,
    vgg,
    wide_resnet,
)

__all__ = [
    "MODELS",
    "ImageClassifier",
    "Normalize",
    "count_parameters",
    "create_model",
    "scale_channels",
]


class ImageClassifier(nn.Module):
    """`body(normalize(adapt(x)))`: takes images in [0, 1], returns logits of shape (N, num_classes).

    `adapt` lets a network take images of another shape than it was built for, as transfer needs:
    grey images are repeated over a multi-channel network's channels, and with `input_size` images
    are resized (bilinear) to that many pixels a side. Both are differentiable and happen inside the
    model, so an attack still perturbs the data's own pixels and eps keeps its meaning.
    """

    def __init__(self, normalize: Normalize, body: nn.Module, input_size: int | None = None):
        super().__init__()
        if not isinstance(getattr(body, "classifier", None), nn.Linear):
            raise TypeError(f"{type(body).__name__} has no nn.Linear attribute 'classifier'")
        self.normalize = normalize
        self.body = body
        self.input_size = input_size

    @property
    def in_channels(self) -> int:
        return self.normalize.mean.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_channels > 1:
            x = x.expand(-1, self.in_channels, -1, -1)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.body(self.normalize(x))

    @property
    def classifier(self) -> nn.Linear:
        return self.body.classifier

    def replace_classifier(self, num_classes: int) -> nn.Linear:
        """Put a freshly initialised linear layer with `num_classes` outputs in place (transfer)."""
        old = self.body.classifier
        new = nn.Linear(
            old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype
        )
        self.body.classifier = new
        return new


def create_model(
    arch: str,
    *,
    width: float,
    num_classes: int,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    depth: int | None = None,
    input_size: int | None = None,
) -> ImageClassifier:
    """Build architecture `arch` at width multiplier `width`, with normalisation inside."""
    build = MODELS.get(arch, field="model.arch")
    if not width > 0:  # also rejects NaN
        raise UserError(f"model.width: must be > 0, got {width}")
    if num_classes < 2:
        raise UserError(f"num_classes: a classifier needs at least 2 classes, got {num_classes}")
    if len(mean) != in_channels or len(std) != in_channels:
        raise UserError(
            f"mean/std: need one value per input channel ({in_channels}), "
            f"got {len(mean)} means and {len(std)} stds"
        )
    if any(not s > 0 for s in std):
        raise UserError(f"std: every value must be > 0, got {list(std)}")
    body = build(width=width, num_classes=num_classes, in_channels=in_channels, depth=depth)
    return ImageClassifier(Normalize(mean, std), body, input_size)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN statistics and normalisation are not counted)."""
    return sum(p.numel() for p in model.parameters())
