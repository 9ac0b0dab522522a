"""Batch norms folded into convs for the attack passes (core/batchnorm_folding.py): the same function,
the same attack, training untouched."""

import pytest
import torch
from torch import nn

from ticketsearch.core.attacks import InputGradientAttack, build_attack
from ticketsearch.core.batchnorm_folding import conv_bn_pairs, folded
from ticketsearch.core.data import prepare_data
from ticketsearch.core.loops import Augmentation, train_epoch
from ticketsearch.core.models import MODELS, create_model
from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights
from ticketsearch.spec import AttackConfig

# How many of each bundled model's batch norms follow a conv whose output feeds nothing else: all of
# them in post-activation nets; in pre-activation nets only the one inside each block (the others
# normalise a sum of branches or the block's input).
FOLDABLE = {"resnet20": (21, 21), "resnet18": (20, 20), "vgg16_bn": (13, 13), "small_cnn": (3, 3),
            "preact_resnet18": (8, 17), "wide_resnet": (16, 31)}


def _model(arch, **kwargs):
    width = 1.0 if arch in ("resnet18", "resnet50") else 0.25
    model = create_model(arch, width=width, num_classes=10, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, **kwargs)
    # Statistics and affine parameters away from the identity, so a wrong fold shows.
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                      (module.weight.data, 0.5, 1.5), (module.bias.data, -0.2, 0.2)):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model


