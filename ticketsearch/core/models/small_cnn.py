"""A small conv net for 8x8 to 28x28 images (sklearn digits, MNIST), for tests and quick searches.

conv(32w)-BN-ReLU, conv(64w)-BN-ReLU, 2x2 max-pool, conv(128w)-BN-ReLU, global average pooling, one
linear layer: ~93k parameters at width 1. On sklearn's 8x8 digits it reaches >90% test accuracy
within a few epochs on a laptop CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketsearch.core.models import MODELS
from ticketsearch.core.models.layers import conv3x3, init_weights, reject_depth, scale_channels


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    def __init__(self, width: float, num_classes: int, in_channels: int):
        super().__init__()
        c1, c2, c3 = (scale_channels(c, width) for c in (32, 64, 128))
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, c1),
            *_conv_bn_relu(c1, c2),
            # ceil_mode: an odd or 1x1 map still gives at least 1x1 (7 -> 4, 1 -> 1).
            nn.MaxPool2d(2, stride=2, ceil_mode=True),
            *_conv_bn_relu(c2, c3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c3, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.features(x))
        return self.classifier(torch.flatten(out, 1))


@MODELS.register("small_cnn")
def small_cnn(*, width: float, num_classes: int, in_channels: int, depth: int | None) -> nn.Module:
    reject_depth("small_cnn", depth)
    return SmallCNN(width, num_classes, in_channels)
