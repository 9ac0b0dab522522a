"""Wide ResNets (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

WRN-depth-k: a 16-channel stem, then three stages of 16k/32k/64k channels with n = (depth - 4) / 6
pre-activation basic blocks each, a final BN-ReLU, global average pooling and one linear layer.
`width` is the widen factor k, so WRN-34-10 (46.2M parameters), the model of Madry et al. 2018 and
TRADES (Zhang et al. 2019), is depth 34, width 10. The blocks are those of the Madry/TRADES code: a
shape-changing shortcut is a 1x1 conv on the pre-activated input; no dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketsearch.core.models import MODELS
from ticketsearch.core.models.layers import conv3x3, init_weights, scale_channels
from ticketsearch.core.models.preact_resnet import PreActBlock
from ticketsearch.errors import UserError

DEFAULT_DEPTH = 34


class WideResNet(nn.Module):
    def __init__(self, depth: int, width: float, num_classes: int, in_channels: int):
        super().__init__()
        blocks_per_stage = (depth - 4) // 6
        widths = [scale_channels(c, width) for c in (16, 32, 64)]
        self.conv1 = conv3x3(in_channels, 16)  # the stem is not widened
        layers: list[nn.Module] = []
        previous = 16
        for stage, channels in enumerate(widths):
            for block in range(blocks_per_stage):
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


@MODELS.register("wide_resnet")
def wide_resnet(
    *, width: float, num_classes: int, in_channels: int, depth: int | None
) -> nn.Module:
    depth = DEFAULT_DEPTH if depth is None else depth
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
        raise UserError(
            f"model.depth: wide_resnet needs depth = 6n + 4 with n >= 1 "
            f"(e.g. 16, 22, 28, 34, 40), got {depth!r}"
        )
    return WideResNet(depth, width, num_classes, in_channels)
