"""Levels: shared training computed once per search, the same records as a trial that shares nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
import torch

from ticketsearch.core.data import prepare_data
from ticketsearch.trainers import create_trainer
from ticketsearch.trainers.imp import plan_levels
from ticketsearch.trainers.levels import LevelStore

from tiny import tiny_config

TIMING = {"epoch_seconds", "eval_seconds", "examples_per_second"}
# A pruning-ratio sweep at a fixed finding learning rate: FGSM finds the ticket, PGD trains it.
SWEEP = {"prune.find_with": {"fgsm": {"eps": 0.1}}, "prune.find_lr": 0.05, "train.epochs": 2, "train.lr": 0.1}


@pytest.fixture(scope="module")
def digits():
    return prepare_data("digits", "~/data", val_split=200, fraction=1.0)


def comparable(records):
    """Records without wall-clock fields and without who trained them."""
    return [{k: None if v != v else v for k, v in r.as_dict().items() if k not in TIMING | {"reused"}}
            for r in records]


def finished(levels_dir, kind):
    return sorted(levels_dir.glob(f"{kind}-*/result.pt"))


def test_a_pruning_ratio_sweep_trains_the_dense_round_once_with_the_records_of_unshared_trials(digits, tmp_path):
    trials = []
    for ratio in (0.3, 0.5, 0.7, 0.9):
        config = tiny_config(**SWEEP, **{"prune.ratio": ratio})
        shared = create_trainer(config, digits, levels_dir=tmp_path)
        list(shared)
        alone = create_trainer(config, digits)  # every level in this trial's memory
        list(alone)
        assert comparable(shared.records) == comparable(alone.records), f"ratio {ratio}"
        assert shared.summary()["test_robust_acc"] == alone.summary()["test_robust_acc"]
        trials.append(shared.summary())
    # One dense FGSM round and one dense PGD reference for the four trials; a ticket each.
    assert len(finished(tmp_path, "dense")) == 2 and len(finished(tmp_path, "round")) == 4
    assert [t["trained_epochs"] for t in trials] == [6, 2, 2, 2]
    assert [t["reused_epochs"] for t in trials] == [0, 4, 4, 4]
    assert trials[1]["reused_passes"] > 0 and trials[1]["trained_passes"] < trials[0]["trained_passes"]
    # The reference is one network for all four: one target.
    assert len({t["target_robust_acc"] for t in trials}) == 1


def test_a_rounds_sweep_shares_one_imp_path(digits, tmp_path):
    for rounds in (1, 2, 3):
        config = tiny_config(**{"prune.rounds": rounds, "train.epochs": 1})
        list(create_trainer(config, digits, levels_dir=tmp_path))
    # The ticket trains like a finding round here, so the 3-round path holds every shallower ticket.
    assert len(finished(tmp_path, "dense")) == 1 and len(finished(tmp_path, "round")) == 3
    deep = plan_levels(tiny_config(**{"prune.rounds": 3, "train.epochs": 1}))
    shallow = plan_levels(tiny_config(**{"prune.rounds": 2, "train.epochs": 1}))
    assert [s.level.digest for s in shallow] == [s.level.digest for s in deep[:3]]
    # A level does not read what it does not use: the dense round ignores the pruning ratio and train.lr
    # when the ticket is found at prune.find_lr.
    a, b = (plan_levels(tiny_config(**{**SWEEP, **values})) for values in ({"prune.ratio": 0.3, "train.lr": 0.1},
                                                                          {"prune.ratio": 0.8, "train.lr": 0.02}))
    assert a[0].level.digest == b[0].level.digest and a[1].level.digest != b[1].level.digest


def _run_trial(levels_dir, values, queue=None):
    """In a fresh process: one trial sharing `levels_dir`; report (trained, reused) epochs per phase."""
    torch.set_num_threads(1)  # as the tests' own process (conftest.py): the same arithmetic, the same records
    trainer = create_trainer(tiny_config(**values), levels_dir=levels_dir)
    list(trainer)
    if queue is not None:
        queue.put({phase: (sum(not r.reused for r in trainer.records if r.phase == phase),
                           sum(r.reused for r in trainer.records if r.phase == phase))
                   for phase in ("dense", "ticket", "baseline")})


def test_two_trials_needing_a_level_at_once_train_it_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    values = {**SWEEP, "train.epochs": 3}
    workers = [context.Process(target=_run_trial, args=(str(tmp_path), {**values, "prune.ratio": ratio}, queue))
               for ratio in (0.4, 0.6)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    # Each shared level was trained by one of them and reused by the other; each trained its own ticket.
    for phase in ("dense", "baseline"):
        assert sorted(r[phase] for r in results) == [(0, 3), (3, 0)], results
    assert all(r["ticket"] == (3, 0) for r in results)
    assert len(finished(tmp_path, "dense")) == 2


def test_a_level_whose_worker_is_killed_resumes_from_its_last_epoch(digits, tmp_path):
    values = {"prune.rounds": 1, "train.epochs": 6, "trainer.dense_baseline": False}
    config = tiny_config(**values)
    dense = plan_levels(config)[0].level
    progress = tmp_path / dense.name / "progress.pt"
    context = multiprocessing.get_context("spawn")
    worker = context.Process(target=_run_trial, args=(str(tmp_path), values))
    worker.start()
    try:
        deadline = time.time() + 300
        while not progress.is_file() and time.time() < deadline:
            time.sleep(0.05)
        assert progress.is_file(), "the worker saved no progress"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()
    if (tmp_path / dense.name / "result.pt").is_file():
        pytest.skip("the worker finished the level before it was killed")
    saved = LevelStore(tmp_path).progress(dense)["epoch"]
    assert 1 <= saved < 6
    resumed = create_trainer(config, digits, levels_dir=tmp_path)
    list(resumed)
    assert resumed.results[dense.name]["resumed_from"] >= saved  # not from scratch
    alone = create_trainer(config, digits)
    list(alone)
    assert comparable(resumed.records) == comparable(alone.records)
