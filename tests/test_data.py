"""Data sets (torchvision's parsers on files written in the real formats), splits, augmentation."""

from __future__ import annotations

import re
import shutil
import socket
import time
import urllib.error
import urllib.request

import pytest
import torch

from fake_datasets import WRITERS, write_cifar10, write_mnist, write_svhn
from ticketsearch.core.data import (
    DATASETS,
    augment_batch,
    dataset_info,
    load_cache,
    load_raw,
    prepare_data,
    stratified_split,
    stratified_subset,
    to_float,
)
from ticketsearch.core.data import bundle, torchvision_sets
from ticketsearch.errors import UserError

ON_DISK = sorted(WRITERS)


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("name", ON_DISK)
def test_torchvision_sets_load_exactly_what_was_written(tmp_path, name):
    written = WRITERS[name](tmp_path)
    raw = load_raw(name, tmp_path, download=False)
    info = raw.info
    assert info == dataset_info(name) and info.name == name
    assert len(info.mean) == len(info.std) == info.channels
    for split in ("train", "test"):
        x, y = getattr(raw, f"{split}_x"), getattr(raw, f"{split}_y")
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.is_contiguous()
        assert x.shape[1:] == (info.channels, info.image_size, info.image_size)
        # Exact equality, including SVHN's label 10 -> 0 (the writer returns mapped labels).
        assert torch.equal(x, torch.from_numpy(getattr(written, f"{split}_x")))
        assert torch.equal(y, torch.from_numpy(getattr(written, f"{split}_y")))
    assert int(raw.train_y.min()) == 0 and int(raw.train_y.max()) == info.num_classes - 1


def test_svhn_file_holds_ten_for_zero(tmp_path):
    import scipy.io

    written = write_svhn(tmp_path)
    in_file = scipy.io.loadmat(tmp_path / "train_32x32.mat")["y"].squeeze()
    assert (in_file == 10).sum() == (written.train_y == 0).sum() > 0 and (in_file == 0).sum() == 0


def test_default_augmentation_per_data_set():
    assert (dataset_info("cifar10").crop_padding, dataset_info("cifar10").flip) == (4, True)
    assert (dataset_info("svhn").crop_padding, dataset_info("svhn").flip) == (4, False)
    for name in ("mnist", "fashion_mnist", "digits"):
        assert (dataset_info(name).crop_padding, dataset_info(name).flip) == (0, False)


def test_digits_load_offline(tmp_path):
    raw = load_raw("digits", tmp_path / "unused", download=False)
    assert len(raw.train_y) + len(raw.test_y) == 1797 and len(raw.test_y) == 360
    assert raw.train_x.shape[1:] == (1, 8, 8) and raw.train_x.dtype == torch.uint8
    assert int(raw.train_x.max()) == 255 and raw.info.num_classes == 10
    assert torch.equal(torch.unique(raw.test_y), torch.arange(10))
    assert (raw.test_y.bincount() - 36).abs().max() <= 1  # stratified: 36 per class, within 1
    again = load_raw("digits", tmp_path, download=False)
    assert torch.equal(again.test_x, raw.test_x)  # the fixed test split is deterministic
    # The hard-coded mean/std are those of the training images.
    x = to_float(raw.train_x)
    assert abs(x.mean().item() - raw.info.mean[0]) < 1e-4
    assert abs(x.std().item() - raw.info.std[0]) < 1e-4


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(UserError, match="^data.dataset: unknown dataset 'imagenet'; known: .*svhn"):
        load_raw("imagenet", tmp_path)
    assert set(ON_DISK) | {"digits"} <= set(DATASETS.names())


def _one_line_absent_error(err: UserError, name: str, root) -> None:
    message = str(err)
    assert "\n" not in message and message.startswith("data.root:")
    assert name in message and str(root) in message and "download=True" in message


@pytest.mark.parametrize("name", ["cifar10", "svhn", "fashion_mnist"])
def test_absent_data_without_download(tmp_path, name):
    with pytest.raises(UserError) as err:
        load_raw(name, tmp_path, download=False)
    _one_line_absent_error(err.value, name, tmp_path)
    assert "download is off" in str(err.value)


