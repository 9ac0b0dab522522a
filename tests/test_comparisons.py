"""The ticket against three dense networks: the fixed reference, dense at its own learning rate
(matched) and the best of several learning rates (best_of); a rewound ticket's head start counted."""

from __future__ import annotations

import math

import pytest

from ticketsearch.errors import UserError
from ticketsearch.records import best_dense, convergence, convergence_gap
from ticketsearch.trainers import create_trainer
from ticketsearch.trainers.imp import plan_levels

from tiny import curve, tiny_config


def test_best_dense_targets_the_best_final_accuracy_and_the_fewest_passes_to_it():
    # Both dense curves end at 0.6 (their final 3-epoch means); lr 0.2 gets there sooner.
    slow = curve(0.3, 0.4, 0.5, 0.55, 0.6, 0.6, 0.6)
    fast = curve(0.3, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6)
    ticket = curve(0.5, 0.6, 0.6, 0.6)
    out = best_dense(ticket, {0.05: slow, 0.2: fast}, finding=curve(0.1, passes=50.0))
    assert out["best_dense_target_robust_acc"] == pytest.approx(0.6)
    assert out["best_dense_lr"] == 0.2  # it reaches 0.6 first (smoothed: at its 5th epoch)
    assert out["best_dense_epochs_to_target"] == 5 and out["best_dense_passes_to_target"] == 500
    assert out["epoch_speedup_best_dense"] == pytest.approx(5 / 4)  # the ticket's 3-epoch mean reaches it at 4
    assert out["speedup_best_dense"] == pytest.approx(500 / (50 + 400))
    # A dense curve at chance takes no part; with none left there is nothing to compare.
    dead = curve(0.1, 0.1, 0.1, 0.1)
    assert best_dense(ticket, {0.05: slow, 1.0: dead}, [], chance=0.1)["best_dense_lr"] == 0.05
    assert math.isnan(best_dense(ticket, {1.0: dead}, [], chance=0.1)["speedup_best_dense"])


def test_a_rewound_ticket_is_compared_at_the_same_total_training():
    reference = curve(0.2, 0.4, 0.5, 0.6, 0.6, 0.6)
    ticket = curve(0.5, 0.6, 0.6, 0.6)  # rewound to epoch 2 of the dense round
    plain, rewound = convergence(ticket, reference, []), convergence(ticket, reference, [], head_start=2)
    assert rewound["ticket_epochs_to_target"] == plain["ticket_epochs_to_target"] + 2
    assert rewound["epoch_speedup"] < plain["epoch_speedup"]
    # Its epoch i meets the reference's epoch i + 2.
    assert convergence_gap(ticket[:1], reference, head_start=2) == pytest.approx(0.5 - 0.5)
    assert convergence_gap(ticket[:1], reference) == pytest.approx(0.5 - 0.2)


def test_the_comparisons_are_levels_shared_within_the_plan():
    config = tiny_config(**{"train.lr": 0.1, "reference": {"lr": 0.05, "matched": True, "best_of": [0.05, 0.1]}})
    steps = plan_levels(config)
    # The dense round trains as the ticket does, so it is the matched network and best_of 0.1; best_of
    # 0.05 is the reference: 2 dense networks for 4 comparisons.
    assert [(s.phase, s.level.recipe.lr) for s in steps] == [("dense", 0.1), ("baseline", 0.05), ("ticket", 0.1)]
    # A finding regime of its own: the matched network is a level of its own.
    config = tiny_config(**{"train.lr": 0.1, "prune.find_with": {"fgsm": {"eps": 0.1}},
                            "reference": {"lr": 0.05, "matched": True, "best_of": [0.05, 0.1]}})
    assert [(s.phase, s.level.recipe.lr) for s in plan_levels(config)] == [
        ("dense", 0.1), ("baseline", 0.05), ("matched", 0.1), ("ticket", 0.1)]


def test_a_trial_reports_the_matched_and_best_dense_speedups():
    config = tiny_config(**{"train.lr": 0.2, "train.epochs": 3, "prune.find_lr": 0.2, "trainer.test_eval": False,
                            "reference": {"lr": 0.05, "matched": True, "best_of": [0.05, 0.2]}})
    trainer = create_trainer(config)
    records = list(trainer)
    assert {r.phase for r in records} == {"dense", "baseline", "ticket"}  # matched = the dense round here
    summary = trainer.summary()
    assert summary["best_dense_lr"] in (0.05, 0.2)
    ticket = [r for r in records if r.phase == "ticket"]
    matched = [r for r in records if r.phase == "dense"]
    again = convergence(ticket, matched, matched, chance=0.1)
    assert summary["epoch_speedup_matched"] == again["epoch_speedup"] or (
        math.isnan(summary["epoch_speedup_matched"]) and math.isnan(again["epoch_speedup"]))
    assert summary["best_dense_target_robust_acc"] >= summary["target_robust_acc"] - 1e-12
    for column in ("speedup_matched", "speedup_best_dense"):  # present for every trial, NaN when unreached
        assert column in summary


def test_a_rewind_point_the_dense_round_never_reached_is_an_error_naming_it():
    # lr 1e-9 barely moves, so patience 1 ends the dense round within its first 3 epochs, before the
    # rewind point 5.
    config = tiny_config(**{"train.lr": 1e-9, "train.epochs": 6, "train.patience": 1, "prune.rewind": 5,
                            "trainer.test_eval": False})
    trainer = create_trainer(config)
    with pytest.raises(UserError, match=r"^prune.rewind: the dense round ended at epoch [23] .* before epoch 5"):
        list(trainer)