@pytest.mark.parametrize("arch", MODELS.names())
def test_folded_model_computes_the_same_logits_and_input_gradients(arch):
    torch.manual_seed(0)
    # float64: the fold is exact up to rounding, and in fp32 a rounding-level change can flip a ReLU or
    # a max-pool choice near a tie and move a few input-gradient entries (ResNet-50, 2 threads: 1% of
    # the gradient's norm in fp32, 4e-15 in float64).
    model = _model(arch).to(torch.float64, memory_format=torch.channels_last).eval()
    pairs = conv_bn_pairs(model)
    batch_norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    if arch in FOLDABLE:
        assert (len(pairs), batch_norms) == FOLDABLE[arch]
    assert pairs or batch_norms == 0, f"{arch}: nothing folded"  # the certified-training nets have no batch norm
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    logits = model(x)
    (gradient,) = torch.autograd.grad(logits.logsumexp(1).sum(), x)
    with folded(pairs):
        folded_logits = model(x)
        (folded_gradient,) = torch.autograd.grad(folded_logits.logsumexp(1).sum(), x)
    torch.testing.assert_close(folded_logits, logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(folded_gradient, gradient, rtol=1e-10, atol=1e-10 * gradient.abs().max().item())
    # the modules are themselves again: no forward left behind, parameters unchanged
    assert all("forward" not in conv.__dict__ and "forward" not in bn.__dict__ for conv, bn in pairs)
    torch.testing.assert_close(model(x), logits, rtol=0, atol=0)


def test_a_model_fx_cannot_trace_folds_its_body():
    # input_size makes ImageClassifier branch on the input's shape: fx fails there, its body traces.
    model = _model("resnet20", input_size=32).eval()
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(model)
    assert len(conv_bn_pairs(model)) == 21
    x = torch.rand(2, 3, 24, 24)  # resized inside the model
    with torch.no_grad(), folded(conv_bn_pairs(model)):
        folded_logits = model(x)
    torch.testing.assert_close(folded_logits, model(x), rtol=1e-4, atol=1e-4)


def test_train_mode_batch_norm_is_untouched_inside_the_fold():
    torch.manual_seed(0)
    model = _model("resnet20").train()
    torch.manual_seed(0)
    reference = _model("resnet20").train()
    x = torch.rand(8, 3, 32, 32)
    with folded(conv_bn_pairs(model)):
        logits = model(x)  # batch statistics, running statistics updated, as without folding
    torch.testing.assert_close(logits, reference(x), rtol=0, atol=0)
    torch.testing.assert_close(model.body.layers[0].bn1.running_mean, reference.body.layers[0].bn1.running_mean, rtol=0, atol=0)


def test_folded_attack_matches_the_attack_and_follows_each_optimiser_step():
    torch.manual_seed(0)
    model = _model("resnet20").to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    config = AttackConfig(kind="pgd", eps=8 / 255, alpha=2 / 255, steps=5)
    attack = build_attack(model, config, 10, "attack.train")
    fold = build_attack(model, config, 10, "attack.train", fold_batchnorm=True)
    assert len(fold.pairs) == 21 and attack.pairs == []
    autoattack = build_attack(model, AttackConfig(kind="autoattack", eps=8 / 255), 10, "attack.eval", fold_batchnorm=True)
    assert not isinstance(autoattack, InputGradientAttack)  # the reported figure runs on the model as it is
    x = torch.rand(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    for _ in range(2):
        model.train()
        torch.manual_seed(1)
        expected = attack(x, y)
        torch.manual_seed(1)
        got = fold(x, y)
        assert model.training  # torchattacks restored the mode around the folded passes
        assert all(p.requires_grad for p in model.parameters())  # unfrozen after the passes
        assert (got - x).abs().max().item() <= 8 / 255 + 1e-7
        # Sign steps: a gradient entry within float rounding of 0 may flip; all but a few agree.
        assert (got == expected).float().mean().item() > 0.99
        # a training step moves every weight and the running statistics: the next attack must see them
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_training_with_folded_attacks_learns_the_same_and_keeps_masks_exact():
    digits = prepare_data("digits", "~/data", val_split=200, fraction=1.0)
    results = {}
    for fold in (False, True):
        torch.manual_seed(0)
        model = create_model("small_cnn", width=0.5, num_classes=10, in_channels=1,
                             mean=(0.5,), std=(0.25,)).to(memory_format=torch.channels_last)
        weights = prunable_weights(model)
        mask = magnitude_prune(weights, Mask.ones(weights), 0.5, "global")
        apply = MaskApplier(weights, mask)
        apply()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        attack = build_attack(model, AttackConfig(kind="pgd", eps=0.1, steps=3), 10, "attack.train", fold_batchnorm=fold)
        shuffle = torch.Generator().manual_seed(0)
        for _ in range(5):
            result = train_epoch(model, optimizer, digits.train_x, digits.train_y, batch_size=64, attack=attack,
                                 after_step=apply, lr_for_step=lambda step: 0.05, first_step=0, shuffle=shuffle,
                                 augmentation=Augmentation(0, False), augment_generator=None)
        for name, w in weights.items():
            assert bool((w[mask.tensors[name] == 0] == 0).all()), f"{name}: a pruned weight is not exactly 0"
        results[fold] = result
    assert results[False].accuracy > 0.6  # adversarial training accuracy on digits; chance is 0.1
    assert abs(results[True].loss - results[False].loss) < 0.05 * results[False].loss
    assert abs(results[True].accuracy - results[False].accuracy) < 0.03


def test_folded_attack_under_bf16_autocast_is_as_faithful_as_the_unfolded_one():
    """The GPU default (bf16 autocast, folded): bf16 rounding alone changes many of PGD's sign steps,
    and folding must not add to that: measured against the fp32 attack, the folded and unfolded bf16
    attacks agree on about the same share of pixels (63.8% and 63.5% here)."""
    torch.manual_seed(0)
    model = _model("resnet20").to(memory_format=torch.channels_last)
    config = AttackConfig(kind="pgd", eps=8 / 255, alpha=2 / 255, steps=5)
    plain = build_attack(model, config, 10, "attack.train")
    fold = build_attack(model, config, 10, "attack.train", fold_batchnorm=True)
    x = torch.rand(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    torch.manual_seed(1)
    fp32 = plain(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        bf16 = plain(x, y)
        torch.manual_seed(1)
        bf16_folded = fold(x, y)
    assert bf16_folded.dtype == torch.float32 and (bf16_folded - x).abs().max().item() <= 8 / 255 + 1e-6
    unfolded_agreement = (bf16 == fp32).float().mean().item()
    folded_agreement = (bf16_folded == fp32).float().mean().item()
    assert folded_agreement > unfolded_agreement - 0.05, (folded_agreement, unfolded_agreement)
