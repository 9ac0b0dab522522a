"""The transfer trainer's section: where the pre-trained network comes from, and how its tickets are
made and fine-tuned."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ticketsearch.spec.attack_sections import AttackConfig, AttackField
from ticketsearch.spec.fields import Float, Int, Section
from ticketsearch.spec.training_sections import DataSection, Schedule, ScheduleField

TICKETS_FROM_SOURCE = ("imp",)  # ticket kinds found by training on the source task: they need `source`


class PretrainSection(Section):
    """Pre-training on `transfer.source` from a random initialisation (seeded apart from train.seed).

    Self-contained on purpose: every trial of a search that shares these settings shares one
    pre-trained network, whatever the search varies in the downstream fine-tuning.
    """

    epochs: Int = Field(ge=1)
    lr: Float = Field(0.1, gt=0)
    batch_size: Int = Field(128, ge=1)
    momentum: Float = Field(0.9, ge=0, lt=1)
    weight_decay: Float = Field(5e-4, ge=0)
    schedule: ScheduleField = Schedule(kind="cosine")
    regime: AttackField = AttackConfig(kind="natural")  # pgd or fgsm here gives a robustly pre-trained network
    seed: Int = 0


class PretrainedSection(Section):
    """Where the dense pre-trained weights come from: exactly one of the three."""

    # A state-dict file of model.arch at model.width, a ticketsearch checkpoint (checkpoint.pt of
    # `ticketsearch train`), or a ticket directory of a previous search (its trained.pt).
    file: str | None = None
    # A weights name of torchvision's model.arch, e.g. IMAGENET1K_V1 (torchvision downloads it where the
    # network allows; offline, download it elsewhere and give it as `file`).
    torchvision: str | None = None
    pretrain: PretrainSection | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "PretrainedSection":
        given = [name for name in ("file", "torchvision", "pretrain") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of file, torchvision, pretrain; got {given or 'none'}")
        return self


class TransferSection(Section):
    """The transfer trainer (Chen et al. 2022, double-win tickets): a ticket of a pre-trained network,
    fine-tuned on `data` (the downstream task) under each regime of `finetune`, against the dense
    pre-trained network fine-tuned the same way.

    ticket: `imp` (prune.rounds rounds of IMP on `source` starting from the pre-trained weights and
    rewinding to them, under prune.find_with, or natural training when it is unset), `oneshot`
    (magnitude pruning of the pre-trained weights to the sparsity of prune.rounds rounds of
    prune.ratio), `random` (a random mask with oneshot's per-layer counts: the control) or `files` (the
    mask of a ticket directory `ticket_dir` written by a previous search).
    """

    pretrained: PretrainedSection
    source: DataSection | None = None  # the pre-training task: needed by pretrain and by ticket: imp
    ticket: Literal["imp", "oneshot", "random", "files"] = "oneshot"
    ticket_dir: str | None = None
    # The paper prunes conv weights only (classifier and batch-norm excluded); true prunes hidden
    # linear layers too. The classifier is always kept: it is replaced for the downstream task.
    prune_linear: bool = False
    finetune: tuple[Literal["standard", "adversarial"], ...] = ("standard", "adversarial")
    standard_lr: Float | None = Field(None, gt=0)  # lr of standard fine-tuning; default train.lr
    # A ticket is a double win when, under every fine-tuning regime, its standard and its robust
    # accuracy are each at most this much (absolute, a fraction) below the dense network's.
    tolerance: Float = Field(0.01, ge=0, le=1)

    @model_validator(mode="after")
    def _complete(self) -> "TransferSection":
        if not self.finetune or len(set(self.finetune)) != len(self.finetune):
            raise ValueError(f"finetune: list standard and/or adversarial once each, got {list(self.finetune)}")
        if self.source is None and (self.pretrained.pretrain is not None or self.ticket in TICKETS_FROM_SOURCE):
            needs = "pretrained.pretrain" if self.pretrained.pretrain is not None else "ticket: imp"
            raise ValueError(f"source: {needs} trains on a source task; give source: {{dataset: ...}}")
        if (self.ticket == "files") != (self.ticket_dir is not None):
            raise ValueError("ticket_dir: give it exactly when ticket is files (a tickets/<trial> directory)")
        return self
