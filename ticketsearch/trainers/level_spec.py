"""A level's spec: everything its training reads and nothing else, typed and frozen; its name is its hash.

A level (trainers/levels.py) is one stretch of training that trials share: IMP's dense round, a
finding round, the ticket's round, a dense network tickets are compared with; transfer's
pre-training, its rounds of IMP on the source task and its fine-tuning. `LevelSpec` describes one as
open_lth's descriptors do: the task and network, the initialisation seed, the recipe (regime,
optimiser, schedule, epochs), how epochs are validated and stopped early, the arithmetic (precision,
compile), how it starts from its parent (pruning, rewinding, the pre-trained weights) and the parent
itself. Its name is `<kind>-<hash of all of it>`, and the epoch engine (`LevelRun`) and the executor
(trainers/executor.py) read only the spec, never a trial config: a field outside the spec cannot
change a level, so two trials that share a name share exactly the same training
(tests/test_level_spec.py changes every leaf of a trial config in turn to check it).

A trial plays levels in roles (records.ROLES): the same dense network can be one trial's reference and
another's matched comparison, so the role belongs to the trial's plan (`Step`), not to the level.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from ticketsearch.spec import AttackConfig, TrialConfig
from ticketsearch.spec.sections import DataSection, GuardSection, ModelSection, Schedule



ARITHMETIC = ("precision", "compile")  # how a level computes, not what: in its name, not in its stream


@dataclass(frozen=True)
class Recipe:
    """How a level trains: regime, length, learning rate and optimiser settings.

    `first_epoch` > 0 continues a schedule of `epochs` epochs from that epoch (a ticket rewound to
    epoch k of its dense round trains epochs k+1..E at the schedule's learning rates for those steps,
    as Frankle et al. 2020 and open_lth rewind).
    """

    regime: AttackConfig
    epochs: int
    lr: float
    schedule: Schedule
    batch_size: int
    momentum: float
    weight_decay: float
    nesterov: bool
    first_epoch: int = 0

    @classmethod
    def of(cls, config: TrialConfig, regime: AttackConfig, epochs: int, lr: float, first_epoch: int = 0,
           schedule: Schedule | None = None) -> "Recipe":
        t = config.train
        return cls(regime, epochs, lr, schedule or t.schedule, t.batch_size, t.momentum, t.weight_decay, t.nesterov,
                   first_epoch)


@dataclass(frozen=True)
class Evaluation:
    """How every epoch of a level is validated, and what ends it early."""

    attack: AttackConfig  # attack.eval
    examples: int  # train.eval_examples validation images...
    offset: int  # ...after the first train.eval_offset of the split
    batch_size: int
    guard: GuardSection  # the catastrophic-overfitting guard
    patience: int | None  # train.patience: epochs without a better validation robust accuracy
    certified_eps: float | None  # IBP-certified accuracy per epoch (certify.every_epoch), or None

    @classmethod
    def of(cls, config: TrialConfig) -> "Evaluation":
        t, certify = config.train, config.certify
        return cls(config.attack.eval, t.eval_examples, t.eval_offset, t.eval_batch_size, config.attack.guard,
                   t.patience, certify.eps if certify is not None and certify.every_epoch else None)


@dataclass(frozen=True)
class Pruning:
    """How a level prunes the weights it starts from (prune.ratio of the survivors, by magnitude)."""

    ratio: float
    scope: str
    exclude: tuple[str, ...]
    allow_empty_layers: bool

    @classmethod
    def of(cls, config: TrialConfig) -> "Pruning":
        p = config.prune
        return cls(p.ratio, p.scope, tuple(p.exclude), p.allow_empty_layers)


@dataclass(frozen=True)
class LevelSpec:
    """One level. `kind` says how it starts (the trainer that plans it knows how):

    - `dense`: the initialisation drawn from `seed`, every weight kept; `rewind` > 0 keeps its weights
      at that epoch for the rounds rewound there;
    - `round`: the parent's weights pruned by `pruning`, the survivors rewound to the parent path's
      rewind point (`rewind`: 0 is the initialisation); `control` reinit or random_mask changes that;
    - `pretrain`: the initialisation drawn from `seed`, on `data` (a source task);
    - `finetune`: the pre-trained weights (`weights`: a file's digest, torchvision's, or the parent
      pre-training's), masked by `mask` (`ones`, `imp` from the parent round, `oneshot`, `random`,
      `files:<digest>`), a new classifier for `data` drawn from `seed`.
    """

    kind: str
    data: DataSection  # the task it trains and validates on (where the files live is not part of it)
    model: ModelSection
    seed: int  # the initialisation's (or the new classifier's) seed
    recipe: Recipe
    evaluation: Evaluation
    precision: str  # train.precision: a bf16 level is not an fp32 one
    compile: bool  # train.compile: a compiled model's kernels round differently
    augment: bool  # the data set's standard augmentation while training
    parent: "LevelSpec | None" = None
    pruning: Pruning | None = None
    rewind: int = 0
    control: str = "none"
    weights: str = ""  # finetune: where the pre-trained weights come from
    mask: str = ""  # finetune: where the mask comes from
    prune_linear: bool = False  # finetune and its source rounds: hidden linear layers are prunable too
    # The seed of the level's random stream (batches, attacks), when the plan fixes it (transfer's
    # fine-tunings of the ticket and of the dense network draw the same batches); None: from the name.
    stream_seed: int | None = field(default=None)

    def describe(self) -> dict[str, Any]:
        """The spec as JSON-able values (the parent by name): what the name hashes, and levels/<name>/key.json."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.name if isinstance(value, LevelSpec) else _plain(value)
        out["data"] = {k: v for k, v in out["data"].items() if k not in ("root", "download")}
        return out

    @cached_property
    def digest(self) -> str:
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.digest}"

    @property
    def parents(self) -> tuple["LevelSpec", ...]:
        return () if self.parent is None else (self.parent,)

    @cached_property
    def _arithmetic_free_digest(self) -> str:
        """The hash of the spec without its arithmetic (precision, compile), in it and in its parents."""
        described = {k: v for k, v in self.describe().items() if k not in ARITHMETIC}
        if self.parent is not None:
            described["parent"] = self.parent._arithmetic_free_digest
        text = json.dumps(described, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def seed_of_stream(self) -> int:
        """The level's own random stream, unless the plan fixed it: from its spec alone, so whoever
        trains it draws the same numbers, and without its arithmetic, so the same level in fp32 and in
        bf16 (two levels) draws the same batches and attacks and differs by the arithmetic alone."""
        return int(self._arithmetic_free_digest[:8], 16) if self.stream_seed is None else self.stream_seed

    @property
    def epochs(self) -> int:
        """Epochs it trains when nothing stops it early."""
        return self.recipe.epochs - self.recipe.first_epoch


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Step:
    """A level as one trial plays it: its role, and the round and phase its records show."""

    level: LevelSpec
    role: str  # one of ROLES (records.py)
    round: int
    phase: str  # IMP: dense | find | ticket | baseline | matched | best_of; transfer: pretrain | find | finetune_*