@pytest.mark.parametrize("name", ON_DISK)
def test_absent_data_download_fails_fast_offline(tmp_path, monkeypatch, name):
    # Simulate an offline machine, whatever network this one has (a real attempt would fetch up to
    # 180 MB where the network allows); record the socket timeout in force during the attempt.
    timeouts = []

    def offline(*args, **kwargs):
        timeouts.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("offline (simulated)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        load_raw(name, tmp_path / "new", download=True)
    assert time.monotonic() - start < 5
    _one_line_absent_error(err.value, name, tmp_path / "new")
    assert "offline (simulated)" in str(err.value)
    assert timeouts and set(timeouts) == {torchvision_sets.DOWNLOAD_SOCKET_TIMEOUT_S}
    assert socket.getdefaulttimeout() is None  # restored


def _truncate(path, keep: int = 500) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    "name, write, damage",
    [
        ("cifar10", write_cifar10, lambda r: _truncate(r / "cifar-10-batches-py" / "data_batch_3")),
        ("svhn", write_svhn, lambda r: _truncate(r / "test_32x32.mat", 100)),
        ("mnist", write_mnist, lambda r: _truncate(r / "MNIST/raw/train-images-idx3-ubyte")),
        ("mnist", write_mnist, lambda r: _truncate(r / "MNIST/raw/t10k-labels-idx1-ubyte", 3)),
    ],
)
def test_corrupt_file_gives_user_error(tmp_path, name, write, damage):
    write(tmp_path)
    damage(tmp_path)
    pattern = rf"^data.root: could not read the \w+ split of {name} "
    with pytest.raises(UserError, match=pattern) as e:
        load_raw(name, tmp_path, download=True)  # files present: no download is attempted
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_labels_out_of_range_give_user_error(tmp_path):
    write_mnist(tmp_path, folder="FashionMNIST")
    labels = tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = 12  # class 12 of 10
    labels.write_bytes(bytes(data))
    with pytest.raises(UserError, match="test split of fashion_mnist .*labels outside 0..9"):
        load_raw("fashion_mnist", tmp_path, download=False)


# ---------------------------------------------------------------- splits


def _labels(sizes: list[int]) -> torch.Tensor:
    y = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize("held_out", [37, 0.2])
def test_stratified_split(held_out):
    sizes = [50, 30, 20, 7, 93]
    y = _labels(sizes)
    keep, held = stratified_split(y, held_out, seed=3)
    count = held_out if isinstance(held_out, int) else round(held_out * len(y))
    assert len(held) == count and len(keep) == len(y) - count
    assert torch.equal(torch.sort(torch.cat([keep, held])).values, torch.arange(len(y)))
    assert torch.equal(held, torch.sort(held).values) and torch.equal(keep, torch.sort(keep).values)
    per_class = torch.bincount(y[held], minlength=len(sizes)).float()
    exact = torch.tensor(sizes, dtype=torch.float) * count / len(y)
    assert (per_class - exact).abs().max() < 1
    keep2, held2 = stratified_split(y, held_out, seed=3)
    assert torch.equal(held, held2) and torch.equal(keep, keep2)
    assert not torch.equal(held, stratified_split(y, held_out, seed=4)[1])


@pytest.mark.parametrize("bad", [200, 500, 0, -3, 0.0, 1.0, 1.5, -0.1, 0.001, True, "10%"])
def test_stratified_split_rejects(bad):
    with pytest.raises(UserError, match="^data.val_split: "):
        stratified_split(_labels([100, 100]), bad, seed=0)


def test_stratified_subset_exact_and_stratified():
    sizes = [400, 250, 100, 250]
    y = _labels(sizes)
    for fraction in (0.01, 0.1, 0.33, 0.5):
        idx = stratified_subset(y, fraction, seed=0)
        assert len(idx) == round(fraction * len(y))
        assert torch.equal(idx, torch.sort(idx).values) and len(torch.unique(idx)) == len(idx)
        per_class = torch.bincount(y[idx], minlength=4).float()
        exact = torch.tensor(sizes, dtype=torch.float) * fraction
        assert (per_class - exact).abs().max() < 1
        assert torch.equal(idx, stratified_subset(y, fraction, seed=0))
    assert torch.equal(stratified_subset(y, 1.0, seed=0), torch.arange(len(y)))
    # Per class, the first k of one fixed order: a larger fraction contains a smaller one.
    small, large = stratified_subset(y, 0.1, 0), stratified_subset(y, 0.5, 0)
    assert torch.isin(small, large).all()


def test_stratified_subset_empty_class_names_fraction_that_works():
    y = _labels([60, 60, 5, 75])  # 1% of 200 = 2 examples cannot cover 4 classes
    with pytest.raises(UserError, match=r"^data.fraction: 0.01 .*class 2 .*>= ") as err:
        stratified_subset(y, 0.01, seed=0)
    smallest = float(re.search(r">= ([0-9.e-]+)$", str(err.value)).group(1))
    idx = stratified_subset(y, smallest, seed=0)
    assert torch.equal(torch.unique(y[idx]), torch.arange(4))
    for bad in (0, -0.5, 1.01):
        with pytest.raises(UserError, match="^data.fraction: "):
            stratified_subset(y, bad, seed=0)


# ---------------------------------------------------------------- bundle


@pytest.fixture
def cifar_root(tmp_path):
    load_cache.clear()  # other test modules may have cached digits in this process
    write_cifar10(tmp_path, n_train=300, n_test=30)
    yield tmp_path
    load_cache.clear()


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(image.flatten().tolist()) for image in x}


