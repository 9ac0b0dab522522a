"""Trainers: plain Python objects that yield one `EpochRecord` per epoch and save their state.

A trainer is a plan of levels (`LevelSpec`s in their roles, trainers/level_spec.py), how each kind
of level starts, and a summary; the one executor (trainers/executor.py) runs every trainer's plan
through the one epoch engine (trainers/engine.py). `create_trainer(config, ...)` looks it up by
`trainer.name`; `check_config(config)` checks every registered name in a trial config (trainer, data
set, model, attacks) and the trainer's own needs without building anything, so `ticketsearch
validate`, `train` and the search driver fail before a trial starts. Adding a trainer touches three
files: its module (plan, `LevelTrainer` subclass, summary defaults), one `TRAINERS.register` call here
and its spec section (spec/); the README's "Adding a trainer" says what each holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ticketsearch.core.attacks import ATTACKS, check_autoattack_classes
from ticketsearch.core.certify import check_supported
from ticketsearch.core.data import DATASETS, task_info
from ticketsearch.core.models import MODELS, create_model
from ticketsearch.core.pruning import prunable_weights
from ticketsearch.errors import UserError
from ticketsearch.registry import Registry
from ticketsearch.spec import TrialConfig
from ticketsearch.spec.sections import CERTIFIED_REGIMES
from ticketsearch.spec.objectives import check_objective
from ticketsearch.trainers import imp, transfer, transfer_levels
from ticketsearch.trainers.imp import IMPTrainer
from ticketsearch.trainers.level_spec import Step
from ticketsearch.trainers.levels import LevelStore
from ticketsearch.records import RECORD_FIELDS, SUMMARY_DEFAULTS, EpochRecord, certify_columns, convergence
from ticketsearch.trainers.transfer import TransferTrainer



@dataclass(frozen=True)
class TrainerKind:
    """What a trainer declares where it is registered, so nothing else branches on its name.

    build(config, data, device=, state=, levels=) -> the trainer; plan(config): its levels in order, each
    a `LevelSpec` and the role it plays (trainers/level_spec.py); planned_epochs(config): the epochs
    a trial runs when nothing stops it early; ticket_epochs(config): those of them the trial's ticket
    trains (the time axis ASHA judges trials on); summary_defaults(config): its own summary columns at
    their values before the trial ends (trials.parquet keeps one schema); check(config): what it
    needs before a trial starts, beyond names and shapes. objectives: the summary metrics a search can
    rank its trials by once they end (besides the per-epoch ones, spec/objectives.py); needs_section:
    the spec section it reads that others do not, refused missing; data_sections: the spec paths of
    the data sets it reads (an absent optional section reads none).
    """

    build: Callable[..., Any]
    plan: Callable[[TrialConfig], list[Step]]
    planned_epochs: Callable[[TrialConfig], int]
    ticket_epochs: Callable[[TrialConfig], int]
    summary_defaults: Callable[[TrialConfig], dict[str, Any]] = lambda config: {}
    check: Callable[[TrialConfig], None] = lambda config: None
    objectives: tuple[str, ...] = ()
    needs_section: str | None = None
    data_sections: tuple[str, ...] = ("data",)


TRAINERS: Registry[TrainerKind] = Registry("trainer")
TRAINERS.register("imp")(TrainerKind(
    IMPTrainer, imp.plan_levels, imp.planned_epochs, imp.ticket_epochs, imp.summary_defaults,
    objectives=("speedup", "epoch_speedup", "speedup_seconds", "ticket_epochs_to_target", "ticket_passes_to_target",
                "ticket_seconds_to_target", "best_val_robust_acc", "final_sparsity", "final_val_robust_acc",
                "speedup_matched", "epoch_speedup_matched", "speedup_best_dense", "epoch_speedup_best_dense")))
TRAINERS.register("transfer")(TrainerKind(
    TransferTrainer, transfer_levels.plan_levels, transfer_levels.planned_epochs, transfer_levels.ticket_epochs,
    transfer.summary_defaults, transfer.check, objectives=("best_val_robust_acc", "double_win_margin"),
    needs_section="transfer", data_sections=("data", "transfer.source")))

__all__ = ["TRAINERS", "EpochRecord", "IMPTrainer", "RECORD_FIELDS", "TransferTrainer", "check_config",
           "convergence", "create_trainer", "planned_epochs", "summary_defaults", "ticket_epochs"]


def planned_epochs(config: TrialConfig) -> int:
    """The epochs a trial runs when nothing stops it early (every level of its path, all regimes)."""
    return TRAINERS.get(config.trainer.name, field="trainer.name").planned_epochs(config)


def ticket_epochs(config: TrialConfig) -> int:
    """The epochs a trial's ticket trains when nothing stops it early."""
    return TRAINERS.get(config.trainer.name, field="trainer.name").ticket_epochs(config)


