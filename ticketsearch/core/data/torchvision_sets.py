"""CIFAR-10, CIFAR-100, SVHN, MNIST and Fashion-MNIST, parsed by torchvision's own dataset classes.

Flow of `TorchvisionSource.load`: if any expected file is absent and downloading is allowed, take a
file lock in the root (concurrent trials on one node must not download the same files at once),
check again, and let torchvision download; then parse with download=False. Every failure becomes a
one-line UserError. Sources: https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR),
http://ufldl.stanford.edu/housenumbers/ (SVHN), http://yann.lecun.com/exdb/mnist/ (MNIST),
https://github.com/zalandoresearch/fashion-mnist (Fashion-MNIST).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from filelock import FileLock

from ticketsearch.core.data.datasets import DATASETS, DatasetInfo, RawDataset
from ticketsearch.errors import UserError

# Seconds a connection or a read may stall during a download. urllib has no timeout by default, so a
# node whose firewall drops packets would hang forever; measured offline here (DNS fails), an
# attempt fails in 0.03 s either way. Set process-wide while downloading (urllib reads socket's
# default).
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


# torchvision's CIFAR and SVHN classes check the md5 of every file before parsing, so a file in the
# real format but other content (the small sets our tests write, a re-packed copy) is reported as
# "not found or corrupted". These subclasses only check that the files exist; torchvision's download
# still verifies the md5 of what it downloads, and `_checked` below validates shapes and labels.
# They are built on first use, so a trial on digits never imports torchvision (measured: 0.3 s per
# process with bytecode installed; more without).
@functools.cache
def _classes() -> dict[str, type]:
    import torchvision.datasets as tvd

    class CIFAR10(tvd.CIFAR10):
        def _check_integrity(self) -> bool:
            names = [name for name, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, n)) for n in names)

        def _load_meta(self) -> None:  # only class names, which we do not use; skip its md5 check
            pass

    class CIFAR100(CIFAR10, tvd.CIFAR100):
        pass

    class SVHN(tvd.SVHN):
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

    return {"CIFAR10": CIFAR10, "CIFAR100": CIFAR100, "SVHN": SVHN,
            "MNIST": tvd.MNIST, "FashionMNIST": tvd.FashionMNIST}


# MNIST and Fashion-MNIST need no subclass: they check only that the raw files exist (and the folder
# name comes from the class name, so a subclass would look in the wrong place).


@dataclass(frozen=True)
class TorchvisionSource:
    """One torchvision data set: where its files lie, how to turn its arrays into a RawDataset."""

    info: DatasetInfo
    public_class: str  # the class a user calls to download, for messages
    make: Callable[[Path, bool, bool], object]  # (root, train, download) -> torchvision dataset
    layout: str  # of the images torchvision returns: "NHWC", "NCHW" or "NHW"
    files: tuple[str, ...]  # relative to the root; all must exist
    copy_hint: str  # what to copy into the root, for messages

    def load(self, root: Path, download: bool) -> RawDataset:
        reason = "download is off"
        if download and self._missing(root):
            reason = self._download(root) or "the download ended without these files"
        missing = self._missing(root)
        if missing:
            raise UserError(
                f"data.root: {self.info.name} not found under {root} (missing {missing[0]}) and it "
                f"could not be downloaded ({reason}); download it where the network allows "
                f"(torchvision.datasets.{self.public_class}(root, download=True)) and copy "
                f"{self.copy_hint} into {root}, or point data.root at a copy"
            )
        train_x, train_y = self._parse(root, train=True)
        test_x, test_y = self._parse(root, train=False)
        return RawDataset(train_x, train_y, test_x, test_y, self.info)

    def _missing(self, root: Path) -> list[str]:
        return [f for f in self.files if not (root / f).is_file()]

    def _download(self, root: Path) -> str:
        """Try torchvision's download under a lock; return why it failed ("" if it did not)."""
        try:
            root.mkdir(parents=True, exist_ok=True)
            with FileLock(root / f".ticketsearch-{self.info.name}.lock"), _socket_timeout():
                if self._missing(root):  # another process may have finished while we waited
                    for train in (True, False):  # SVHN downloads one file per split
                        self.make(root, train, True)  # also parses once; only on first download
        except Exception as e:  # URLError, socket errors, torchvision's RuntimeError, disk full ...
            return _short(e)
        return ""

    def _parse(self, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        split = "train" if train else "test"
        try:
            ds = self.make(root, train, False)
            labels = getattr(ds, "labels", None)
            x, y = _to_tensor(ds.data), _to_tensor(ds.targets if labels is None else labels)
        except Exception as e:  # truncated pickle, bad .mat or idx header, ...
            raise UserError(self._corrupt(root, split, _short(e))) from e
        if self.layout == "NHW" and x.ndim == 3:
            x = x.unsqueeze(1)
        elif self.layout == "NHWC" and x.ndim == 4:
            x = x.permute(0, 3, 1, 2)
        return self._checked(root, split, x.contiguous(), y.long())

    def _checked(
        self, root: Path, split: str, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        info = self.info
        shape = (info.channels, info.image_size, info.image_size)
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != shape or len(x) != len(y):
            got = f"{len(y)} labels, images {tuple(x.shape)} {x.dtype}"
            expected = f"expected N x {shape} uint8 images, got {got}"
            raise UserError(self._corrupt(root, split, expected))
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < info.num_classes:
            raise UserError(self._corrupt(root, split, f"labels outside 0..{info.num_classes - 1}"))
        return x, y

    def _corrupt(self, root: Path, split: str, reason: str) -> str:
        return (
            f"data.root: could not read the {split} split of {self.info.name} from "
            f"{self.copy_hint} under {root} ({reason}); the files look corrupt or incomplete: "
            f"delete them and download again"
        )


def _to_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))


