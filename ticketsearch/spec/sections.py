"""The validated, frozen description of one trial: one pydantic model per spec section.

Every section forbids unknown keys, so a typo fails naming its path. Numbers accept the spec's
spellings (`1e-3`, `8/255`). Single-key shorthands read the way papers write settings:
`schedule: {cosine: {warmup_epochs: 2}}`, `train: {pgd: {eps: 8/255, alpha: 2/255, steps: 10}}`,
`trainer: imp`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ticketsearch.spec.yaml_io import parse_number

Float = Annotated[float, BeforeValidator(parse_number)]
EPS_8 = 8 / 255
EPS_2 = 2 / 255


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _single_key_form(field: str) -> Any:
    """`{name: {options}}` or `name` -> `{field: name, **options}`; full form passes through."""

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return {field: value}
        if isinstance(value, dict) and len(value) == 1 and field not in value:
            ((name, options),) = value.items()
            if options is None or isinstance(options, dict):
                return {field: name, **(options or {})}
        return value

    return convert


class DataSection(Section):
    dataset: str
    root: str = "~/data"
    # Held out of the training data for the search objective: a count (>= 1) or a fraction (< 1).
    val_split: Annotated[int | float, BeforeValidator(parse_number), Field(gt=0)] = 0.1
    # Stratified share of the remaining training data (0.01 and 0.1 for data-limited runs).
    fraction: Float = Field(1.0, gt=0, le=1)
    download: bool = True
    # Seeds the validation split and the fraction; kept apart from train.seed so every trial of a
    # search sees the same validation set.
    split_seed: int = 0
    # The data set's standard augmentation (CIFAR: pad-4 crop and flip); false trains on raw images.
    augment: bool = True
    # Train, validate and test on these classes only, relabelled 0..k-1 in this order (a held-out task
    # built from part of a data set, e.g. digits 5-9 as the downstream task of digits 0-4).
    classes: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _distinct_classes(self) -> "DataSection":
        if self.classes is not None and (len(set(self.classes)) != len(self.classes) or len(self.classes) < 2
                                         or min(self.classes) < 0):
            raise ValueError(f"classes: need at least 2 distinct class indices >= 0, got {list(self.classes)}")
        return self


class ModelSection(Section):
    arch: str
    width: Float = Field(1.0, gt=0)
    depth: int | None = Field(None, ge=1)
    # Images are resized (bilinear, inside the model) to this many pixels a side, e.g. 32x32 CIFAR into
    # an ImageNet ResNet at 224. Attacks still act on the data's own pixels, so eps keeps its meaning.
    input_size: int | None = Field(None, ge=1)


class Schedule(BaseModel):
    """Learning rate against training progress within one round, updated every step.

    constant; cosine (to zero, after `warmup_epochs` of linear warm-up); step (times `gamma` at each
    epoch in `milestones`); cyclic (Wong et al. 2020's triangle: up to lr at `peak` of the round, down
    to zero at its end).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["constant", "cosine", "step", "cyclic"]
    warmup_epochs: Float = Field(0.0, ge=0)
    milestones: tuple[int, ...] = ()
    gamma: Float = Field(0.1, gt=0)
    peak: Float = Field(0.4, gt=0, lt=1)