def test_prepare_data_val_fixed_across_fractions(cifar_root):
    full = prepare_data("cifar10", str(cifar_root), val_split=0.2, fraction=1.0)
    tenth = prepare_data("cifar10", str(cifar_root), val_split=0.2, fraction=0.1)
    assert len(load_cache) == 1  # read once
    assert torch.equal(full.val_x, tenth.val_x) and torch.equal(full.val_y, tenth.val_y)
    assert len(full.val_y) == 60 and len(full.train_y) == 240 and len(tenth.train_y) == 24
    assert torch.equal(tenth.val_y.bincount(), torch.full((10,), 6))
    assert set(tenth.train_y.bincount().tolist()) == {2, 3}  # 24 over 10 classes of 24 each
    assert not _rows(full.train_x) & _rows(full.val_x)  # disjoint (random images are unique)
    assert _rows(tenth.train_x) <= _rows(full.train_x)
    assert len(full.test_y) == 30 and full.train_x.dtype == torch.uint8
    other_seed = prepare_data("cifar10", str(cifar_root), val_split=0.2, fraction=1.0, split_seed=1)
    assert not torch.equal(other_seed.val_x, full.val_x)


def test_large_raw_sets_are_not_kept(cifar_root, monkeypatch):
    # A worker keeps small raw sets between trials; a large one (ImageNet) would be held twice.
    monkeypatch.setattr(bundle, "LOAD_CACHE_MAX_BYTES", 300 * 3072 - 1)  # just under this CIFAR copy
    first = prepare_data("cifar10", str(cifar_root), val_split=0.2, fraction=1.0)
    again = prepare_data("cifar10", str(cifar_root), val_split=0.2, fraction=1.0)
    assert not load_cache and torch.equal(first.train_x, again.train_x) and torch.equal(first.val_y, again.val_y)


def test_prepare_data_errors_name_fields(cifar_root):
    with pytest.raises(UserError, match="^data.fraction: "):
        prepare_data("cifar10", str(cifar_root), val_split=60, fraction=0.01)
    with pytest.raises(UserError, match="^data.val_split: "):
        prepare_data("cifar10", str(cifar_root), val_split=300, fraction=1.0)


def test_bundle_to_device_keeps_dtypes(cifar_root):
    bundle = prepare_data("cifar10", str(cifar_root), val_split=30, fraction=1.0)
    moved = bundle.to("meta")  # a real move, without needing a GPU
    assert moved.train_x.device.type == "meta" and moved.test_y.device.type == "meta"
    assert moved.train_x.dtype == torch.uint8 and moved.val_y.dtype == torch.int64
    assert moved.info is bundle.info and bundle.train_x.device.type == "cpu"


def test_load_cache_is_keyed_by_resolved_root(cifar_root, monkeypatch):
    monkeypatch.chdir(cifar_root.parent)
    prepare_data("cifar10", str(cifar_root), val_split=30, fraction=1.0)
    shutil.rmtree(cifar_root / "cifar-10-batches-py")  # a second read would now fail
    prepare_data("cifar10", cifar_root.name, val_split=30, fraction=1.0)
    assert list(load_cache) == [("cifar10", str(cifar_root.resolve()))]


# ---------------------------------------------------------------- augmentation


def test_to_float_range_and_memory_format():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last
    )
    f = to_float(x)
    assert f.dtype == torch.float32 and f.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(f * 255, x.float()) and 0 <= f.min() and f.max() <= 1


def _batch(n=64, c=3, size=12, channels_last=False) -> torch.Tensor:
    x = torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(0)) * 0.99 + 0.01
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("channels_last", [False, True])
def test_augment_keeps_range_shape_format_and_is_reproducible(channels_last):
    x = _batch(channels_last=channels_last)
    out = augment_batch(x, crop_padding=4, flip=True, generator=torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0 <= out.min() and out.max() <= 1
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    again = augment_batch(x, crop_padding=4, flip=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, again)
    other = augment_batch(x, crop_padding=4, flip=True, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(out, other)


def test_flip_only_flips_some_images_exactly():
    x = _batch()
    out = augment_batch(x, crop_padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([not torch.equal(o, i) for o, i in zip(out, x)])
    assert 0 < flipped.sum() < len(x)
    assert torch.equal(out[flipped], torch.flip(x[flipped], dims=[3]))
    assert torch.equal(out[~flipped], x[~flipped])


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    p, size = 3, 10
    x = _batch(n=32, c=2, size=size)
    out = augment_batch(x, crop_padding=p, flip=False, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = []
    for o, pad in zip(out, padded):
        windows = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if torch.equal(o, pad[:, dy:dy + size, dx:dx + size])]
        assert len(windows) == 1  # pixels are > 0, so only the true window matches
        offsets.append(windows[0])
    assert len(set(offsets)) > 5  # offsets vary per image
    assert (out == 0).any()  # shifted crops bring in zero padding


def test_augment_noop_returns_input():
    x = _batch(n=4)
    assert augment_batch(x, crop_padding=0, flip=False, generator=None) is x
