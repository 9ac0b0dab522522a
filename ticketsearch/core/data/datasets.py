"""Data set descriptions, the raw uint8 tensors they load to, and the `DATASETS` registry.

The sources themselves live in `torchvision_sets.py` (CIFAR-10/100, SVHN, MNIST, Fashion-MNIST read
by torchvision's own parsers), `downsampled_imagenet.py` (ImageNet at 16, 32 or 64 px) and
`digits.py` (scikit-learn's handwritten digits, offline); importing `ticketsearch.core.data`
registers them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torch import Tensor

from ticketsearch.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trainer need to know about a data set, without loading it.

    `mean`/`std` are per-channel statistics of the training images scaled to [0, 1]; the model
    normalises inside itself, so images stay in [0, 1] for attacks. `crop_padding` (pixels) and
    `flip` are the default augmentation: random crop after zero padding, random horizontal flip.
    """

    name: str
    num_classes: int
    channels: int
    image_size: int  # height = width, pixels
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False


@dataclass
class RawDataset:
    """A whole data set in memory as uint8 N x C x H x W images and int64 labels.

    Images stay uint8 (CIFAR-10's 60,000 images are 184 MB as uint8, 737 MB as float32); they are
    converted to float in [0, 1] one batch at a time (`augment.to_float`).
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    info: DatasetInfo


class DatasetSource(Protocol):
    """A registered data set: its description and a loader. A source too large to read just to see
    whether a node has it may also have `check(root, download)`, which `check_raw` prefers."""

    info: DatasetInfo

    def load(self, root: Path, download: bool) -> RawDataset: ...


DATASETS: Registry[DatasetSource] = Registry("dataset")


def dataset_info(name: str) -> DatasetInfo:
    """The description of a registered data set (no files are read)."""
    return DATASETS.get(name, field="data.dataset").info


def load_raw(name: str, root: str | Path, download: bool = True) -> RawDataset:
    """Load data set `name` from `root` (`~` expanded), downloading it first if allowed and absent.

    Raises a one-line UserError for an unknown name, a data set that is absent and cannot be
    downloaded, or files that cannot be parsed.
    """
    source = DATASETS.get(name, field="data.dataset")
    return source.load(Path(root).expanduser(), download)


def check_raw(name: str, root: str | Path, download: bool = True) -> None:
    """Raise what `load_raw` would for a data set that is absent or unreadable, as cheaply as the
    source allows: a source with a `check` method (one too large to read just to check) runs that,
    any other is loaded (downloading where allowed)."""
    source = DATASETS.get(name, field="data.dataset")
    check = getattr(source, "check", None)
    if check is not None:
        check(Path(root).expanduser(), download)
    else:
        source.load(Path(root).expanduser(), download)
