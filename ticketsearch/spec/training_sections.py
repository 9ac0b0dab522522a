"""The sections that say what a trial trains and how: data, model, train (and its schedule), prune,
trainer and resources."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from ticketsearch.spec.attack_sections import AttackField
from ticketsearch.spec.fields import Float, Int, Section, single_key_form


class DataSection(Section):
    dataset: str
    root: str = "~/data"
    # Held out of the training data for the search objective: a count (>= 1) or a fraction (< 1).
    val_split: Annotated[Int | Float, Field(gt=0)] = 0.1
    # Stratified share of the remaining training data (0.01 and 0.1 for data-limited runs).
    fraction: Float = Field(1.0, gt=0, le=1)
    download: bool = True
    # Seeds the validation split and the fraction; kept apart from train.seed so every trial of a
    # search sees the same validation set.
    split_seed: Int = 0
    # The data set's standard augmentation (CIFAR: pad-4 crop and flip); false trains on raw images.
    augment: bool = True
    # Train, validate and test on these classes only, relabelled 0..k-1 in this order (a held-out task
    # built from part of a data set, e.g. digits 5-9 as the downstream task of digits 0-4).
    classes: tuple[Int, ...] | None = None

    @model_validator(mode="after")
    def _distinct_classes(self) -> "DataSection":
        if self.classes is not None and (len(set(self.classes)) != len(self.classes) or len(self.classes) < 2
                                         or min(self.classes) < 0):
            raise ValueError(f"classes: need at least 2 distinct class indices >= 0, got {list(self.classes)}")
        return self


class ModelSection(Section):
    arch: str
    width: Float = Field(1.0, gt=0)
    depth: Int | None = Field(None, ge=1)
    # Images are resized (bilinear, inside the model) to this many pixels a side, e.g. 32x32 CIFAR into
    # an ImageNet ResNet at 224. Attacks still act on the data's own pixels, so eps keeps its meaning.
    input_size: Int | None = Field(None, ge=1)


class Schedule(Section):
    """Learning rate against training progress within one round, updated every step.

    constant; cosine (to zero, after `warmup_epochs` of linear warm-up); step (times `gamma` at each
    epoch in `milestones`); cyclic (Wong et al. 2020's triangle: up to lr at `peak` of the round, down
    to zero at its end).
    """

    kind: Literal["constant", "cosine", "step", "cyclic"]
    warmup_epochs: Float = Field(0.0, ge=0)
    milestones: tuple[Int, ...] = ()
    gamma: Float = Field(0.1, gt=0)
    peak: Float = Field(0.4, gt=0, lt=1)


ScheduleField = Annotated[Schedule, BeforeValidator(single_key_form("kind"))]


class TrainSection(Section):
    epochs: Int = Field(ge=1)  # per IMP round
    batch_size: Int = Field(128, ge=1)
    lr: Float = Field(gt=0)
    momentum: Float = Field(0.9, ge=0, lt=1)
    weight_decay: Float = Field(5e-4, ge=0)
    nesterov: bool = False
    schedule: ScheduleField = Schedule(kind="cosine")
    seed: Int = 0
    # Validation examples evaluated (clean and under attack.eval) after every epoch: a fixed subset,
    # so epochs are comparable and the cost is bounded.
    eval_examples: Int = Field(1000, ge=1)
    # Validation examples skipped before those: confirmation trials (search.confirm) read their time to
    # target on validation images the search did not rank trials by.
    eval_offset: Int = Field(0, ge=0)
    eval_batch_size: Int = Field(500, ge=1)
    # Test examples evaluated once for a finished ticket (0 = the whole test split).
    test_examples: Int = Field(0, ge=0)
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
    patience: Int | None = Field(None, ge=1)


class PruneSection(Section):
    """Iterative magnitude pruning: `rounds` rounds of pruning `ratio` of the remaining weights.

    Sparsity after R rounds is 1-(1-ratio)^R. Round 0 trains the dense network. `rewind` is `init`
    (epoch 0) or an epoch k of the dense round. `find_with` is the regime used while finding the
    ticket (rounds 0..R-1); the final ticket (round R) trains under attack.train.
    """

    ratio: Float = Field(0.2, ge=0, lt=1)
    rounds: Int = Field(1, ge=0)
    # global: one threshold on raw |w| over all prunable layers (Frankle & Carbin 2019; large layers
    # lose the most); layerwise: ratio of every layer; global_normalized: one threshold on |w| divided by
    # its layer's mean |w| (the boosting-ticket code of Li et al. 2020). See core/pruning.py.
    scope: Literal["global", "layerwise", "global_normalized"] = "global"
    # A prune that would remove every weight of a layer is refused unless this is true.
    allow_empty_layers: bool = False
    rewind: Annotated[Int, BeforeValidator(lambda v: 0 if v == "init" else v), Field(ge=0)] = 0
    # Parameter names (fnmatch patterns on module names) kept dense; `first_conv` and `classifier`
    # name those layers whatever the architecture calls them.
    exclude: tuple[str, ...] = ()
    find_with: AttackField | None = None
    find_epochs: Int | None = Field(None, ge=1)
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


class ResourcesSection(Section):
    cpu: Float = Field(1, gt=0)
    gpu: Float = Field(0, ge=0)
