"""Threat models through torchattacks: natural, FGSM with random start, PGD-k, AutoAttack.

Images are in [0, 1] and normalisation lives inside the model, so eps and step sizes are in pixel
units (8/255 is the CIFAR standard) and torchattacks needs no normalisation settings of its own.
torchattacks runs its attack passes in eval mode and restores the model's mode afterwards, so batch
norm statistics are not updated by adversarial search steps.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor, nn

from ticketsearch.core.batchnorm_folding import conv_bn_pairs, folded
from ticketsearch.registry import Registry
from ticketsearch.spec import AttackConfig


class Perturb(Protocol):
    def __call__(self, images: Tensor, labels: Tensor) -> Tensor: ...


AttackBuilder = Callable[[nn.Module, AttackConfig, int], Perturb]
ATTACKS: Registry[AttackBuilder] = Registry("attack")


@ATTACKS.register("natural")
def natural(model: nn.Module, config: AttackConfig, num_classes: int) -> Perturb:
    """No attack: the images themselves (natural training and clean evaluation)."""
    return lambda images, labels: images


@ATTACKS.register("fgsm")
def fgsm_random_start(model: nn.Module, config: AttackConfig, num_classes: int) -> Perturb:
    """FGSM from a uniform random start in the eps-ball, step alpha (Wong, Rice & Kolter 2020)."""
    import torchattacks  # on first use: it imports scipy.stats, which a search driver never needs

    if not config.random_start:
        return torchattacks.FGSM(model, eps=config.eps)
    return torchattacks.FFGSM(model, eps=config.eps, alpha=config.step_size)


@ATTACKS.register("pgd")
def pgd(model: nn.Module, config: AttackConfig, num_classes: int) -> Perturb:
    """L-inf PGD with `steps` steps of size alpha, optionally from a random start (Madry et al. 2018)."""
    import torchattacks

    return torchattacks.PGD(
        model, eps=config.eps, alpha=config.step_size, steps=config.steps, random_start=config.random_start
    )


@ATTACKS.register("autoattack")
def autoattack(model: nn.Module, config: AttackConfig, num_classes: int) -> Perturb:
    """AutoAttack, standard version (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square. Evaluation only."""
    import torchattacks

    return torchattacks.AutoAttack(model, norm="Linf", eps=config.eps, version="standard", n_classes=num_classes, seed=0)


def build_attack(model: nn.Module, config: AttackConfig, num_classes: int, field: str, *,
                 fold_batchnorm: bool = False) -> Perturb:
    """The attack `config` describes on `model`; `field` names the spec field in errors.

    Its passes differentiate with respect to the images only (`InputGradientAttack`), and with
    `fold_batchnorm` (the fast path's) they run with each batch norm folded into the conv before it.
    AutoAttack is left as torchattacks builds it: the reported figure runs on the model as it is.
    """
    attack = ATTACKS.get(config.kind, field=f"{field}.kind")(model, config, num_classes)
    if not is_adversarial(config) or config.kind == "autoattack":
        return attack
    return InputGradientAttack(attack, model, fold_batchnorm=fold_batchnorm)


class InputGradientAttack:
    """`attack` with `model`'s parameters frozen during its passes, and optionally its batch norms
    folded (core/batchnorm_folding.py); the same perturbation up to float rounding.

    Why freeze: an attack needs the gradient with respect to the images only. Eager autograd skips
    the weight gradients by itself, but a compiled model's backward is one graph that computes every
    gradient its inputs require: ResNet-20 PGD-10 training under `torch.compile` on CPU took 1.4x
    longer per epoch with the parameters left requiring gradients (measured, BENCHMARKS.md).
    """

    def __init__(self, attack: Perturb, model: nn.Module, *, fold_batchnorm: bool):
        self.attack = attack
        self.model = model
        self.pairs = conv_bn_pairs(model) if fold_batchnorm else []

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        # Read at each call: a trainer may replace a layer (transfer's classifier) after building.
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        with folded(self.pairs):  # no pairs: nothing swapped
            for parameter in trainable:
                parameter.requires_grad_(False)
            try:
                return self.attack(images, labels)
            finally:
                for parameter in trainable:
                    parameter.requires_grad_(True)


def is_adversarial(config: AttackConfig) -> bool:
    return config.kind != "natural" and config.eps > 0


@torch.no_grad()
def predictions(model: nn.Module, images: Tensor) -> Tensor:
    return model(images).argmax(dim=1)