class TrainSection(Section):
    epochs: int = Field(ge=1)  # per IMP round
    batch_size: int = Field(128, ge=1)
    lr: Float = Field(gt=0)
    momentum: Float = Field(0.9, ge=0, lt=1)
    weight_decay: Float = Field(5e-4, ge=0)
    nesterov: bool = False
    schedule: Annotated[Schedule, BeforeValidator(_single_key_form("kind"))] = Schedule(kind="cosine")
    seed: int = 0
    # Validation examples evaluated (clean and under attack.eval) after every epoch: a fixed subset,
    # so epochs are comparable and the cost is bounded.
    eval_examples: int = Field(1000, ge=1)
    # Validation examples skipped before those: confirmation trials (search.confirm) read their time to
    # target on validation images the search did not rank trials by.
    eval_offset: int = Field(0, ge=0)
    eval_batch_size: int = Field(500, ge=1)
    # Test examples evaluated once for a finished ticket (0 = the whole test split).
    test_examples: int = Field(0, ge=0)
    # Arithmetic of the forward passes (attack and training): auto = bf16 autocast on a CUDA GPU with
    # bf16, fp32 on CPU (a CPU without bf16 units emulates bf16 ~10x slower). Images and
    # perturbations stay fp32 either way, so the eps bound holds exactly (core/fastpath.py).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # torch.compile the model: fused kernels for small models whose cost is GPU launch overhead. It
    # costs 15-35 s of compiling per trial; on CPU it then ran ResNet-20 PGD-10 1.42x the reference
    # loop against 1.26x uncompiled (BENCHMARKS.md): worth it for long trials only.
    compile: bool = False
    # Early stopping: a round ends after this many epochs without a better validation robust accuracy
    # (none: every round trains its epochs).
    patience: int | None = Field(None, ge=1)


TRAINING_OBJECTIVES = ("trades", "mart")  # regimes whose loss is not cross-entropy on attack(x)
DEFAULT_BETA = 6.0  # TRADES (Zhang et al. 2019) and MART (Wang et al. 2020) on CIFAR-10
# Certified training (core/certify.py): the loss bounds the worst case over the eps-ball, no attack runs.
CERTIFIED_REGIMES = ("ibp", "crown_ibp")
# Shares of a round: trained clean first, then eps (and kappa, beta) ramped linearly to their final
# values. The papers train for hundreds of epochs at full eps after the ramp; a search's short
# rounds need a larger share of ramp to stay stable.
DEFAULT_WARMUP, DEFAULT_RAMP = 0.1, 0.5


