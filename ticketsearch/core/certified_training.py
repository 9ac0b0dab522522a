"""Certified training: the loss of one batch on a bound of its worst case over the eps-ball.

- IBP (Gowal et al. 2018, "On the Effectiveness of Interval Bound Propagation for Training Verifiably
  Robust Models"): kappa CE(clean logits) + (1 - kappa) CE(worst-case logits), eps ramped up from 0
  after a clean warm-up while kappa falls from 1 to 0.5.
- CROWN-IBP (Zhang et al. 2020): the worst case from beta CROWN-IBP + (1 - beta) IBP bounds, kappa
  and beta both falling from 1 to 0 along the ramp.
- Networks with batch norm are bounded as they train: with the clean batch's batch-norm statistics,
  as the clean pass computes (Gowal et al., CROWN-IBP, auto_LiRPA, Shi et al. 2021); running
  statistics are for evaluation and certification. eps rises in the smoothed shape of CROWN-IBP and
  Shi et al. 2021 (`smoothed`).

Measured on digits at eps 0.1 (BENCHMARKS.md, "Certified training"): with the bounds on running
statistics, small_cnn and cnn_7layer fell to chance (10% clean) within two epochs; with the batch's,
cnn_7layer (width 0.25, 10 epochs) trains: its 50% ticket to 86-91% clean at lr 0.05-0.2, its dense
round to 83% at lr 0.2 (54% at lr 0.05: batch-norm nets want the larger lr here). Two more of Shi et al.'s devices did not
help in these 10-epoch SGD rounds and are left out: their IBP initialisation (N(0, 2 pi / fan_in^2),
the last layer kept) took cnn_7layer's dense round to 26% clean and its ticket to 62% (from 52% and
88% at lr 0.05), and their warm-up regularisers (bound tightness and ReLU balance, weight 0.5 falling
with the ramp) moved nothing beyond a single run's noise (dense 56% against 54%, ticket 86% against 88%
at lr 0.05; 88% against 83% and 88% against 91% at lr 0.2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ticketsearch.core.certify import margin_lower_bounds
from ticketsearch.core.interval_bounds import batch_norm_statistics
from ticketsearch.errors import UserError


@dataclass(frozen=True)
class Mix:
    """What a certified-training step uses: eps (pixel units), kappa (weight of the clean loss) and
    beta (weight of CROWN-IBP's bound against IBP's)."""

    eps: float
    kappa: float
    beta: float


def ramp(step: float, start: float, length: float, begin: float, end: float) -> float:
    """`begin` until `start`, then linear to `end` over `length` steps, then `end`."""
    if length <= 0:
        return end if step >= start else begin
    t = min(max((step - start) / length, 0.0), 1.0)
    return begin + t * (end - begin)


def smoothed(t: float, mid: float = 0.25, power: float = 4.0) -> float:
    """The share of the ramp's final value reached at share `t` of the ramp, in auto_LiRPA's smoothed
    shape (CROWN-IBP, Shi et al. 2021): t^power up to `mid`, then a line of the same slope to 1 at t=1.
    Small eps grows slowly, which is where the bounds of a freshly trained network are loosest."""
    t = min(max(t, 0.0), 1.0)
    scale = 1 / ((1 - mid) * power * mid ** (power - 1) + mid**power)
    if t <= mid:
        return scale * t**power
    return scale * (mid**power + power * mid ** (power - 1) * (t - mid))


def schedule(step: float, *, eps: float, warmup: float, ramp_steps: float, method: str = "ibp") -> Mix:
    """The schedules of the papers, by optimiser step (or any measure of progress: the trainers give
    the share of the round done, and `warmup` and `ramp_steps` as shares of the round).

    Both raise eps from 0 to `eps` over `ramp_steps` steps after `warmup` clean steps, in the smoothed
    shape (`smoothed`); kappa and beta move linearly along the ramp.
    - "ibp" (Gowal et al. 2018): kappa from 1 to 0.5; IBP bounds (beta 0).
    - "crown-ibp" (Zhang et al. 2020): kappa from 1 to 0 and beta from 1 to 0, so training starts on
      CROWN-IBP's tighter bounds and ends on IBP's.
    """
    if method not in ("ibp", "crown-ibp"):
        raise UserError(f"certified training method: unknown {method!r}; known: ibp, crown-ibp")
    done = ramp(step, warmup, ramp_steps, 0.0, 1.0)
    kappa_end = 0.5 if method == "ibp" else 0.0
    beta = 0.0 if method == "ibp" else 1.0 - done
    return Mix(eps=eps * smoothed(done), kappa=1.0 + done * (kappa_end - 1.0), beta=beta)


# ---------------------------------------------------------------------------------- batch statistics


@contextlib.contextmanager
def recording_batch_statistics(model: nn.Module) -> Iterator[dict[nn.Module, tuple[Tensor, Tensor]]]:
    """The (mean, biased variance) per channel of every batch norm's input during the passes the block
    runs (the last pass wins), recorded only while the module is in training mode. They stay in the
    autograd graph, as batch norm's own statistics do in training."""
    statistics: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def record(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if module.training:
            x = inputs[0]
            dims = [d for d in range(x.dim()) if d != 1]
            statistics[module] = (x.mean(dims), x.var(dims, unbiased=False))

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [m.register_forward_pre_hook(record) for m in norms]
    try:
        yield statistics
    finally:
        for handle in handles:
            handle.remove()


# -------------------------------------------------------------------------------------------- loss


def certified_training_loss(model: nn.Module, images: Tensor, labels: Tensor, mix: Mix) -> Tensor:
    """kappa * CE(clean logits) + (1 - kappa) * CE(worst-case logits) (Gowal et al. 2018, eq. 12)."""
    return certified_training_terms(model, images, labels, mix)[0]


def certified_training_terms(model: nn.Module, images: Tensor, labels: Tensor, mix: Mix) -> tuple[Tensor, Tensor]:
    """(loss, worst-case logits) of one certified-training batch; the loss as `certified_training_loss`.

    The worst-case logits, in class order, are -(margin lower bound) for every other class and 0 for
    the true one (their cross-entropy bounds the cross-entropy of every input in the ball from above);
    their argmax is the label exactly when the example is certified at mix.eps, so their accuracy is
    the batch's certified accuracy. Without a bound term (kappa 1 or eps 0) they are the clean logits.
    The bounds are beta * CROWN-IBP + (1 - beta) * IBP (Zhang et al. 2020); beta = 0 computes no CROWN
    pass. In training mode every batch norm is bounded with the clean batch's statistics.
    """
    with recording_batch_statistics(model) as statistics:
        logits = model(images)
    if mix.kappa >= 1 or mix.eps <= 0:
        return F.cross_entropy(logits, labels), logits
    with batch_norm_statistics(statistics):
        bounds = margin_lower_bounds(model, images, labels, mix.eps, "ibp")
        if mix.beta > 0:
            crown = margin_lower_bounds(model, images, labels, mix.eps, "crown-ibp")
            bounds = mix.beta * crown + (1 - mix.beta) * bounds
    others = F.one_hot(labels, logits.shape[1]) == 0  # row-major: the other classes in increasing order
    worst = bounds.new_zeros(logits.shape).masked_scatter(others, -bounds)
    robust = F.cross_entropy(worst, labels)
    return mix.kappa * F.cross_entropy(logits, labels) + (1 - mix.kappa) * robust, worst