def summary_defaults(config: TrialConfig) -> dict[str, Any]:
    """Every summary column a trial ends with, at its value before the trial ends."""
    kind = TRAINERS.get(config.trainer.name, field="trainer.name")
    return {**SUMMARY_DEFAULTS, **kind.summary_defaults(config), **certify_columns(config)}


def check_config(config: TrialConfig) -> None:
    kind = TRAINERS.get(config.trainer.name, field="trainer.name")
    if kind.needs_section is not None and getattr(config, kind.needs_section) is None:
        raise UserError(f"{kind.needs_section}: trainer {config.trainer.name} needs a {kind.needs_section} section; "
                        f"add {kind.needs_section}: {{...}} to the spec")
    check_objective(config, TRAINERS)
    DATASETS.get(config.data.dataset, field="data.dataset")
    MODELS.get(config.model.arch, field="model.arch")
    for field, attack in (("attack.train", config.attack.train), ("attack.eval", config.attack.eval),
                          ("prune.find_with", config.prune.find_with)):
        if attack is not None:
            ATTACKS.get(attack.kind, field=f"{field}.kind")
            if attack.kind == "autoattack" and field != "attack.eval":
                raise UserError(f"{field}.kind: autoattack is for evaluation only; train with natural, fgsm, pgd, "
                                "trades, mart, ibp or crown_ibp")
    # Build the model on the meta device (no memory, no compute) so width, depth and exclusions are
    # checked before any data is read.
    info = task_info(config.data.dataset, config.data.classes)
    if config.attack.test_autoattack and config.trainer.test_eval:
        check_autoattack_classes(info.num_classes)  # refused at the start, not at the end of a trial
    with torch.device("meta"):
        model = create_model(config.model.arch, width=config.model.width, depth=config.model.depth,
                             num_classes=info.num_classes, in_channels=info.channels, mean=info.mean, std=info.std,
                             input_size=config.model.input_size)
    prunable_weights(model, config.prune.exclude)
    check_certifiable(config, model)
    TRAINERS.get(config.trainer.name, field="trainer.name").check(config)


def check_certifiable(config: TrialConfig, model: torch.nn.Module) -> None:
    """Refuse a model that a bound method the trial runs cannot bound (certify.method, IBP per epoch,
    the certified training regimes' IBP and CROWN-IBP), in one line naming the field and the layer."""
    needs: dict[str, str] = {}  # method -> the field that asks for it
    if config.certify is not None:
        needs[config.certify.method] = "certify.method"
        if config.certify.every_epoch:
            needs.setdefault("ibp", "certify.every_epoch")
    for field, regime in (("attack.train", config.attack.train), ("prune.find_with", config.prune.find_with)):
        if regime is not None and regime.kind in CERTIFIED_REGIMES:
            needs.setdefault("ibp", f"{field}.kind")
            if regime.kind == "crown_ibp":
                needs.setdefault("crown-ibp", f"{field}.kind")
    for method, field in needs.items():
        if config.model.input_size is not None:
            raise UserError(f"{field}: model.input_size resizes images inside the model; certified bounds need "
                            f"images of the model's own size")
        try:
            check_supported(model, method)
        except UserError as error:
            message = str(error).removeprefix("certify: ")
            if field.endswith(".kind"):  # a training regime: name the regime that supports the model
                message = message.replace("method='ibp' supports it", "kind ibp supports it")
            raise UserError(f"{field}: {message}") from None


def create_trainer(config: TrialConfig, data=None, *, device="cpu", state=None, levels_dir=None):
    """The trial's trainer. `levels_dir` holds the levels trials share (trainers/levels.py); without it
    a trial computes every level itself, in memory. The config was checked (`check_config`) by
    whoever made it: `validate`, `train` and the search driver."""
    kind = TRAINERS.get(config.trainer.name, field="trainer.name")
    return kind.build(config, data, device=device, state=state, levels=LevelStore(levels_dir))
