"""A level's name covers everything it reads: change any leaf of a trial config, and each level either
gets another name or trains exactly as before (the key-completeness test of trainers/level_spec.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ticketsearch.core.checkpoint import load_state
from ticketsearch.errors import UserError
from ticketsearch.spec import validate_trial
from ticketsearch.spec.distributions import set_path
from ticketsearch.trainers import TRAINERS, check_config, create_trainer
from ticketsearch.trainers.imp import plan_levels

from test_transfer import SOURCE
from tiny import tiny_tree

TIMING = {"epoch_seconds", "eval_seconds", "examples_per_second"}
# As a trial stamps a level's records: not part of what the level computed.
STAMPED = TIMING | {"reused", "global_epoch", "round", "phase", "role", "level", "convergence_gap"}

IMP = tiny_tree(**{"data.fraction": 0.2, "trainer.test_eval": False, "train.epochs": 1, "train.eval_examples": 20, "train.eval_batch_size": 20,
                   "prune.find_with": {"fgsm": {"eps": 0.1}}, "reference.matched": True})
TRANSFER = {
    "name": "tinytransfer",
    "data": {"dataset": "digits", "classes": [5, 6, 7], "val_split": 60, "fraction": 0.3},
    "model": {"arch": "small_cnn", "width": 0.25},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "eval_examples": 20, "schedule": "constant"},
    "attack": {"train": {"pgd": {"eps": 0.1, "alpha": 0.05, "steps": 2}},
               "eval": {"pgd": {"eps": 0.1, "alpha": 0.03, "steps": 3}}, "test_autoattack": False},
    "prune": {"ratio": 0.6, "rounds": 1}, "trainer": {"name": "transfer", "test_eval": False},
    "transfer": {"pretrained": {"pretrain": {"epochs": 1}}, "source": {**SOURCE, "fraction": 0.2}, "ticket": "imp"},
}
BASES = {"imp": IMP, "transfer": TRANSFER}


def leaves(tree, prefix=""):
    """(dotted path, value) of every leaf of a trial config's tree."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


def changes(value):
    """Other values to try for a leaf, most likely valid first."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2, max(0, value - 1)]
    if isinstance(value, float):
        return [value / 2, value * 1.5, 0.5]
    if isinstance(value, str):
        return {"auto": ["fp32", "bf16"], "fp32": ["bf16"], "global": ["layerwise"], "last": ["best"],
                "eval": ["train"], "none": ["reinit"], "rollback": ["stop"], "max": ["min"],
                "cosine": ["constant"], "constant": ["cosine"]}.get(value, [f"{value}/elsewhere"] if "/" in value else [])
    if value is None:
        return [1, 0.5, True]
    return []


def changed_configs(tree):
    """(path, new value, config) for every leaf that has another valid value."""
    base = validate_trial(tree, "base").to_dict()
    for path, value in leaves(base):
        for new in changes(value):
            try:
                config = validate_trial(set_path(copy.deepcopy(base), path, new), "changed")
                check_config(config)
            except UserError:
                continue
            yield path, new, config
            break


def level_records(levels_dir: Path) -> dict[str, list[dict]]:
    """Every level the trial trained or read, by name: its records as the level computed them."""
    out = {}
    for result in levels_dir.glob("*/result.pt"):
        records = load_state(result).get("records", [])
        out[result.parent.name] = [comparable(r) for r in records]
    return out


def comparable(record: dict) -> dict:
    return {k: (None if v != v else v) for k, v in record.items() if k not in STAMPED}


def trained(config, levels_dir: Path) -> dict[str, list[dict]]:
    """Every level of a trial by name: those kept in the store and those the trial trains itself."""
    torch.manual_seed(1234)  # nothing a level computes may depend on the global generator
    trainer = create_trainer(config, levels_dir=levels_dir)
    list(trainer)
    out = level_records(levels_dir)
    for record in trainer.records:
        if record.level not in out or not (levels_dir / record.level).is_dir():
            out.setdefault(record.level, []).append(comparable(record.as_dict()))
    return out


def planned_names(config) -> set[str]:
    """The names of a trial's levels, from its plan alone."""
    return {s.level.name for s in TRAINERS.get(config.trainer.name).plan(config)}


@pytest.mark.parametrize("trainer", sorted(TRAINERS.names()))
def test_every_leaf_changes_a_levels_name_or_none_of_its_records(trainer, tmp_path):
    base_tree = BASES[trainer]
    base_config = validate_trial(base_tree, "base")
    base = trained(base_config, tmp_path / "base")
    assert base, "the base trial trained no level"
    base_names = planned_names(base_config)
    # Leaves whose change renames no planned level are changed together, in one trial (a change that
    # would then be invalid is left out of it); the others one by one, unless they rename every level.
    together, bundle, alone, renamed = validate_trial(base_tree, "base").to_dict(), [], [], []
    for path, new, config in changed_configs(base_tree):
        names = planned_names(config)
        if not names & base_names:
            renamed.append(path)
        elif names == base_names:
            try:
                candidate = set_path(copy.deepcopy(together), path, new)
                config = validate_trial(candidate, "bundle")
                check_config(config)  # what validate, train and run refuse before a trial starts
                if planned_names(config) == base_names:
                    together = candidate
                    bundle.append((path, new))
                    continue
            except UserError:
                pass
            alone.append((path, new, config))
        else:
            alone.append((path, new, config))
    if bundle:
        alone.append((", ".join(path for path, _ in bundle), "changed together", validate_trial(together, "bundle")))
    checked = []
    for i, (path, new, config) in enumerate(alone):
        try:
            again = trained(config, tmp_path / f"changed{i}")
        except UserError:
            continue  # a valid spec the trainer refuses (e.g. a rewind point the dense round never reaches)
        shared = set(base) & set(again)
        for name in shared:
            assert again[name] == base[name], f"{path} = {new!r} changed level {name} without renaming it"
        (checked if shared else renamed).append(path)
    checked = {p for paths in checked for p in paths.split(", ")}
    # The test changed what levels read and what they do not.
    assert "train.lr" in renamed or "train.lr" in checked
    assert {"search.num_samples", "objective.mode", "train.test_examples", "data.root"} <= checked
    assert "train.precision" in renamed


def test_a_bf16_level_is_not_handed_to_an_fp32_trial():
    fp32, bf16 = (plan_levels(validate_trial(set_path(IMP, "train.precision", p), "p")) for p in ("fp32", "bf16"))
    assert not {s.level.name for s in fp32} & {s.level.name for s in bf16}
