"""VGG-16 with batch norm (Simonyan & Zisserman 2015; BN per Ioffe & Szegedy 2015), CIFAR variant.

Thirteen 3x3 conv-BN-ReLU layers with five 2x2 max-pools, then global average pooling and one linear
layer (the CIFAR variant drops the three 4096-wide ImageNet classifier layers). 14.7M parameters at
width 1.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketsearch.core.models import MODELS
from ticketsearch.core.models.layers import conv3x3, init_weights, reject_depth, scale_channels

# Output channels per conv layer; "M" is a 2x2 max-pool.
VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                              512, 512, 512, "M", 512, 512, 512, "M"]  # fmt: skip


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], width: float, num_classes: int, in_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for item in cfg:
            if item == "M":
                # ceil_mode keeps a 1x1 map at 1x1 (instead of 0x0), so five pools accept any input
                # from 8x8 up (32 -> 1, 8 -> 1, 28 -> 14 -> 7 -> 4 -> 2 -> 1). It is a fixed
                # property of the layer, so forward has no size-dependent branches.
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            else:
                channels = scale_channels(int(item), width)
                layers += [
                    conv3x3(previous, channels),
                    nn.BatchNorm2d(channels),
                    nn.ReLU(inplace=True),
                ]
                previous = channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.features(x))
        return self.classifier(torch.flatten(out, 1))


@MODELS.register("vgg16_bn")
def vgg16_bn(*, width: float, num_classes: int, in_channels: int, depth: int | None) -> nn.Module:
    reject_depth("vgg16_bn", depth)
    return VGG(VGG16_CFG, width, num_classes, in_channels)