class AttackConfig(BaseModel):
    """One threat model or training regime: `natural`, `fgsm` (FGSM with random start), `pgd`,
    `trades`, `mart`, `ibp`, `crown_ibp` (training only), `autoattack` (the standard version,
    evaluation only). `ibp` (Gowal et al. 2018) and `crown_ibp` (Zhang et al. 2020) train on a bound of
    the worst-case loss over the eps-ball (core/certify.py) rather than on attacked images; `warmup`
    and `ramp` are their schedule, as shares of the round's steps.

    eps and alpha are in pixel units of [0, 1] images (8/255 is the CIFAR standard). alpha defaults to
    eps/4 for PGD, TRADES and MART and 1.25 eps for FGSM with random start (Wong et al. 2020).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    eps: Float = Field(EPS_8, ge=0)
    alpha: Float | None = Field(None, gt=0)
    steps: int = Field(10, ge=1)
    random_start: bool = True
    # Weight of the robustness term of trades and mart (default 6, both papers' CIFAR-10 setting);
    # refused for other kinds, whose loss has no such term.
    beta: Float | None = Field(None, gt=0)
    # Batch-norm mode of the passes that generate training examples (evaluation attacks always run in
    # eval mode). eval: the attack targets the network as it is evaluated (running statistics), as the
    # TRADES and MART reference code does; it keeps the fast path's batch-norm folding, and on digits
    # (small_cnn, PGD-2 at eps 0.1, 4 epochs, 3 seeds) it reached PGD-20 robust accuracy 0.53 against
    # train mode's 0.43 at width 0.25, and 0.67 against 0.69 at width 0.5. train: batch statistics,
    # as Madry et al. 2018, Rice et al. 2020 and Wong et al. 2020 generate them (the CIFAR specs that
    # follow them say so). In train mode the attack's passes never move the running statistics (they
    # are restored after each attack), so those come from the training passes alone in both modes.
    bn_mode: Literal["eval", "train"] = "eval"
    # ibp and crown_ibp only: the share of the round trained clean, then the share over which eps ramps
    # from 0 (kappa from 1 to 0.5 for ibp, to 0 for crown_ibp; beta from 1 to 0 for crown_ibp).
    warmup: Float | None = Field(None, ge=0, lt=1)
    ramp: Float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _beta_only_for_objectives(self) -> "AttackConfig":
        if self.beta is not None and self.kind not in TRAINING_OBJECTIVES:
            raise ValueError(f"beta: only {' and '.join(TRAINING_OBJECTIVES)} have a beta, not {self.kind}")
        for name in ("warmup", "ramp"):
            if getattr(self, name) is not None and self.kind not in CERTIFIED_REGIMES:
                raise ValueError(f"{name}: only {' and '.join(CERTIFIED_REGIMES)} have an eps schedule, not {self.kind}")
        if self.kind in CERTIFIED_REGIMES and self.warmup_share + self.ramp_share > 1:
            raise ValueError(f"warmup + ramp: {self.warmup_share:g} + {self.ramp_share:g} is past the round's end; "
                             f"eps would never reach its value")
        return self

    @property
    def warmup_share(self) -> float:
        return DEFAULT_WARMUP if self.warmup is None else self.warmup

    @property
    def ramp_share(self) -> float:
        return DEFAULT_RAMP if self.ramp is None else self.ramp

    @property
    def step_size(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return 1.25 * self.eps if self.kind == "fgsm" else self.eps / 4

    @property
    def loss_beta(self) -> float:
        return DEFAULT_BETA if self.beta is None else self.beta

    def describe(self) -> str:
        if self.kind == "natural":
            return "natural"
        steps = f"-{self.steps}" if self.kind in ("pgd", *TRAINING_OBJECTIVES) else ""
        beta = f" beta={self.loss_beta:g}" if self.kind in TRAINING_OBJECTIVES else ""
        return f"{self.kind}{steps} eps={self.eps * 255:.3g}/255{beta}"


AttackField = Annotated[AttackConfig, BeforeValidator(_single_key_form("kind"))]


class GuardSection(Section):
    """Catastrophic-overfitting guard for FGSM training (Wong et al. 2020, section 5).

    After each epoch a PGD attack (attack.eval's threat model, `steps` steps) runs on one fixed batch of
    `examples` training images. When its robust accuracy falls more than `drop` (absolute) below the
    best seen this round, the guard fires: `rollback` restores the previous epoch's weights and ends
    the round, `stop` ends the round as it is, `record` only marks the record.
    """

    enabled: Literal["auto", "on", "off"] = "auto"  # auto: on when the regime is fgsm
    examples: int = Field(256, ge=1)
    steps: int = Field(10, ge=1)
    drop: Float = Field(0.2, gt=0, le=1)
    action: Literal["rollback", "stop", "record"] = "rollback"


class AttackSection(Section):
    train: AttackField = AttackConfig(kind="pgd", eps=EPS_8, alpha=EPS_2, steps=10)
    eval: AttackField = AttackConfig(kind="pgd", eps=EPS_8, alpha=EPS_2, steps=20)
    # AutoAttack's standard version (core/attacks.py) on train.test_examples test images of the finished
    # ticket. It costs far more than PGD-20: bound the count with train.test_examples.
    test_autoattack: bool = True
    guard: GuardSection = GuardSection()

    @model_validator(mode="after")
    def _kinds_in_their_place(self) -> "AttackSection":
        if self.eval.kind in TRAINING_OBJECTIVES:
            raise ValueError(f"eval: {self.eval.kind} is a training objective; evaluate with pgd or autoattack")
        if self.eval.kind in CERTIFIED_REGIMES:
            raise ValueError(f"eval: {self.eval.kind} is a certified training regime; evaluate with pgd or "
                             f"autoattack and certify with the certify section")
        if self.eval.bn_mode == "train":
            raise ValueError("eval.bn_mode: evaluation attacks run in eval mode; bn_mode is for training regimes")
        return self


class PruneSection(Section):
    """Iterative magnitude pruning: `rounds` rounds of pruning `ratio` of the remaining weights.

    Sparsity after R rounds is 1-(1-ratio)^R. Round 0 trains the dense network. `rewind` is `init`
    (epoch 0) or an epoch k of the dense round. `find_with` is the regime used while finding the
    ticket (rounds 0..R-1); the final ticket (round R) trains under attack.train.
    """

    ratio: Float = Field(0.2, ge=0, lt=1)
    rounds: int = Field(1, ge=0)
    # global: one threshold on raw |w| over all prunable layers (Frankle & Carbin 2019; large layers
    # lose the most); layerwise: ratio of every layer; global_normalized: one threshold on |w| divided by
    # its layer's mean |w| (the boosting-ticket code of Li et al. 2020). See core/pruning.py.
    scope: Literal["global", "layerwise", "global_normalized"] = "global"
    # A prune that would remove every weight of a layer is refused unless this is true.
    allow_empty_layers: bool = False
    rewind: Annotated[int, BeforeValidator(lambda v: 0 if v == "init" else v), Field(ge=0)] = 0
    # Parameter names (fnmatch patterns on module names) kept dense; `first_conv` and `classifier`
    # name those layers whatever the architecture calls them.
    exclude: tuple[str, ...] = ()
    find_with: AttackField | None = None
    find_epochs: int | None = Field(None, ge=1)
    find_lr: Float | None = Field(None, gt=0)
    # Standard controls: the same mask with a fresh random init; a random mask of the same sparsity.
    control: Literal["none", "reinit", "random_mask"] = "none"

    def sparsity_after(self, rounds: int) -> float:
        return 1 - (1 - self.ratio) ** rounds


class TrainerSection(Section):
    name: str = "imp"
    # Train the dense network under the final regime too when find_with differs from attack.train,
    # so that the ticket's convergence can be compared with it in the same trial.
    dense_baseline: bool = True
    test_eval: bool = True  # evaluate the finished ticket on the test split
    # The weights `tickets/` keeps: the ticket round's last epoch, or its best validation robust accuracy
    # (robust overfitting, Rice et al. 2020). Both are tested (test_* and best_test_* columns).
    keep: Literal["last", "best"] = "last"


class PretrainSection(Section):
    """Pre-training on `transfer.source` from a random initialisation (seeded apart from train.seed).

    Self-contained on purpose: every trial of a search that shares these settings shares one
    pre-trained network, whatever the search varies in the downstream fine-tuning.
    """

    epochs: int = Field(ge=1)
    lr: Float = Field(0.1, gt=0)
    batch_size: int = Field(128, ge=1)
    momentum: Float = Field(0.9, ge=0, lt=1)
    weight_decay: Float = Field(5e-4, ge=0)
    schedule: Annotated[Schedule, BeforeValidator(_single_key_form("kind"))] = Schedule(kind="cosine")
    regime: AttackField = AttackConfig(kind="natural")  # pgd or fgsm here gives a robustly pre-trained network
    seed: int = 0


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
        if self.source is None and (self.pretrained.pretrain is not None or self.ticket == "imp"):
            needs = "pretrained.pretrain" if self.pretrained.pretrain is not None else "ticket: imp"
            raise ValueError(f"source: {needs} trains on a source task; give source: {{dataset: ...}}")
        if (self.ticket == "files") != (self.ticket_dir is not None):
            raise ValueError("ticket_dir: give it exactly when ticket is files (a tickets/<trial> directory)")
        return self


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
    epochs: int | None = Field(None, ge=1)
    schedule: Annotated[Schedule | None, BeforeValidator(_single_key_form("kind"))] = None
    target: Literal["final", "best"] = "final"
    matched: bool = False
    best_of: list[Annotated[Float, Field(gt=0)]] | None = Field(None, min_length=1)


class Objective(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    metric: str
    mode: Literal["max", "min"] = "max"


def _objective_list(value: Any) -> Any:
    """`[{metric, mode}, ...]` (several objectives) -> the first as metric/mode, the rest as `more`."""
    if isinstance(value, (list, tuple)) and value:
        first, *rest = value
        if isinstance(first, dict):
            return {**first, "more": list(rest)}
    return value


class ObjectiveSection(Section):
    """What the search ranks trials by: one metric with its mode, or a list of them.

    With a list, Optuna searches the Pareto front of all of them (multi-objective TPE); ASHA, which
    takes one metric, judges trials by the first; `results` and `report` show the front.
    """

    metric: str = "robust_auc"
    mode: Literal["max", "min"] = "max"
    more: tuple[Objective, ...] = ()

    @property
    def all(self) -> tuple[Objective, ...]:
        return (Objective(metric=self.metric, mode=self.mode), *self.more)


class SchedulerSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["asha", "fifo"]
    grace_period: int = Field(2, ge=1)  # epochs of the trial's ticket (ASHA's clock: search/space.py)
    reduction_factor: Float = Field(3, gt=1)
    max_t: int | None = Field(None, ge=1)  # ticket epochs; default: the most a trial's ticket trains


class ConfirmSection(Section):
    top: int = Field(3, ge=1)
    seeds: int = Field(2, ge=1)


class SearchSection(Section):
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(2, ge=1)
    scheduler: Annotated[SchedulerSection, BeforeValidator(_single_key_form("kind"))] = SchedulerSection(
        kind="fifo"
    )
    seed: int = 0
    max_failures: int = Field(2, ge=0)  # retries of a trial that fails (a lost node, an error)
    # Stop the search once this many trials in a row ended in the same error (a bug or bad input every
    # config shares would otherwise fail every remaining trial); 0 never stops.
    stop_after_same_errors: int = Field(3, ge=0)
    # Per trial, at the end of a search; while it runs, checkpoints stay until no experiment snapshot
    # can name them (search/checkpoint_retention.py).
    keep_checkpoints: int = Field(2, ge=1)
    keep_tickets: int = Field(3, ge=0)  # ticket files written for the best trials (by objective)
    # Trials share the levels they have in common (trainers/levels.py): a dense round, an IMP path, the
    # dense reference, trained once. false: every trial trains its whole path itself (independent
    # repeats, or a measure of what sharing saves).
    share_levels: bool = True
    # After the search, its `top` best completed configurations trained again with `seeds` fresh seeds
    # (search/confirm.py): the figures a reader may quote come from these, not from the search's pick.
    confirm: ConfirmSection | None = None


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
    examples: int = Field(0, ge=0)
    every_epoch: bool = False


class ResourcesSection(Section):
    cpu: Float = Field(1, gt=0)
    gpu: Float = Field(0, ge=0)


class TrialConfig(Section):
    """A whole spec with every leaf fixed: what one trial runs."""

    name: str = "ticketsearch"
    trainer: Annotated[TrainerSection, BeforeValidator(_single_key_form("name"))] = TrainerSection()
    data: DataSection
    model: ModelSection
    train: TrainSection
    attack: AttackSection = AttackSection()
    prune: PruneSection = PruneSection()
    reference: ReferenceSection = ReferenceSection()
    objective: Annotated[ObjectiveSection, BeforeValidator(_objective_list)] = ObjectiveSection()
    search: SearchSection = SearchSection()
    resources: ResourcesSection = ResourcesSection()
    transfer: TransferSection | None = None  # required by trainer: transfer
    certify: CertifySection | None = None  # certified accuracy of the ticket and the reference (off: none)

    @model_validator(mode="after")
    def _transfer_section_present(self) -> "TrialConfig":
        if self.trainer.name == "transfer" and self.transfer is None:
            raise ValueError("transfer: trainer transfer needs a transfer section (pretrained: {file|torchvision|pretrain})")
        return self

    @model_validator(mode="after")
    def _rewind_within_dense_round(self) -> "TrialConfig":
        if self.prune.rewind > self.find_epochs:
            raise ValueError(
                f"prune.rewind: epoch {self.prune.rewind} is past the dense round's {self.find_epochs} epochs"
            )
        # A ticket rewound to epoch k continues the schedule from there: it needs epochs left to train.
        if self.prune.rounds > 0 and self.prune.rewind >= min(self.find_epochs, self.train.epochs):
            raise ValueError(f"prune.rewind: a ticket rewound to epoch {self.prune.rewind} continues the schedule "
                             f"from there; give fewer than {min(self.find_epochs, self.train.epochs)} epochs")
        return self

    @property
    def find_regime(self) -> AttackConfig:
        return self.prune.find_with or self.attack.train

    @property
    def find_epochs(self) -> int:
        return self.prune.find_epochs or self.train.epochs

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        """12 hex digits naming this exact configuration (seed included)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]
