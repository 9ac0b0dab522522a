"""torchvision's ImageNet ResNet-18 and ResNet-50 (He et al. 2016), the pre-trained networks of transfer.

The ImageNet stem (7x7 conv stride 2, max-pool) downsamples 32x: give 32x32 images `model.input_size`
(e.g. 224) to keep spatial resolution, as the double-win paper's CIFAR transfer does. The body is
torchvision's own module, so its state dicts (and torchvision's published weights) load after
prefixing `body.` to every key and renaming `fc` to `classifier` (`core.pretrained`). Width and depth are fixed: the published
weights exist only at width 1.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ticketsearch.core.models import MODELS
from ticketsearch.core.models.layers import reject_depth
from ticketsearch.errors import UserError

# The statistics torchvision's ImageNet weights were trained with (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.cache
def _imagenet_resnet() -> tuple[type, type, type]:
    """(ImageNetResNet, BasicBlock, Bottleneck), built on first use so that trials of other models never
    import torchvision (see `core.data.torchvision_sets`)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    class ImageNetResNet(ResNet):
        """torchvision's ResNet with its last layer named `classifier` (torchvision's `fc`)."""

        def __init__(self, block, layers: list[int], num_classes: int, in_channels: int):
            super().__init__(block, layers, num_classes=num_classes)
            self.classifier = self.fc
            del self.fc
            if in_channels != 3:
                old = self.conv1
                self.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                       bias=False)
                nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

        def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.classifier(torch.flatten(self.avgpool(x), 1))

    return ImageNetResNet, BasicBlock, Bottleneck


def _check(name: str, width: float, depth: int | None) -> None:
    reject_depth(name, depth)
    if width != 1:
        raise UserError(f"model.width: {name} exists at width 1 only (torchvision's architecture), got {width:g}")


@MODELS.register("resnet18")
def imagenet_resnet18(*, width: float, num_classes: int, in_channels: int, depth: int | None) -> nn.Module:
    _check("resnet18", width, depth)
    resnet, basic_block, _ = _imagenet_resnet()
    return resnet(basic_block, [2, 2, 2, 2], num_classes, in_channels)


@MODELS.register("resnet50")
def imagenet_resnet50(*, width: float, num_classes: int, in_channels: int, depth: int | None) -> nn.Module:
    _check("resnet50", width, depth)
    resnet, _, bottleneck = _imagenet_resnet()
    return resnet(bottleneck, [3, 4, 6, 3], num_classes, in_channels)
