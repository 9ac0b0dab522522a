"""Threat models through torchattacks: natural, FGSM with random start, PGD-k, the inner
maximisations of TRADES and MART, and AutoAttack's standard version; the certified training regimes
(ibp, crown_ibp) are registered here too, with no attack of their own.

Images are in [0, 1] and normalisation lives inside the model, so eps and step sizes are in pixel
units (8/255 is the CIFAR standard) and torchattacks needs no normalisation settings of its own.
Called directly, an attack runs its passes in eval mode (torchattacks' default) and restores the
model's mode afterwards: that is how every evaluation attack runs. Training examples are generated
through `training_examples(attack)`, in the batch-norm mode of the regime (`AttackConfig.bn_mode`);
in train mode the running statistics are restored after the attack, so its passes never move them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

import torch
from torch import Tensor, nn

from ticketsearch.core.batchnorm_folding import conv_bn_pairs, folded
from ticketsearch.errors import UserError
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


@ATTACKS.register("trades")
def trades_kl_pgd(model: nn.Module, config: AttackConfig, num_classes: int) -> Perturb:
    """TRADES' inner maximisation (Zhang et al. 2019): PGD on KL(f(x) || f(x')) from x + 0.001 N(0, 1),
    `steps` steps of size alpha (torchattacks' TPGD). The loss is in core/training_objectives.py."""
    import torchattacks

    return torchattacks.TPGD(model, eps=config.eps, alpha=config.step_size, steps=config.steps)


# The start of TRADES' and MART's inner maximisation in their reference code: x + 0.001 N(0, 1), a nudge
# off the clean point (where TRADES' KL term has a zero gradient; MART's code starts the same way), not
# a uniform draw from the eps-ball.
SMALL_START_STD = 0.001


def small_gaussian_start(images: Tensor) -> Tensor:
    """x + 0.001 N(0, 1), drawn from the global torch generator (the trial's random stream), unclamped as
    in MART's reference code (every step after it clamps to the eps-ball and to [0, 1])."""
    return images + SMALL_START_STD * torch.randn_like(images)


@ATTACKS.register("mart")
def mart_ce_pgd(model: nn.Module, config: AttackConfig, num_classes: int) -> Perturb:
    """MART's inner maximisation (Wang et al. 2020): PGD on the cross-entropy from x + 0.001 N(0, 1)
    (`small_gaussian_start`), as their reference code (YisenWang/MART, `mart_loss`) starts it, not from
    a uniform point in the eps-ball; `steps` steps of size alpha; `random_start` is not read (as for
    TRADES). The loss is in core/training_objectives.py."""
    import torchattacks

    class MartPGD(torchattacks.PGD):
        def forward(self, images: Tensor, labels: Tensor) -> Tensor:
            images, labels = images.clone().detach().to(self.device), labels.clone().detach().to(self.device)
            adv = small_gaussian_start(images).detach()
            for _ in range(self.steps):
                adv.requires_grad = True
                cost = nn.functional.cross_entropy(self.get_logits(adv), labels)
                grad = torch.autograd.grad(cost, adv)[0]
                adv = adv.detach() + self.alpha * grad.sign()
                adv = torch.clamp(images + torch.clamp(adv - images, -self.eps, self.eps), 0, 1).detach()
            return adv

    return MartPGD(model, eps=config.eps, alpha=config.step_size, steps=config.steps, random_start=False)


@ATTACKS.register("ibp")
@ATTACKS.register("crown_ibp")
def certified_regime(model: nn.Module, config: AttackConfig, num_classes: int) -> Perturb:
    """Certified training (IBP, Gowal et al. 2018; CROWN-IBP, Zhang et al. 2020) runs no attack: its
    loss bounds the whole eps-ball (core/training_objectives.py, core/certify.py). The images as they are."""
    return lambda images, labels: images

# AutoAttack's standard version (Croce & Hein 2020, RobustBench): these settings, not torchattacks'
# AutoAttack class, which builds APGD and APGD-T with 10 iterations.
AUTOATTACK_ITERATIONS = 100  # APGD-CE, APGD-T and FAB-T, one restart each
AUTOATTACK_TARGET_CLASSES = 9  # APGD-T and FAB-T, or every other class when there are fewer
AUTOATTACK_SQUARE_QUERIES = 5000
# APGD-T's targeted DLR loss divides by the gap between the largest logit and the 3rd and 4th largest.
AUTOATTACK_MIN_CLASSES = 4


def check_autoattack_classes(num_classes: int, field: str = "attack.test_autoattack") -> None:
    """Refuse a task AutoAttack's standard version is not defined on (fewer than 4 classes)."""
    if num_classes < AUTOATTACK_MIN_CLASSES:
        raise UserError(
            f"{field}: AutoAttack's standard version needs at least {AUTOATTACK_MIN_CLASSES} classes (APGD-T's "
            f"targeted DLR loss compares the 4 largest logits); this task has {num_classes}: set it to false"
        )


@ATTACKS.register("autoattack")
def autoattack(model: nn.Module, config: AttackConfig, num_classes: int) -> Perturb:
    """AutoAttack, standard version (Croce & Hein 2020), L-inf at eps: APGD-CE (100 iterations, no
    restarts), APGD-T (100 iterations, 9 target classes), FAB-T (100 iterations, 9 target classes) and
    Square (5,000 queries, p_init 0.8, no rescaled schedule), each run only on the images every attack
    before it failed on (torchattacks' MultiAttack). Evaluation only; a lighter variant would need its
    own name."""
    import torchattacks

    check_autoattack_classes(num_classes)
    targets = min(AUTOATTACK_TARGET_CLASSES, num_classes - 1)
    common = dict(norm="Linf", eps=config.eps, seed=0)
    apgd_t = torchattacks.APGDT(model, steps=AUTOATTACK_ITERATIONS, n_restarts=1, n_classes=num_classes, **common)
    fab_t = torchattacks.FAB(model, steps=AUTOATTACK_ITERATIONS, n_restarts=1, multi_targeted=True,
                             n_classes=num_classes, **common)
    for targeted in (apgd_t, fab_t):
        targeted.n_target_classes = targets  # their constructors take every other class
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, loss="ce", steps=AUTOATTACK_ITERATIONS, n_restarts=1, **common),
        apgd_t,
        fab_t,
        torchattacks.Square(model, n_queries=AUTOATTACK_SQUARE_QUERIES, n_restarts=1, p_init=0.8,
                            resc_schedule=False, **common),
    ])


