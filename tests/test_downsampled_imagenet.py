"""Downsampled ImageNet (16/32/64 px): the real file formats, torchvision's class order, cheap node
checks, one-line errors, and IMP on it as a transfer trainer's source task."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from fake_datasets import imagenet_wnid, write_downsampled_imagenet
from ticketsearch.core.data import check_raw, load_raw, prepare_data
from ticketsearch.core.models import create_model
from ticketsearch.errors import UserError
from ticketsearch.trainers import create_trainer

from test_transfer import transfer_config


@pytest.mark.parametrize("size,npz", [(16, False), (32, True), (64, False)])
def test_loads_what_was_written_in_torchvision_class_order(tmp_path, size, npz):
    written = write_downsampled_imagenet(tmp_path, size=size, npz=npz)
    raw = load_raw(f"imagenet{size}", tmp_path)
    assert raw.train_x.dtype == torch.uint8 and raw.train_x.shape == (60, 3, size, size)
    assert torch.equal(raw.train_x, torch.from_numpy(written.train_x))
    assert torch.equal(raw.test_x, torch.from_numpy(written.test_x))
    # ILSVRC id k (the files' numbering) is torchvision's class 1000 - k in these made-up WordNet ids
    assert torch.equal(raw.train_y, torch.from_numpy(written.train_y))
    assert torch.equal(raw.test_y, torch.from_numpy(written.test_y))
    assert raw.info.num_classes == 1000 and raw.info.crop_padding == size // 8 and raw.info.flip


def test_a_real_class_order_is_sorted_wordnet_ids(tmp_path):
    write_downsampled_imagenet(tmp_path, classes=3)
    # The devkit numbers kit fox 1, English setter 2, Siberian husky 3; torchvision sorts the ids.
    real = {1: "n02119789", 2: "n02100735", 3: "n02110185"}
    lines = [f"{real.get(k, imagenet_wnid(k))} {k} c{k}" for k in range(1, 1001)]
    (tmp_path / "imagenet16" / "map_clsloc.txt").write_text("\n".join(lines) + "\n")
    raw = load_raw("imagenet16", tmp_path)
    wnids = sorted(real.get(k, imagenet_wnid(k)) for k in range(1, 1001))
    expected = {wnids.index(real[k]) for k in (1, 2, 3)}
    assert set(raw.train_y.tolist()) == expected


def test_absent_files_name_the_file_and_where_to_get_them(tmp_path):
    for check in (load_raw, check_raw):
        with pytest.raises(UserError) as err:
            check("imagenet32", tmp_path)
        message = str(err.value)
        assert "\n" not in message and message.startswith("data.root: imagenet32 not found under")
        assert "imagenet32/train_data_batch_1" in message and "image-net.org" in message
    write_downsampled_imagenet(tmp_path, size=32)
    (tmp_path / "imagenet32" / "map_clsloc.txt").unlink()
    with pytest.raises(UserError, match="missing imagenet32/map_clsloc.txt.*CLS-LOC devkit"):
        load_raw("imagenet32", tmp_path)


def test_node_check_reads_no_images_and_load_names_a_bad_file(tmp_path):
    write_downsampled_imagenet(tmp_path)
    (tmp_path / "imagenet16" / "val_data").write_bytes(b"truncated")
    check_raw("imagenet16", tmp_path)  # the files are there: a node passes the pre-flight check
    with pytest.raises(UserError, match=r"could not read .*imagenet16/val_data as imagenet16 \(UnpicklingError"):
        load_raw("imagenet16", tmp_path)


def test_another_resolution_and_a_bad_class_map_are_refused(tmp_path):
    write_downsampled_imagenet(tmp_path, size=16)
    shutil.copytree(tmp_path / "imagenet16", tmp_path / "imagenet32")
    with pytest.raises(UserError, match=r"expected N x 3072 uint8 rows .* of another resolution"):
        load_raw("imagenet32", tmp_path)
    class_map = tmp_path / "imagenet16" / "map_clsloc.txt"
    class_map.write_text("".join(class_map.read_text().splitlines(keepends=True)[:999]))
    for check in (load_raw, check_raw):
        with pytest.raises(UserError, match="must name 1000 distinct WordNet ids numbered 1..1000, got 999"):
            check("imagenet16", tmp_path)
    class_map.write_text("n01440764 one tench\n")
    with pytest.raises(UserError, match="line 1: expected 'wnid id name'"):
        load_raw("imagenet16", tmp_path)


def test_class_subsets_and_splits_work_on_1000_classes(tmp_path):
    written = write_downsampled_imagenet(tmp_path, n_train=100, classes=5)
    present = sorted(set(written.train_y.tolist()))  # 995..999 in torchvision's order
    bundle = prepare_data("imagenet16", str(tmp_path), val_split=10, fraction=0.5, classes=present)
    assert bundle.info.num_classes == 5 and len(bundle.val_y) == 10 and len(bundle.train_y) == 45
    assert torch.bincount(bundle.val_y, minlength=5).tolist() == [2] * 5


def test_imp_on_downsampled_imagenet_from_1000_class_weights(tmp_path):
    """The double-win procedure at low resolution: IMP on ImageNet from ImageNet weights (a network
    with a 1000-class head, as torchvision's are), then fine-tuning downstream."""
    write_downsampled_imagenet(tmp_path, n_train=120, classes=6)
    weights = tmp_path / "imagenet-weights.pt"
    model = create_model("small_cnn", width=0.25, num_classes=1000, in_channels=3,
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    torch.save(model.state_dict(), weights)
    config = transfer_config({"file": str(weights)}, **{
        "transfer.ticket": "imp", "transfer.finetune": ["standard"],
        "transfer.source": {"dataset": "imagenet16", "root": str(tmp_path), "val_split": 12},
        "prune.ratio": 0.5, "prune.rounds": 2, "prune.find_epochs": 1})
    trainer = create_trainer(config, levels_dir=tmp_path / "cache")
    records = list(trainer)
    # Two IMP rounds on the source, the dense network fine-tuned, the ticket fine-tuned.
    assert [(r.role, r.phase) for r in records] == [("find", "find"), ("find", "find"),
                                                    ("reference", "finetune_standard"), ("ticket", "finetune_standard")]
    assert trainer.sparsity == pytest.approx(1 - 0.5 ** 2, abs=1e-3)
    summary = trainer.summary()
    assert np.isfinite(summary["source_val_clean_acc"]) and summary["find_seconds"] > 0
    assert trainer.model.classifier.out_features == 3
