"""How many examples of each class a data set on disk has, read as cheaply as its format allows.

`class_sizes(name, root)` is what the spec checks compare `val_split`, `fraction`, `classes`,
`eval_examples` and `test_examples` with before any trial starts. Only labels are read: MNIST's and
Fashion-MNIST's label files (60 KB), SVHN's `y` variable (scipy skips `X`), the `labels` member of
downsampled ImageNet's .npz files. CIFAR's and downsampled ImageNet's pickles keep labels and images
in one object, so those files are read whole, one at a time (CIFAR-10: 5 x 31 MB). A data set that is
not on disk gives None: the loader's own check reports it, or downloads it, when a trial starts.
"""

from __future__ import annotations

import functools
import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ticketsearch.core.data import downsampled_imagenet as imagenet
from ticketsearch.core.data.datasets import DATASETS
from ticketsearch.core.data.digits import TEST_SIZE, TEST_SPLIT_SEED, DigitsSource
from ticketsearch.core.data.downsampled_imagenet import DownsampledImageNetSource
from ticketsearch.core.data.torchvision_sets import TorchvisionSource
from ticketsearch.errors import UserError


@dataclass(frozen=True)
class ClassSizes:
    """Examples per class label (labels as a trial sees them, before `classes` selects some)."""

    train: dict[int, int]
    test: dict[int, int]

    def select(self, classes: tuple[int, ...] | None) -> "ClassSizes":
        """The sizes of `classes` only, relabelled 0..k-1 in the order given, as `select_classes` does."""
        if classes is None:
            return self
        return ClassSizes({i: self.train.get(c, 0) for i, c in enumerate(classes)},
                          {i: self.test.get(c, 0) for i, c in enumerate(classes)})


def class_sizes(name: str, root: str | Path) -> ClassSizes | None:
    """Class sizes of data set `name` under `root`, or None when its files are not all there."""
    source = DATASETS.get(name, field="data.dataset")
    root = Path(root).expanduser()
    for kind, read in _READERS:
        if isinstance(source, kind):
            return read(source, root)
    return None  # a source this module does not know: its sizes are checked when a trial loads it


def _counts(labels: np.ndarray) -> dict[int, int]:
    return {int(label): int(n) for label, n in Counter(labels.tolist()).items()}


def _digits(source: DigitsSource, root: Path) -> ClassSizes:
    return _digits_sizes()


@functools.cache  # the data ships with scikit-learn: it cannot change while this process runs
def _digits_sizes() -> ClassSizes:
    import torch
    from sklearn.datasets import load_digits  # imported here: ~1 s

    from ticketsearch.core.data.splits import stratified_split

    labels = torch.from_numpy(load_digits().target.astype(np.int64))
    train, test = stratified_split(labels, TEST_SIZE, TEST_SPLIT_SEED)  # the source's own test split
    return ClassSizes(_counts(labels[train].numpy()), _counts(labels[test].numpy()))


def _torchvision(source: TorchvisionSource, root: Path) -> ClassSizes | None:
    if any(not (root / f).is_file() for f in source.files):
        return None
    files = [root / f for f in source.files]
    name = source.info.name
    if name in ("cifar10", "cifar100"):
        key = "labels" if name == "cifar10" else "fine_labels"
        train = [f for f in files if f.name.startswith("data_batch") or f.name == "train"]
        test = [f for f in files if f.name in ("test_batch", "test")]
        return ClassSizes(_pickled_counts(train, key, name), _pickled_counts(test, key, name))
    if name == "svhn":
        return ClassSizes(_svhn_counts(files[0]), _svhn_counts(files[1]))
    # MNIST and Fashion-MNIST: train images, train labels, test images, test labels
    return ClassSizes(_idx_counts(files[1], name), _idx_counts(files[3], name))


def _pickled_counts(paths: list[Path], key: str, name: str) -> dict[int, int]:
    counts: Counter[int] = Counter()
    for path in paths:
        batch = _unpickle(path, name)
        counts.update(int(label) for label in batch[key])
    return dict(counts)


def _unpickle(path: Path, name: str) -> dict:
    try:
        with path.open("rb") as handle:
            return pickle.load(handle, encoding="latin1")  # Python 2 pickles, as published
    except Exception as error:  # truncated, not a pickle
        raise UserError(f"data.root: could not read {path} as {name} ({type(error).__name__}); the file looks "
                        "corrupt or incomplete: delete it and download again") from None


def _svhn_counts(path: Path) -> dict[int, int]:
    import scipy.io

    try:
        labels = scipy.io.loadmat(path, variable_names=["y"])["y"].reshape(-1).astype(np.int64)
    except Exception as error:
        raise UserError(f"data.root: could not read the labels of {path} as svhn ({type(error).__name__}); the "
                        "file looks corrupt or incomplete: delete it and download again") from None
    return _counts(np.where(labels == 10, 0, labels))  # SVHN writes digit 0 as 10; torchvision maps it to 0


def _idx_counts(path: Path, name: str) -> dict[int, int]:
    """An idx1 label file: big-endian magic 0x00000801 and count, then one byte per label."""
    data = path.read_bytes()
    count = int.from_bytes(data[4:8], "big") if len(data) >= 8 else -1
    if data[:4] != b"\x00\x00\x08\x01" or len(data) != 8 + count:
        raise UserError(f"data.root: {path} is not an idx label file of {count if count >= 0 else '?'} labels "
                        f"({len(data)} bytes) as {name}; the file looks corrupt or incomplete: delete it and "
                        "download again")
    return _counts(np.frombuffer(data, dtype=np.uint8, offset=8))


def _imagenet(source: DownsampledImageNetSource, root: Path) -> ClassSizes | None:
    folder = root / source.info.name
    paths = [imagenet._data_file(folder, n) for n in (*imagenet.TRAIN_FILES, imagenet.TEST_FILE)]
    if any(p is None for p in paths) or not (folder / imagenet.CLASS_MAP_FILE).is_file():
        return None
    relabel = imagenet._torchvision_order(folder / imagenet.CLASS_MAP_FILE)

    def counts(files: list[Path]) -> dict[int, int]:
        total: Counter[int] = Counter()
        for path in files:
            if path.suffix == ".npz":  # members load lazily: the labels only
                with np.load(path, allow_pickle=False) as arrays:
                    labels = np.asarray(arrays["labels"], dtype=np.int64).reshape(-1)
            else:
                labels = np.asarray(_unpickle(path, source.info.name)["labels"], dtype=np.int64).reshape(-1)
            if len(labels) and not (labels.min() >= 1 and labels.max() <= imagenet.NUM_CLASSES):
                raise UserError(f"data.root: {path} has labels outside 1..{imagenet.NUM_CLASSES}; the file looks "
                                "corrupt or of another data set")
            total.update(_counts(relabel[labels - 1]))
        return dict(total)

    return ClassSizes(counts(paths[:-1]), counts(paths[-1:]))


_READERS: list[tuple[type, Callable[..., ClassSizes | None]]] = [
    (DigitsSource, _digits), (TorchvisionSource, _torchvision), (DownsampledImageNetSource, _imagenet)]