def build_attack(model: nn.Module, config: AttackConfig, num_classes: int, field: str, *,
                 fold_batchnorm: bool = False) -> Perturb:
    """The attack `config` describes on `model`; `field` names the spec field in errors.

    Its passes differentiate with respect to the images only (`InputGradientAttack`), and with
    `fold_batchnorm` (the fast path's) its eval-mode passes run with each batch norm folded into the
    conv before it. AutoAttack is left as built: the reported figure runs on the model as it is.
    """
    attack = ATTACKS.get(config.kind, field=f"{field}.kind")(model, config, num_classes)
    if not is_adversarial(config) or config.kind == "autoattack":
        return attack
    return InputGradientAttack(attack, model, config, fold_batchnorm=fold_batchnorm)


def training_examples(attack: Perturb) -> Perturb:
    """`attack` as it generates training examples: in its regime's batch-norm mode (a plain callable
    such as `natural`'s is used as it is)."""
    return attack.training_examples if isinstance(attack, InputGradientAttack) else attack


def regime_of(attack: Perturb) -> AttackConfig | None:
    """The configuration an attack was built from (None for natural training and plain callables)."""
    return attack.config if isinstance(attack, InputGradientAttack) else None


class InputGradientAttack:
    """`attack` with `model`'s parameters frozen during its passes, and optionally its batch norms
    folded (core/batchnorm_folding.py) in eval mode; the same perturbation up to float rounding.

    Why freeze: an attack needs the gradient with respect to the images only. Eager autograd skips
    the weight gradients by itself, but a compiled model's backward is one graph that computes every
    gradient its inputs require: ResNet-20 PGD-10 training under `torch.compile` on CPU took 1.4x
    longer per epoch with the parameters left requiring gradients (measured, BENCHMARKS.md).
    """

    def __init__(self, attack: Perturb, model: nn.Module, config: AttackConfig, *, fold_batchnorm: bool):
        self.attack = attack
        self.model = model
        self.config = config
        self.pairs = conv_bn_pairs(model) if fold_batchnorm else []

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        """Eval-mode passes (as every evaluation runs), batch norms folded when the fast path asks."""
        with folded(self.pairs):  # no pairs: nothing swapped
            return self._frozen(images, labels)

    def training_examples(self, images: Tensor, labels: Tensor) -> Tensor:
        """Training examples in the regime's batch-norm mode (`AttackConfig.bn_mode`)."""
        if self.config.bn_mode == "eval":
            return self(images, labels)
        # Folding is meaningless here: a batch norm in train mode normalises by the batch's statistics.
        was_training = self.model.training
        self.attack.set_model_training_mode(model_training=True, batchnorm_training=True)
        try:
            with running_statistics_kept(self.model):
                return self._frozen(images, labels)
        finally:
            self.attack.set_model_training_mode()  # back to eval-mode passes
            self.model.train(was_training)  # torchattacks leaves a model it found in eval mode in train mode

    def _frozen(self, images: Tensor, labels: Tensor) -> Tensor:
        # Read at each call: a trainer may replace a layer (transfer's classifier) after building.
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        for parameter in trainable:
            parameter.requires_grad_(False)
        try:
            return self.attack(images, labels)
        finally:
            for parameter in trainable:
                parameter.requires_grad_(True)


@contextmanager
def running_statistics_kept(model: nn.Module) -> Iterator[None]:
    """Batch norms' running statistics (and batch counts) as they were on entry, whatever ran inside."""
    buffers = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)


def is_adversarial(config: AttackConfig) -> bool:
    return config.kind != "natural" and config.eps > 0
