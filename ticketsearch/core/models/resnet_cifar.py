"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2).

Three stages of 16/32/64 channels (times `width`) with n basic blocks each, depth 6n + 2:
ResNet-20 (n=3, 0.27M parameters), ResNet-32 (n=5), ResNet-56 (n=9). Where a block changes shape the
shortcut is a 1x1 convolution plus batch norm (the paper's option B), which costs ~3k parameters at
width 1 and keeps every layer a plain conv that pruning can see.
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


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                Projection(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, width: float, num_classes: int, in_channels: int):
        super().__init__()
        widths = [scale_channels(c, width) for c in (16, 32, 64)]
        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        previous = widths[0]
        for stage, channels in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(previous, channels, stride))
                previous = channels
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.layers(out))
        return self.classifier(torch.flatten(out, 1))


def _register(arch: str, blocks_per_stage: int) -> None:
    @MODELS.register(arch)
    def build(*, width: float, num_classes: int, in_channels: int, depth: int | None) -> nn.Module:
        reject_depth(arch, depth)
        return CifarResNet(blocks_per_stage, width, num_classes, in_channels)


_register("resnet20", 3)
_register("resnet32", 5)
_register("resnet56", 9)
