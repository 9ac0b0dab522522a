"""A tiny, real trial config for tests: digits, a small conv net, a few short epochs."""

from __future__ import annotations

import math
from typing import Any

from ticketsearch.records import EpochRecord
from ticketsearch.spec import TrialConfig, validate_trial
from ticketsearch.spec.distributions import set_path

TINY_TREE: dict[str, Any] = {
    "name": "tiny",
    "data": {"dataset": "digits", "val_split": 200},
    "model": {"arch": "small_cnn", "width": 0.25},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "eval_examples": 100, "schedule": "constant"},
    "attack": {"train": {"pgd": {"eps": 0.1, "alpha": 0.05, "steps": 2}},
               "eval": {"pgd": {"eps": 0.1, "alpha": 0.03, "steps": 5}},
               # AutoAttack at full strength takes longer than these trials; tests that need it ask for it.
               "test_autoattack": False},
    "prune": {"ratio": 0.5, "rounds": 1, "exclude": ["first_conv", "classifier"]},
}


def tiny_tree(**values: Any) -> dict[str, Any]:
    """The tiny spec tree with dotted paths overridden: tiny_tree(**{"train.lr": 0.1})."""
    tree = TINY_TREE
    for path, value in values.items():
        tree = set_path(tree, path, value)
    return tree


def tiny_config(**values: Any) -> TrialConfig:
    return validate_trial(tiny_tree(**values), "tiny")


def epoch_record(epoch: int, robust: float, *, clean: float = 0.9, passes: float = 100.0) -> EpochRecord:
    """One validation epoch of a made-up curve: the fields the convergence measures read, the rest neutral."""
    return EpochRecord(round=0, phase="", epoch=epoch, global_epoch=epoch, sparsity=0.0, regime="", lr=0.1,
                       train_loss=1.0, train_acc=0.5, val_clean_acc=clean, val_robust_acc=robust, robust_auc=robust,
                       epoch_seconds=1.0, eval_seconds=0.0, examples_per_second=0.0, guard_robust_acc=math.nan,
                       guard_fired=False, guard_action="", passes=passes)


def curve(*robust: float, passes: float = 100.0) -> list[EpochRecord]:
    """A validation robust-accuracy curve, one epoch per value."""
    return [epoch_record(i, r, passes=passes) for i, r in enumerate(robust, start=1)]
