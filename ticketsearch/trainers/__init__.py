"""Trainers: plain Python objects that yield one `EpochRecord` per epoch and save their state.

`create_trainer(config, ...)` looks the trainer up by `trainer.name`; `check_config(config)` checks
every registered name in a trial config (trainer, data set, model, attacks) without building
anything, so `ticketsearch validate` and the search layer fail before a trial starts.
"""

from __future__ import annotations

from typing import Any, Callable

from ticketsearch.core.attacks import ATTACKS
import torch

from ticketsearch.core.data import DATASETS, dataset_info
from ticketsearch.core.models import MODELS, create_model
from ticketsearch.core.pruning import prunable_weights
from ticketsearch.errors import UserError
from ticketsearch.registry import Registry
from ticketsearch.spec import TrialConfig
from ticketsearch.trainers.imp import IMPTrainer
from ticketsearch.trainers.records import RECORD_FIELDS, EpochRecord, convergence

TRAINERS: Registry[Callable[..., Any]] = Registry("trainer")
TRAINERS.register("imp")(IMPTrainer)

__all__ = ["TRAINERS", "EpochRecord", "IMPTrainer", "RECORD_FIELDS", "check_config", "convergence", "create_trainer"]


def check_config(config: TrialConfig) -> None:
    TRAINERS.get(config.trainer.name, field="trainer.name")
    DATASETS.get(config.data.dataset, field="data.dataset")
    MODELS.get(config.model.arch, field="model.arch")
    for field, attack in (("attack.train", config.attack.train), ("attack.eval", config.attack.eval),
                          ("prune.find_with", config.prune.find_with)):
        if attack is not None:
            ATTACKS.get(attack.kind, field=f"{field}.kind")
    # Build the model on the meta device (no memory, no compute) so width, depth and exclusions are
    # checked before any data is read.
    info = dataset_info(config.data.dataset)
    with torch.device("meta"):
        model = create_model(config.model.arch, width=config.model.width, depth=config.model.depth,
                             num_classes=info.num_classes, in_channels=info.channels, mean=info.mean, std=info.std)
    prunable_weights(model, config.prune.exclude)
    if config.attack.train.kind == "autoattack" or (config.prune.find_with and config.prune.find_with.kind == "autoattack"):
        raise UserError("attack.train.kind: autoattack is for evaluation only; train with natural, fgsm or pgd")


def create_trainer(config: TrialConfig, data=None, *, device="cpu", state=None):
    check_config(config)
    return TRAINERS.get(config.trainer.name, field="trainer.name")(config, data, device=device, state=state)
