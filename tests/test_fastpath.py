"""The fast path (core/fastpath.py): bf16 autocast, channels-last, compile; nothing here is timed.

bf16 autocast runs on CPU too (emulated, slowly), which is how these tests check on a machine without
a GPU that it keeps the eps bound and the masks exact and learns as well as fp32.
"""

import warnings

import pytest
import torch

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.data import prepare_data
from ticketsearch.core.fastpath import FastPath, resolve_fastpath
from ticketsearch.core.loops import Augmentation, train_epoch
from ticketsearch.core.models import create_model
from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights
from ticketsearch.errors import UserError
from ticketsearch.spec import AttackConfig
from ticketsearch.trainers import create_trainer

from test_imp import comparable
from tiny import tiny_config

BF16 = FastPath(device_type="cpu", autocast_dtype=torch.bfloat16)
FP32 = FastPath(device_type="cpu")


@pytest.fixture(scope="module")
def digits():
    # Half the training images: emulated bf16 on CPU is slow, and the comparison needs no more.
    return prepare_data("digits", "~/data", val_split=200, fraction=0.5)


def test_precision_resolves_per_device_and_bad_values_name_the_field():
    assert resolve_fastpath("auto", False, "cpu") == FP32  # no bf16 units on these CPUs: fp32
    assert resolve_fastpath("fp32", False, "cpu").autocast_dtype is None
    assert resolve_fastpath("bf16", True, "cpu") == FastPath("cpu", torch.bfloat16, torch.channels_last, compile=True)
    with pytest.raises(UserError, match=r"^train\.precision: unknown precision 'fp16'; known: auto, fp32, bf16$"):
        resolve_fastpath("fp16", False, "cpu")
    with pytest.raises(UserError, match=r"train\.precision"):
        tiny_config(**{"train.precision": "fp16"})
    with pytest.raises(UserError, match=r"train\.compile"):
        tiny_config(**{"train.compile": "sometimes"})
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
        assert resolve_fastpath("auto", False, "cuda").autocast_dtype == torch.bfloat16
        assert torch.backends.cudnn.benchmark


