"""What a finished ticket is measured against and with: the dense reference network, and certified
robustness."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from ticketsearch.spec.fields import Float, Int, Section, single_key_form
from ticketsearch.spec.training_sections import Schedule


class ReferenceSection(Section):
    """The dense network every ticket is measured against (Li et al. 2020's dense baseline): trained
    under attack.train from the trial's initialisation, at these settings where given and at the
    trial's own `train` settings where not. Fix `lr` (and `epochs`) when a search varies train.lr, so
    every ticket of the search meets the same, well-tuned network; it is one shared level per width.

    target: the reference's validation robust accuracy a ticket must reach, at its `final` epoch or at
    its `best` (both are recorded).

    Two more comparisons, each a dense network from the same initialisation under attack.train:
    matched: dense at the ticket's own train.lr, schedule and epochs (the effect of the mask alone:
    `speedup_matched`); best_of: dense at each of these learning rates (at this section's epochs and
    schedule), the ticket against the best of them (`speedup_best_dense`, `best_dense_lr`).
    """

    lr: Float | None = Field(None, gt=0)
    epochs: Int | None = Field(None, ge=1)
    schedule: Annotated[Schedule | None, BeforeValidator(single_key_form("kind"))] = None
    target: Literal["final", "best"] = "final"
    matched: bool = False
    best_of: list[Annotated[Float, Field(gt=0)]] | None = Field(None, min_length=1)


class CertifySection(Section):
    """Certified robustness (core/certify.py) of the finished ticket and the dense reference: the share
    of test images classified correctly whose every logit margin is proven positive over the L-inf
    ball of radius `eps` (pixel units of [0, 1] images, the ball clipped to [0, 1]).

    method: ibp (Gowal et al. 2018; every model), crown (Zhang et al. 2018; feed-forward models only,
    tighter and costlier) or crown-ibp between them. examples: the first this many of the tested
    images (0: all of them). On all of them and with eps >= attack.eval.eps, certified <= PGD robust <=
    clean accuracy for every ticket. every_epoch: val_certified_acc after every epoch too, by IBP
    (cheap) at `eps`, on the train.eval_examples validation images.
    """

    method: Literal["ibp", "crown-ibp", "crown"] = "ibp"
    eps: Float = Field(gt=0)
    examples: Int = Field(0, ge=0)
    every_epoch: bool = False
