"""The transfer trainer's plan: its levels, named by what they read (trainers/level_spec.py).

Pre-training on the source task (when the spec asks for it), IMP's rounds on the source task rewinding
to the pre-trained weights (`transfer.ticket: imp`), the dense pre-trained network fine-tuned under each
regime of `transfer.finetune` (the reference) and the ticket fine-tuned the same way. A level that
starts from the pre-trained weights names where they come from: a file by its digest, torchvision's
weights by name, pre-training by its level (its parent).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ticketsearch.core.pretrained import file_digest
from ticketsearch.errors import UserError
from ticketsearch.spec import AttackConfig, TrialConfig
from ticketsearch.trainers.level_spec import Evaluation, LevelSpec, Pruning, Recipe, Step

NATURAL = AttackConfig(kind="natural")
METRICS = ("val_clean_acc", "val_robust_acc", "test_clean_acc", "test_robust_acc")


@dataclass(frozen=True)
class FineTuning:
    name: str  # the record's phase: finetune_standard | finetune_adversarial
    regime: AttackConfig
    lr: float

    @property
    def short(self) -> str:
        return self.name.removeprefix("finetune_")


def plan_finetuning(config: TrialConfig) -> list[FineTuning]:
    transfer = config.transfer
    return [FineTuning("finetune_standard", NATURAL, transfer.standard_lr or config.train.lr) if regime == "standard"
            else FineTuning("finetune_adversarial", config.attack.train, config.train.lr)
            for regime in transfer.finetune]


# ---------------------------------------------------------------- the levels (trainers/level_spec.py)
def plan_levels(config: TrialConfig) -> list[Step]:
    """The trial's levels: pre-training (when the spec asks for it), the IMP rounds on the source task
    (transfer.ticket imp), the dense network fine-tuned under each regime (the reference) and the
    ticket fine-tuned under each regime."""
    steps = [Step(pretrain_level(config), "pretrain", 0, "pretrain")] if config.transfer.pretrained.pretrain else []
    if config.transfer.ticket == "imp":
        steps += [Step(source_round_level(config, r), "find", r, "find") for r in range(config.prune.rounds)]
    phases = plan_finetuning(config)
    for dense, role in ((True, "reference"), (False, "ticket")):
        steps += [Step(finetune_level(config, i, dense), role, config.prune.rounds, phase.name)
                  for i, phase in enumerate(phases)]
    return steps


def finetune_level(config: TrialConfig, index: int, dense: bool) -> LevelSpec:
    """Fine-tuning under regime `index` of the ticket (or, `dense`, of the dense pre-trained network):
    its random stream is the regime's alone, so the ticket and the dense network draw the same batches."""
    c, phase, transfer = config, plan_finetuning(config)[index], config.transfer
    mask, parent = "ones", _pretraining(config)
    if not dense:
        mask = transfer.ticket
        if transfer.ticket == "files":
            mask = f"files:{_digest(str(Path(transfer.ticket_dir).expanduser() / 'mask.pt'))}"
        if transfer.ticket == "imp" and c.prune.rounds > 0:
            parent = source_round_level(c, c.prune.rounds - 1)
    return LevelSpec("finetune", c.data, c.model, c.train.seed, Recipe.of(c, phase.regime, c.train.epochs, phase.lr),
                     Evaluation.of(c), c.train.precision, c.train.compile, c.data.augment, parent=parent,
                     pruning=None if dense else Pruning.of(c), weights=weights_source(c), mask=mask,
                     prune_linear=transfer.prune_linear, stream_seed=c.train.seed + 1000 * index)


def source_round_level(config: TrialConfig, round_: int) -> LevelSpec:
    """IMP's round `round_` (0-based) on the source task: from the pre-trained weights under the mask
    of the rounds before it (its parent), trained, then pruned. Its random stream is the round's
    alone; prune.rounds is not part of it, so paths of different depths share their rounds."""
    c, t = config, config.train
    recipe = Recipe.of(c, c.prune.find_with or NATURAL, c.find_epochs, c.prune.find_lr or t.lr)
    return LevelSpec("source_round", c.transfer.source, c.model, t.seed, recipe, Evaluation.of(c), t.precision,
                     t.compile, c.transfer.source.augment,
                     parent=source_round_level(c, round_ - 1) if round_ > 0 else _pretraining(c),
                     pruning=Pruning.of(c), weights=weights_source(c), prune_linear=c.transfer.prune_linear,
                     stream_seed=t.seed + round_)


def weights_source(config: TrialConfig) -> str:
    """Where the pre-trained weights come from, as the levels that start from them name it: a file by
    its digest, torchvision's weights by name, pre-training by its level."""
    source = config.transfer.pretrained
    if source.file is not None:
        if not Path(source.file).expanduser().exists():
            raise UserError(f"transfer.pretrained.file: {source.file} does not exist; give a state-dict file, "
                            "a checkpoint.pt or a ticket directory")
        return f"file:{_digest(source.file)}"
    if source.torchvision is not None:
        return f"torchvision:{config.model.arch}.{source.torchvision}"
    return pretrain_level(config).name


@functools.lru_cache(maxsize=64)
def _digest(path: str) -> str:
    """A weights file's digest, read once per process (the levels of every regime name it)."""
    return file_digest(path)


def _pretraining(config: TrialConfig) -> LevelSpec | None:
    """The pre-training level the weights come from (the parent of the levels that start from them)."""
    return pretrain_level(config) if config.transfer.pretrained.pretrain is not None else None


def pretrain_level(config: TrialConfig) -> LevelSpec:
    """Pre-training on the source task from the initialisation of pretrain.seed."""
    c, pretrain = config, config.transfer.pretrained.pretrain
    recipe = Recipe(pretrain.regime, pretrain.epochs, pretrain.lr, pretrain.schedule, pretrain.batch_size,
                    pretrain.momentum, pretrain.weight_decay, False)
    return LevelSpec("pretrain", c.transfer.source, c.model, pretrain.seed, recipe, Evaluation.of(c),
                     c.train.precision, c.train.compile, c.transfer.source.augment, stream_seed=pretrain.seed)


def planned_epochs(config: TrialConfig) -> int:
    return sum(step.level.epochs for step in plan_levels(config))


def ticket_epochs(config: TrialConfig) -> int:
    """The ticket's fine-tuning epochs, every regime counted (ASHA's clock)."""
    return config.train.epochs * len(config.transfer.finetune)
