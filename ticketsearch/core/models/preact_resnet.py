"""PreAct ResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks").

The model of Wong, Rice & Kolter 2020 ("Fast is better than free"): a CIFAR stem (one 3x3 conv,
stride 1, no max-pool), four stages of 64/128/256/512 channels (times `width`) with two
pre-activation blocks each, a final BN-ReLU, global average pooling and one linear layer.
11.2M parameters at width 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketsearch.core.models import MODELS
from ticketsearch.core.models.layers import (
    Projection,
    conv3x3,
    init_weights,
    reject_depth,
    scale_channels,
)


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv; a shape-changing shortcut takes the pre-activated input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = Projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # The shortcut runs last, as it is registered, so modules are called in registration order.
        shortcut = self.shortcut(pre) if self.shortcut is not None else x
        return out + shortcut


class PreActResNet(nn.Module):
    """A 3x3 stem conv, stages of pre-activation blocks (the first of each stage after the first
    strides by 2), a final BN-ReLU (pre-activation nets need one), global pooling, one linear layer.
    Shared by PreAct ResNet-18 and the Wide ResNets."""

    def __init__(self, stem: int, widths: list[int], blocks: list[int], num_classes: int, in_channels: int):
        super().__init__()
        # No BN after the stem: the first block's bn1 pre-activates it.
        self.conv1 = conv3x3(in_channels, stem)
        layers: list[nn.Module] = []
        previous = stem
        for stage, (channels, count) in enumerate(zip(widths, blocks)):
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(PreActBlock(previous, channels, stride))
                previous = channels
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(previous)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(x))
        out = self.pool(F.relu(self.bn(out)))
        return self.classifier(torch.flatten(out, 1))


@MODELS.register("preact_resnet18")
def preact_resnet18(
    *, width: float, num_classes: int, in_channels: int, depth: int | None
) -> nn.Module:
    reject_depth("preact_resnet18", depth)
    widths = [scale_channels(c, width) for c in (64, 128, 256, 512)]
    return PreActResNet(widths[0], widths, [2, 2, 2, 2], num_classes, in_channels)
