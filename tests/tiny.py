"""A tiny, real trial config for tests: digits, a small conv net, a few short epochs."""

from __future__ import annotations

from typing import Any

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
