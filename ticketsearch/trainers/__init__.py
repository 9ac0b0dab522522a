"""Trainers: plain Python objects that yield one `EpochRecord` per epoch and save their state.

`create_trainer(config, ...)` looks the trainer up by `trainer.name`; `check_config(config)` checks
every registered name in a trial config (trainer, data set, model, attacks) without building
anything, so `ticketsearch validate` and the search layer fail before a trial starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ticketsearch.core.attacks import ATTACKS
from ticketsearch.core.data import DATASETS, task_info
from ticketsearch.core.models import MODELS, create_model
from ticketsearch.core.pruning import prunable_weights
from ticketsearch.errors import UserError
from ticketsearch.registry import Registry
from ticketsearch.spec import TrialConfig
from ticketsearch.spec.objectives import check_objective
from ticketsearch.trainers import transfer
from ticketsearch.trainers.imp import IMPTrainer, plan_phases
from ticketsearch.trainers.records import RECORD_FIELDS, EpochRecord, convergence
from ticketsearch.trainers.transfer import TransferTrainer

TRAINERS: Registry[Callable[..., Any]] = Registry("trainer")


@TRAINERS.register("imp")
def _imp(config: TrialConfig, data=None, *, device="cpu", state=None, cache_dir=None) -> IMPTrainer:
    return IMPTrainer(config, data, device=device, state=state)  # nothing of an IMP trial is shared


TRAINERS.register("transfer")(TransferTrainer)

__all__ = ["TRAINERS", "EpochRecord", "IMPTrainer", "RECORD_FIELDS", "TransferTrainer", "check_config",
           "convergence", "create_trainer", "planned_epochs", "summary_defaults"]


def planned_epochs(config: TrialConfig) -> int:
    """The epochs a trial runs when nothing stops it early (every round, phase and regime)."""
    if config.trainer.name == "transfer":
        return transfer.planned_epochs(config)
    return sum(phase.epochs for phase in plan_phases(config))


def summary_defaults(config: TrialConfig) -> dict[str, Any]:
    """Trainer-specific summary columns with their values before a trial ends."""
    return transfer.summary_defaults(config) if config.trainer.name == "transfer" else {}


def check_config(config: TrialConfig) -> None:
    TRAINERS.get(config.trainer.name, field="trainer.name")
    check_objective(config)
    DATASETS.get(config.data.dataset, field="data.dataset")
    MODELS.get(config.model.arch, field="model.arch")
    for field, attack in (("attack.train", config.attack.train), ("attack.eval", config.attack.eval),
                          ("prune.find_with", config.prune.find_with)):
        if attack is not None:
            ATTACKS.get(attack.kind, field=f"{field}.kind")
            if attack.kind == "autoattack" and field != "attack.eval":
                raise UserError(f"{field}.kind: autoattack is for evaluation only; train with natural, fgsm or pgd")
    # Build the model on the meta device (no memory, no compute) so width, depth and exclusions are
    # checked before any data is read.
    info = task_info(config.data.dataset, config.data.classes)
    with torch.device("meta"):
        model = create_model(config.model.arch, width=config.model.width, depth=config.model.depth,
                             num_classes=info.num_classes, in_channels=info.channels, mean=info.mean, std=info.std,
                             input_size=config.model.input_size)
    prunable_weights(model, config.prune.exclude)
    if config.transfer is not None and config.trainer.name == "transfer":
        _check_transfer(config)


def _check_transfer(config: TrialConfig) -> None:
    """What a transfer trial needs before it starts: its files, its source task, its attacks."""
    t = config.transfer
    if t.source is not None:
        DATASETS.get(t.source.dataset, field="transfer.source.dataset")
        task_info(t.source.dataset, t.source.classes)
    pretrain = t.pretrained.pretrain
    if pretrain is not None:
        ATTACKS.get(pretrain.regime.kind, field="transfer.pretrained.pretrain.regime.kind")
        if pretrain.regime.kind == "autoattack":
            raise UserError("transfer.pretrained.pretrain.regime.kind: autoattack is for evaluation only")
    if t.pretrained.file is not None and not Path(t.pretrained.file).expanduser().exists():
        raise UserError(f"transfer.pretrained.file: {t.pretrained.file} does not exist; give a state-dict file, "
                        "a checkpoint.pt or a ticket directory")
    if t.ticket_dir is not None and not (Path(t.ticket_dir).expanduser() / "manifest.json").is_file():
        raise UserError(f"transfer.ticket_dir: {t.ticket_dir} is not a ticket directory (no manifest.json)")


def create_trainer(config: TrialConfig, data=None, *, device="cpu", state=None, cache_dir=None):
    """The trial's trainer. `cache_dir` holds work trials share (transfer: pre-training, IMP, dense)."""
    check_config(config)
    build = TRAINERS.get(config.trainer.name, field="trainer.name")
    return build(config, data, device=device, state=state, cache_dir=cache_dir)
