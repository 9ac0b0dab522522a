"""Wide ResNets (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

WRN-depth-k: a 16-channel stem, then three stages of 16k/32k/64k channels with n = (depth - 4) / 6
pre-activation basic blocks each, a final BN-ReLU, global average pooling and one linear layer.
`width` is the widen factor k, so WRN-34-10 (46.2M parameters), the model of Madry et al. 2018 and
TRADES (Zhang et al. 2019), is depth 34, width 10. The blocks are those of the Madry/TRADES code: a
shape-changing shortcut is a 1x1 conv on the pre-activated input; no dropout.
"""

from __future__ import annotations

from torch import nn

from ticketsearch.core.models import MODELS
from ticketsearch.core.models.layers import scale_channels
from ticketsearch.core.models.preact_resnet import PreActResNet
from ticketsearch.errors import UserError

DEFAULT_DEPTH = 34


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
    widths = [scale_channels(c, width) for c in (16, 32, 64)]
    # The 16-channel stem is not widened; each stage has n = (depth - 4) / 6 blocks.
    return PreActResNet(16, widths, [(depth - 4) // 6] * 3, num_classes, in_channels)
