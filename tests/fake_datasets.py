"""Write small data sets in the real on-disk formats that torchvision parses, for tests.

Each writer puts random uint8 images (every class present when there are at least as many images
as classes) under `root` exactly where torchvision looks, and returns what it wrote as `Written`:
images N x C x H x W uint8 and int64 labels, in file order, SVHN's label 10 already mapped to 0.
Formats: CIFAR python pickles (https://www.cs.toronto.edu/~kriz/cifar.html), SVHN MATLAB files
(http://ufldl.stanford.edu/housenumbers/), MNIST idx files (http://yann.lecun.com/exdb/mnist/).
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Written:
    train_x: np.ndarray  # uint8 N x C x H x W
    train_y: np.ndarray  # int64 N
    test_x: np.ndarray
    test_y: np.ndarray


def _images(rng: np.random.Generator, n: int, channels: int, size: int, classes: int):
    x = rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)  # all classes when n >= classes
    return x, y


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the real files are Python 2 pickles


def write_cifar10(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Written:
    """cifar-10-batches-py/: data_batch_1..5, test_batch ({"data": N x 3072, "labels"}), meta."""
    rng = np.random.default_rng(seed)
    train_x, train_y = _images(rng, n_train, 3, 32, 10)
    test_x, test_y = _images(rng, n_test, 3, 32, 10)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _pickle(folder / f"data_batch_{i}", {
            "batch_label": f"training batch {i} of 5",
            "labels": train_y[part].tolist(),
            "data": train_x[part].reshape(len(part), 3 * 32 * 32),  # channel planes, row-major
            "filenames": [f"img_{j}.png" for j in part],
        })
    _pickle(folder / "test_batch", {
        "batch_label": "testing batch 1 of 1",
        "labels": test_y.tolist(),
        "data": test_x.reshape(n_test, -1),
        "filenames": [f"test_{j}.png" for j in range(n_test)],
    })
    names = ["airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 10000,
                                      "num_vis": 3072})
    return Written(train_x, train_y, test_x, test_y)


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 40, seed: int = 0) -> Written:
    """cifar-100-python/: train, test ({"data", "fine_labels", "coarse_labels"}), meta."""
    rng = np.random.default_rng(seed)
    train_x, train_y = _images(rng, n_train, 3, 32, 100)
    test_x, test_y = _images(rng, n_test, 3, 32, 100)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, x, y in [("train", train_x, train_y), ("test", test_x, test_y)]:
        _pickle(folder / name, {
            "filenames": [f"{name}_{j}.png" for j in range(len(y))],
            "batch_label": f"{name} batch",
            "fine_labels": y.tolist(),
            "coarse_labels": (y // 5).tolist(),
            "data": x.reshape(len(y), -1),
        })
    _pickle(folder / "meta", {"fine_label_names": [f"fine_{i}" for i in range(100)],
                              "coarse_label_names": [f"coarse_{i}" for i in range(20)]})
    return Written(train_x, train_y, test_x, test_y)


def write_svhn(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Written:
    """train_32x32.mat, test_32x32.mat: X is H x W x C x N uint8, y is N x 1 with 10 for digit 0."""
    import scipy.io

    rng = np.random.default_rng(seed)
    train_x, train_y = _images(rng, n_train, 3, 32, 10)
    test_x, test_y = _images(rng, n_test, 3, 32, 10)
    Path(root).mkdir(parents=True, exist_ok=True)
    for name, x, y in [("train", train_x, train_y), ("test", test_x, test_y)]:
        file_y = np.where(y == 0, 10, y).astype(np.uint8)[:, None]
        scipy.io.savemat(Path(root) / f"{name}_32x32.mat",
                         {"X": x.transpose(2, 3, 1, 0), "y": file_y})  # N C H W -> H W C N
    return Written(train_x, train_y, test_x, test_y)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """idx format: magic 0x0000 08 <ndim> (08 = unsigned byte), big-endian int32 dims, then data."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0,
                folder: str = "MNIST") -> Written:
    """<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, 28x28 images (unzipped)."""
    rng = np.random.default_rng(seed)
    train_x, train_y = _images(rng, n_train, 1, 28, 10)
    test_x, test_y = _images(rng, n_test, 1, 28, 10)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, x, y in [("train", train_x, train_y), ("t10k", test_x, test_y)]:
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return Written(train_x, train_y, test_x, test_y)


def write_fashion_mnist(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Written:
    """Same idx files as MNIST, under FashionMNIST/raw/."""
    return write_mnist(root, n_train, n_test, seed, folder="FashionMNIST")


# Registered data set name -> writer, so tests can parametrise over every on-disk data set.
WRITERS = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
    "mnist": write_mnist,
    "fashion_mnist": write_fashion_mnist,
}


def imagenet_wnid(ilsvrc_id: int) -> str:
    """A made-up WordNet id whose sorted order reverses the ILSVRC id order: torchvision's index of
    ILSVRC id k is then 1000 - k, so a loader that forgets to renumber is caught."""
    return f"n{1000 - ilsvrc_id:08d}"


def write_downsampled_imagenet(root: Path, size: int = 16, n_train: int = 60, n_test: int = 20,
                               classes: int = 5, npz: bool = False, seed: int = 0) -> Written:
    """imagenet{size}/: train_data_batch_1..10, val_data ({"data": N x 3*S*S planar rows, "labels":
    ILSVRC ids 1..1000, "mean"}, pickles or .npz) and map_clsloc.txt. Images use the first `classes`
    ILSVRC ids; the returned labels are in torchvision's order (1000 - id)."""
    rng = np.random.default_rng(seed)
    train_x, train_y = _images(rng, n_train, 3, size, classes)
    test_x, test_y = _images(rng, n_test, 3, size, classes)
    folder = Path(root) / f"imagenet{size}"
    folder.mkdir(parents=True, exist_ok=True)
    mean = train_x.reshape(n_train, -1).mean(axis=0)

    def save(name: str, x: np.ndarray, y: np.ndarray) -> None:
        batch = {"data": x.reshape(len(y), -1), "labels": (y + 1).tolist(), "mean": mean}
        if npz:
            np.savez(folder / f"{name}.npz", **batch)
        else:
            _pickle(folder / name, batch)

    for i, part in enumerate(np.array_split(np.arange(n_train), 10), start=1):
        save(f"train_data_batch_{i}", train_x[part], train_y[part])
    save("val_data", test_x, test_y)
    (folder / "map_clsloc.txt").write_text(
        "".join(f"{imagenet_wnid(k)} {k} class_{k}\n" for k in range(1, 1001)))
    return Written(train_x, 1000 - (train_y + 1), test_x, 1000 - (test_y + 1))
