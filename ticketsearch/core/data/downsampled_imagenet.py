"""Downsampled ImageNet: ILSVRC-2012 box-resized to 16x16, 32x32 or 64x64 (Chrabaszcz, Loshchilov,
Hutter 2017, "A Downsampled Variant of ImageNet as an Alternative to the CIFAR datasets").

It is how ImageNet fits this package's data path, which keeps a whole data set resident as uint8
(full-size ImageNet cannot be): 1,281,167 training images are 0.98 GB at 16 px, 3.9 GB at 32 px and
15.7 GB at 64 px. The transfer trainer can then run IMP on ImageNet from ImageNet weights
(`transfer.source: {dataset: imagenet32}`), the double-win procedure at a lower resolution.

Files (image-net.org, "Downsampled ImageNet"; a login is needed, so nothing is downloaded here):
unzip Imagenet32_train.zip and Imagenet32_val.zip so that `<root>/imagenet32/` holds
`train_data_batch_1` .. `train_data_batch_10` and `val_data` (pickles, or the `.npz` variants of
the same names), each {"data": N x 3*S*S uint8 rows, planar R, G, B planes like CIFAR; "labels":
1..1000; "mean"}, plus `map_clsloc.txt` from the ILSVRC CLS-LOC devkit (lines "wnid id name").

Labels: the files number classes by ILSVRC2012 id (the order of map_clsloc.txt). We renumber them to
the sorted-WordNet-id order that torchvision's ImageNet classifiers use, so the 1000 outputs of
pre-trained weights mean the classes the labels name; that is what map_clsloc.txt is needed for.
The official validation images are the test split (ImageNet's test labels are not public); the
search's validation split is held out of training, as for every data set.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ticketsearch.core.data.datasets import DATASETS, DatasetInfo, RawDataset
from ticketsearch.errors import UserError

NUM_CLASSES = 1000
TRAIN_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
TEST_FILE = "val_data"
CLASS_MAP_FILE = "map_clsloc.txt"
DOWNLOAD_PAGE = "https://image-net.org/download-images"


@dataclass(frozen=True)
class DownsampledImageNetSource:
    info: DatasetInfo  # its name ("imagenet32") is also the folder under data.root

    def load(self, root: Path, download: bool) -> RawDataset:
        """Ignores download: the files sit behind image-net.org's login."""
        folder = self._checked_folder(root)
        relabel = _torchvision_order(folder / CLASS_MAP_FILE)
        train_x, train_y = self._read(folder, [_data_file(folder, n) for n in TRAIN_FILES], relabel)
        test_x, test_y = self._read(folder, [_data_file(folder, TEST_FILE)], relabel)
        return RawDataset(train_x, train_y, test_x, test_y, self.info)

    def check(self, root: Path, download: bool) -> None:
        """What a cluster's pre-flight runs on every node: the files exist and the class map parses.
        Reading 1-16 GB of images on every node before a search starts would cost minutes."""
        folder = self._checked_folder(root)
        _torchvision_order(folder / CLASS_MAP_FILE)

    def _checked_folder(self, root: Path) -> Path:
        folder = root / self.info.name
        wanted = [*TRAIN_FILES, TEST_FILE]
        missing = [n for n in wanted if _data_file(folder, n) is None]
        missing += [] if (folder / CLASS_MAP_FILE).is_file() else [CLASS_MAP_FILE]
        if missing:
            size = self.info.image_size
            raise UserError(
                f"data.root: {self.info.name} not found under {root} (missing {self.info.name}/{missing[0]}); it "
                f"cannot be downloaded automatically (image-net.org needs a login): download Imagenet{size}_train "
                f"and Imagenet{size}_val from {DOWNLOAD_PAGE}, unzip their files (train_data_batch_1..10, val_data) "
                f"into {folder}, and add {CLASS_MAP_FILE} from the ILSVRC CLS-LOC devkit"
            )
        return folder

    def _read(self, folder: Path, paths: list[Path], relabel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """One uint8 N x 3 x S x S tensor from several files, holding at most one file twice in memory:
        the result is allocated once (its pages are touched only as they are filled) and each file's
        array is dropped as soon as it is copied in."""
        size = self.info.image_size
        row = 3 * size * size
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for path in paths:
            data, labels = _read_file(path, self.info.name)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row or len(data) != len(labels):
                raise UserError(self._corrupt(path, f"expected N x {row} uint8 rows and N labels, got "
                                                    f"{data.dtype} {data.shape} and {len(labels)} labels"))
            if len(labels) and not (labels.min() >= 1 and labels.max() <= NUM_CLASSES):
                raise UserError(self._corrupt(path, f"labels outside 1..{NUM_CLASSES}"))
            parts.append((data, labels))
        total = sum(len(labels) for _, labels in parts)
        x = torch.empty((total, 3, size, size), dtype=torch.uint8)
        y = torch.empty(total, dtype=torch.int64)
        start = 0
        while parts:
            data, labels = parts.pop(0)
            end = start + len(labels)
            x[start:end] = torch.from_numpy(data).view(-1, 3, size, size)  # planar rows: already C, H, W
            y[start:end] = torch.from_numpy(relabel[labels - 1])
            start = end
            del data, labels
        return x, y

    def _corrupt(self, path: Path, reason: str) -> str:
        return (f"data.root: could not read {path} as {self.info.name} ({reason}); the file looks corrupt, "
                f"incomplete or of another resolution: download it again from {DOWNLOAD_PAGE}")


def _data_file(folder: Path, name: str) -> Path | None:
    """The pickle `name` or its `.npz` variant, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.npz"):
        if candidate.is_file():
            return candidate
    return None


def _read_file(path: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                data, labels = arrays["data"], arrays["labels"]
        else:
            with path.open("rb") as f:
                # latin1: reads pickles written by Python 2 as well as by Python 3
                batch = pickle.load(f, encoding="latin1")
            data, labels = batch["data"], batch["labels"]
        return np.ascontiguousarray(data), np.asarray(labels, dtype=np.int64).reshape(-1)
    except Exception as e:  # truncated file, not a pickle or npz, missing keys
        reason = f"{type(e).__name__}: {' '.join(str(e).split())}"[:200]
        raise UserError(f"data.root: could not read {path} as {dataset} ({reason}); the file looks corrupt or "
                        f"incomplete: download it again from {DOWNLOAD_PAGE}") from e


def _torchvision_order(path: Path) -> np.ndarray:
    """relabel[ilsvrc_id - 1] = the class's index among the sorted WordNet ids (torchvision's order)."""
    ids: dict[int, str] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"data.root: cannot read {path} ({type(e).__name__}); use map_clsloc.txt of the "
                        f"ILSVRC CLS-LOC devkit") from e
    for line_number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[1].isdigit():
            raise UserError(f"data.root: {path} line {line_number}: expected 'wnid id name', got {line.strip()[:60]!r}; "
                            f"use map_clsloc.txt of the ILSVRC CLS-LOC devkit")
        ids[int(fields[1])] = fields[0]
    if sorted(ids) != list(range(1, NUM_CLASSES + 1)) or len(set(ids.values())) != NUM_CLASSES:
        raise UserError(f"data.root: {path} must name {NUM_CLASSES} distinct WordNet ids numbered 1..{NUM_CLASSES}, "
                        f"got {len(set(ids.values()))} ids numbered {min(ids, default=0)}..{max(ids, default=0)}; "
                        f"use map_clsloc.txt of the ILSVRC CLS-LOC devkit")
    rank = {wnid: i for i, wnid in enumerate(sorted(ids.values()))}
    return np.array([rank[ids[number]] for number in range(1, NUM_CLASSES + 1)], dtype=np.int64)


# mean/std: ImageNet's published per-channel statistics (those torchvision's weights were trained
# with). Box downsampling keeps the means; the stds of the small images are slightly lower, which only
# scales the first layer's input. Augmentation: a random crop after padding 1/8 of the side, and flips.
for _size in (16, 32, 64):
    DATASETS.register(f"imagenet{_size}")(DownsampledImageNetSource(DatasetInfo(
        f"imagenet{_size}", NUM_CLASSES, 3, _size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        crop_padding=_size // 8, flip=True)))