def _short(e: BaseException) -> str:
    """One line: the exception type and its message with whitespace collapsed, at most 200 chars."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:200]


@contextlib.contextmanager
def _socket_timeout() -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _register(source: TorchvisionSource) -> None:
    DATASETS.register(source.info.name)(source)


# mean/std: the per-channel statistics of each training set as commonly published and used.
_register(TorchvisionSource(
    info=DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616),
                     crop_padding=4, flip=True),
    public_class="CIFAR10",
    layout="NHWC",
    make=lambda root, train, download: _classes()["CIFAR10"](root, train=train, download=download),
    files=tuple(f"cifar-10-batches-py/{n}" for n in
                ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"]),
    copy_hint="the folder cifar-10-batches-py/",
))
_register(TorchvisionSource(
    info=DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                     crop_padding=4, flip=True),
    public_class="CIFAR100",
    layout="NHWC",
    make=lambda root, train, download: _classes()["CIFAR100"](root, train=train, download=download),
    files=("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
    copy_hint="the folder cifar-100-python/",
))
# SVHN: digits must not be mirrored, so crop only.
_register(TorchvisionSource(
    info=DatasetInfo("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                     crop_padding=4, flip=False),
    public_class="SVHN",
    layout="NCHW",
    make=lambda root, train, download: _classes()["SVHN"](root, split="train" if train else "test",
                                                         download=download),
    files=("train_32x32.mat", "test_32x32.mat"),
    copy_hint="train_32x32.mat and test_32x32.mat",
))
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_register(TorchvisionSource(
    info=DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,)),
    public_class="MNIST",
    layout="NHW",
    make=lambda root, train, download: _classes()["MNIST"](root, train=train, download=download),
    files=tuple(f"MNIST/raw/{n}" for n in _MNIST_FILES),
    copy_hint="the folder MNIST/raw/ (unzipped idx files)",
))
# Fashion-MNIST: a horizontal flip would be label-preserving, but it is kept off like MNIST's.
_register(TorchvisionSource(
    info=DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,)),
    public_class="FashionMNIST",
    layout="NHW",
    make=lambda root, train, download: _classes()["FashionMNIST"](root, train=train, download=download),
    files=tuple(f"FashionMNIST/raw/{n}" for n in _MNIST_FILES),
    copy_hint="the folder FashionMNIST/raw/ (unzipped idx files)",
))