@pytest.mark.parametrize("fastpath", [FP32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["pgd", "fgsm"])
@pytest.mark.parametrize("fold", [False, True], ids=["bn", "bn-folded"])
def test_eps_bound_is_exact_under_autocast(kind, fastpath, fold):
    torch.manual_seed(0)
    model = create_model("resnet20", width=0.25, num_classes=10, in_channels=3,
                         mean=(0.5,) * 3, std=(0.25,) * 3).to(memory_format=torch.channels_last)
    eps = 8 / 255
    attack = build_attack(model, AttackConfig(kind=kind, eps=eps, steps=3), 10, "attack.train", fold_batchnorm=fold)
    x = torch.rand(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    with fastpath.autocast():
        x_adv = attack(x, y)
        logits = model(x_adv)
    assert x_adv.dtype == torch.float32  # autocast casts inside the convs only
    assert logits.dtype == (torch.bfloat16 if fastpath.autocast_dtype else torch.float32)
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert (x_adv - x).abs().max().item() > eps / 2, "the attack moved the images"
    assert 0 <= x_adv.min().item() and x_adv.max().item() <= 1


def test_train_epoch_under_autocast_keeps_masks_exact_and_weights_fp32(digits):
    torch.manual_seed(0)
    model = create_model("small_cnn", width=0.5, num_classes=10, in_channels=1,
                         mean=(0.5,), std=(0.25,)).to(memory_format=torch.channels_last)
    weights = prunable_weights(model)
    mask = magnitude_prune(weights, Mask.ones(weights), 0.8, "global")
    apply = MaskApplier(weights, mask)
    apply()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    attack = build_attack(model, AttackConfig(kind="pgd", eps=0.1, steps=2), 10, "attack.train",
                          fold_batchnorm=BF16.fold_batchnorm)  # as the trainers build it
    x, y = digits.train_x[:256], digits.train_y[:256]
    result = train_epoch(model, optimizer, x, y, batch_size=64, attack=attack,
                         after_step=apply, lr_for_step=lambda step: 0.05, first_step=0,
                         shuffle=torch.Generator().manual_seed(0), augmentation=Augmentation(0, False),
                         augment_generator=None, fastpath=BF16)
    assert result.loss == result.loss and result.steps == 4
    for name, w in weights.items():
        assert w.dtype == torch.float32
        assert bool((w[mask.tensors[name] == 0] == 0).all()), f"{name}: a pruned weight is not exactly 0"
        assert bool((w[mask.tensors[name] == 1] != 0).any())


def test_fast_path_on_and_off_learn_the_same_on_a_tiny_trial(digits):
    """bf16 autocast against fp32 on the tiny trial (dense round only: the loop test above covers
    masks under autocast): the same accuracy within noise."""
    summaries = {}
    for precision in ("fp32", "bf16"):
        config = tiny_config(**{"train.precision": precision, "train.epochs": 3, "model.width": 0.5,
                                "prune.rounds": 0, "trainer.test_eval": False})
        trainer = create_trainer(config, digits)
        records = list(trainer)
        assert trainer.status == "completed"
        assert trainer.fastpath.autocast_dtype == (torch.bfloat16 if precision == "bf16" else None)
        summaries[precision] = records[-1]
    fp32, bf16 = summaries["fp32"], summaries["bf16"]
    assert fp32.val_clean_acc > 0.6 and bf16.val_clean_acc > 0.6  # chance is 0.1
    # 200 validation examples (100 evaluated): 0.1 is several standard errors of a binomial at these rates.
    assert abs(fp32.val_clean_acc - bf16.val_clean_acc) <= 0.1
    assert abs(fp32.val_robust_acc - bf16.val_robust_acc) <= 0.1


def test_cpu_default_is_fp32_uncompiled_and_reproducible(digits):
    config = tiny_config(**{"train.epochs": 1, "trainer.test_eval": False, "prune.rounds": 0})
    first = create_trainer(config, digits)
    assert first.fastpath == FP32 and first.forward is first.model
    explicit = create_trainer(tiny_config(**{"train.epochs": 1, "trainer.test_eval": False, "prune.rounds": 0,
                                              "train.precision": "fp32"}), digits)
    # Two separate runs, the default and fp32 spelled out: two levels (a level's name holds the precision
    # asked for), the same records to the last bit (its random stream does not).
    default, fp32 = comparable(list(first)), comparable(list(explicit))
    assert default[0]["level"] != fp32[0]["level"]
    assert [{**r, "level": ""} for r in default] == [{**r, "level": ""} for r in fp32]


def test_compiled_forward_shares_parameters_and_agrees():
    torch.manual_seed(0)
    model = create_model("small_cnn", width=0.25, num_classes=10, in_channels=1, mean=(0.5,), std=(0.25,))
    compiled = FastPath(compile=True).forward_module(model)
    assert FP32.forward_module(model) is model
    assert {id(p) for p in compiled.parameters()} == {id(p) for p in model.parameters()}
    compiled.eval()
    assert not model.training  # mode changes reach the model, as torchattacks needs
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
    # torchattacks drives the compiled wrapper: input gradients through it, and the mode restored
    compiled.train()
    attack = build_attack(compiled, AttackConfig(kind="pgd", eps=0.1, steps=2), 10, "attack.train")
    x_adv = attack(x, torch.randint(0, 10, (4,)))
    assert model.training and 0.05 < (x_adv - x).abs().max().item() <= 0.1 + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host synchronisation is a CUDA matter")
def test_no_host_sync_inside_training_steps():
    """A step of PGD training reads nothing back: torch flags every synchronising call (.item(), bool
    of a tensor, nonzero, a blocking copy) in sync-debug mode. An epoch of 4 steps may have the two at
    its edges, the shuffled order copied to the GPU and the one read-back (tolist), and no more."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    fastpath = resolve_fastpath("auto", False, device)
    model = create_model("resnet20", width=0.5, num_classes=10, in_channels=3, mean=(0.5,) * 3,
                         std=(0.25,) * 3).to(device, memory_format=torch.channels_last)
    weights = prunable_weights(model)
    apply = MaskApplier(weights, magnitude_prune(weights, Mask.ones(weights), 0.5, "global"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    attack = build_attack(model, AttackConfig(kind="pgd", eps=8 / 255, steps=3), 10, "attack.train",
                          fold_batchnorm=fastpath.fold_batchnorm)  # as the trainers build it
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (256,), device=device)
    kwargs = dict(batch_size=64, attack=attack, after_step=apply, lr_for_step=lambda step: 0.05, first_step=0,
                  augmentation=Augmentation(4, True), augment_generator=torch.Generator(device).manual_seed(1),
                  fastpath=fastpath)
    train_epoch(model, optimizer, x, y, shuffle=torch.Generator().manual_seed(0), **kwargs)  # warm-up
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_epoch(model, optimizer, x, y, shuffle=torch.Generator().manual_seed(0), **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 2, [str(w.message) for w in syncs]


def test_crop_and_flip_in_one_gather_is_crop_then_flip():
    """augment_batch folds the flip into the crop's column indices (one gather, no flipped copy); the
    result must be the crop followed by the flip of the drawn images, as two separate steps give."""
    from ticketsearch.core.data.augment import augment_batch

    x = torch.rand(33, 3, 12, 10).contiguous(memory_format=torch.channels_last)
    both = augment_batch(x, crop_padding=4, flip=True, generator=torch.Generator().manual_seed(3))
    crop = augment_batch(x, crop_padding=4, flip=False, generator=torch.Generator().manual_seed(3))
    draws = torch.Generator().manual_seed(3)
    torch.randint(0, 9, (2, 33), generator=draws)  # the crop offsets, drawn first
    coin = torch.rand(33, generator=draws) < 0.5
    assert 0 < int(coin.sum()) < 33
    assert torch.equal(both, torch.where(coin[:, None, None, None], crop.flip(3), crop))
    assert both.is_contiguous(memory_format=torch.channels_last)
