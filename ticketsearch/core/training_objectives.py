"""Training objectives: the loss of one training batch, given the attack of the regime that trains it.

`train_epoch` (core/loops.py) asks `objective_for(attack)` for the loss of the regime the attack was
built from, so nothing above core needs to know which one runs. Each objective generates the batch's
training examples itself (through `training_examples`, in the regime's batch-norm mode), runs the
training passes in train mode and returns the loss and the logits whose accuracy the epoch reports
(those of the adversarial examples). Settings of the papers, for reference:

- adversarial cross-entropy (Madry et al. 2018): CE(f(x'), y), x' from the regime's attack; natural
  training is the same with x' = x. CIFAR-10: PGD-7 or PGD-10, eps 8/255, step 2/255.
- TRADES (Zhang et al. 2019): CE(f(x), y) + beta KL(f(x) || f(x')), x' by PGD on the KL term from
  x + 0.001 N(0, 1). CIFAR-10: beta 6 (1/lambda), eps 0.031, step 0.007, 10 steps; MNIST: beta 1
  (and 6 in their ablations), eps 0.3, step 0.01, 40 steps.
- MART (Wang et al. 2020): BCE(f(x'), y) + beta KL(f(x) || f(x')) (1 - f_y(x)), x' by PGD on the
  cross-entropy from x + 0.001 N(0, 1) (their reference code's start), where BCE adds -log(1 - the
  largest wrong-class probability) to the cross-entropy, so examples the model misclassifies weigh
  more in the robustness term. CIFAR-10: beta 6, eps 8/255, step 2/255, 10 steps; MNIST: eps 0.3,
  step 0.01, 40 steps.
- IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020): kappa CE(f(x), y) + (1 - kappa) CE of
  the worst-case logits over the eps-ball, bounded by interval bound propagation (mixed with
  CROWN-IBP's bounds by beta); eps, kappa and beta follow the regime's schedule over the round
  (`progress`), core/certify.py.

`progress` is the share of the round's optimiser steps done before this batch (0 at the round's
start, 1 at its end); only the certified regimes' schedules read it.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ticketsearch.core import certified_training
from ticketsearch.core.attacks import Perturb, regime_of, training_examples
from ticketsearch.registry import Registry

# (model, attack, x, y, progress) -> (loss, logits of the examples the epoch's accuracy counts)
Objective = Callable[[nn.Module, Perturb, Tensor, Tensor, float], tuple[Tensor, Tensor]]
OBJECTIVES: Registry[Objective] = Registry("training objective")


def objective_for(attack: Perturb) -> Objective:
    """The loss of the regime `attack` was built from; adversarial cross-entropy for every kind that
    has no objective of its own (natural, fgsm, pgd)."""
    regime = regime_of(attack)
    kind = regime.kind if regime is not None else "natural"
    return OBJECTIVES.get(kind) if kind in OBJECTIVES else adversarial_cross_entropy


def adversarial_cross_entropy(model: nn.Module, attack: Perturb, x: Tensor, y: Tensor,
                              progress: float = 1.0) -> tuple[Tensor, Tensor]:
    """CE(f(attack(x)), y) (Madry et al. 2018); with the natural attack, plain cross-entropy."""
    x_adv = training_examples(attack)(x, y)
    model.train()
    logits = model(x_adv)
    return F.cross_entropy(logits, y), logits


def _beta(attack: Perturb) -> float:
    regime = regime_of(attack)
    assert regime is not None, "trades and mart are built by build_attack with their regime"
    return regime.loss_beta


@OBJECTIVES.register("trades")
def trades(model: nn.Module, attack: Perturb, x: Tensor, y: Tensor, progress: float = 1.0) -> tuple[Tensor, Tensor]:
    """TRADES (Zhang et al. 2019): CE(f(x), y) + beta * KL(f(x) || f(x')), batch mean."""
    x_adv = training_examples(attack)(x, y)
    model.train()
    logits_clean = model(x)
    logits_adv = model(x_adv)
    # F.kl_div(input=log q, target=p) is KL(p || q): here p = f(x), q = f(x').
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    return F.cross_entropy(logits_clean, y) + _beta(attack) * robust, logits_adv


@OBJECTIVES.register("mart")
def mart(model: nn.Module, attack: Perturb, x: Tensor, y: Tensor, progress: float = 1.0) -> tuple[Tensor, Tensor]:
    """MART (Wang et al. 2020): boosted cross-entropy on x' plus beta times the per-example
    KL(f(x) || f(x')) weighted by 1 - f_y(x), the clean probability of the true class."""
    x_adv = training_examples(attack)(x, y)
    model.train()
    logits_clean = model(x)
    logits_adv = model(x_adv)
    p_adv = F.softmax(logits_adv, dim=1)
    # The most probable wrong class of each adversarial example, and the margin term pushing it down.
    wrong = p_adv.masked_fill(F.one_hot(y, p_adv.shape[1]).bool(), -1.0).argmax(dim=1)
    tiny = 1e-12  # keeps the logarithms finite when a probability is exactly 0 or 1
    boosted_ce = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + tiny), wrong)
    p_clean = F.softmax(logits_clean, dim=1)
    kl = (p_clean * (torch.log(p_clean + tiny) - torch.log(p_adv + tiny))).sum(dim=1)
    true_clean = p_clean.gather(1, y[:, None]).squeeze(1)
    return boosted_ce + _beta(attack) * (kl * (1.0000001 - true_clean)).mean(), logits_adv


@OBJECTIVES.register("ibp")
@OBJECTIVES.register("crown_ibp")
def certified(model: nn.Module, attack: Perturb, x: Tensor, y: Tensor, progress: float = 1.0) -> tuple[Tensor, Tensor]:
    """IBP (Gowal et al. 2018) or CROWN-IBP (Zhang et al. 2020) training at the regime's schedule at
    `progress`; the logits are the worst case's, so the epoch's accuracy is certified accuracy at the
    current eps (clean accuracy during the warm-up)."""
    regime = regime_of(attack)
    assert regime is not None, "ibp and crown_ibp are built by build_attack with their regime"
    mix = certified_training.schedule(progress, eps=regime.eps, warmup=regime.warmup_share,
                                      ramp_steps=regime.ramp_share, method=regime.kind.replace("_", "-"))
    model.train()
    # Bounds follow the module's own layers: under torch.compile, those of the module it wraps.
    return certified_training.certified_training_terms(getattr(model, "_orig_mod", model), x, y, mix)
