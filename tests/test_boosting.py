"""Boosting tickets found and measured: the effect on digits, cost in passes, ASHA on ticket epochs,
a finite objective for tickets that never catch the reference, several objectives and their front."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from ticketsearch.cli import main
from ticketsearch.records import EpochRecord, convergence, objective_value
from ticketsearch.results.trials_table import amortize
from ticketsearch.search.space import make_scheduler
from ticketsearch.spec import AttackConfig, load_spec, validate_trial
from ticketsearch.trainers import create_trainer
from ticketsearch.trainers.engine import passes_per_example
from ticketsearch.trainers.imp import plan_levels

from search_helpers import search_spec
from tiny import tiny_config


def record(phase: str, robust: float, passes: float, epoch: int = 1) -> EpochRecord:
    return EpochRecord(round=0, phase=phase, epoch=epoch, global_epoch=epoch, sparsity=0.0, regime="", lr=0.1,
                       train_loss=1.0, train_acc=0.5, val_clean_acc=robust, val_robust_acc=robust,
                       robust_auc=robust, epoch_seconds=passes / 1000, eval_seconds=0.0, examples_per_second=0.0,
                       guard_robust_acc=math.nan, guard_fired=False, guard_action="", passes=passes)


def test_a_fifty_percent_ticket_on_digits_reaches_the_reference_in_fewer_epochs():
    # The boosting-ticket setting on digits: a 12-epoch dense PGD-5 round (which is also the reference),
    # one-shot 50% global pruning, rewound to the initialisation, the ticket trained the same way.
    config = validate_trial({
        "name": "boosting", "data": {"dataset": "digits", "val_split": 300},
        "model": {"arch": "small_cnn", "width": 0.5},
        "train": {"epochs": 12, "batch_size": 64, "lr": 0.05, "eval_examples": 300, "schedule": "cosine"},
        "attack": {"train": {"pgd": {"eps": 0.1, "alpha": 0.04, "steps": 5}},
                   "eval": {"pgd": {"eps": 0.1, "alpha": 0.02, "steps": 10}}, "test_autoattack": False},
        "prune": {"ratio": 0.5, "rounds": 1, "scope": "global"}, "trainer": {"test_eval": False}})
    assert [s.phase for s in plan_levels(config)] == ["dense", "ticket"]  # the dense round is the reference
    trainer = create_trainer(config)
    list(trainer)
    summary = trainer.summary()
    assert summary["reached_target"], summary
    assert summary["ticket_epochs_to_target"] < summary["dense_epochs_to_target"]
    # the target: the reference's final validation robust accuracy, as a trailing 3-epoch mean
    assert summary["target_robust_acc"] == pytest.approx(sum(r.val_robust_acc for r in trainer.records[9:12]) / 3)
    assert summary["target_robust_acc"] > 0.6
    ticket = [r for r in trainer.records if r.phase == "ticket"]
    assert not math.isnan(ticket[0].convergence_gap)  # judged against the reference from its first epoch


def test_pass_counts_and_speedup_from_known_counts():
    assert passes_per_example(AttackConfig(kind="natural")) == 1
    assert passes_per_example(AttackConfig(kind="fgsm", eps=0.1)) == 2
    assert passes_per_example(AttackConfig(kind="pgd", eps=0.1, steps=10)) == 11
    # Reference: 6 epochs of 100 passes; its smoothed curve (trailing 3-epoch mean) first reaches its final
    # value, 0.8, at epoch 6. Ticket: its first 3-epoch mean, 0.83, reaches 0.8 at its 3rd epoch (its
    # first two epochs have no 3-epoch mean); finding cost 150 passes. speedup = 600 / (150 + 300).
    reference = [record("baseline", acc, 100, i + 1) for i, acc in enumerate((0.3, 0.5, 0.7, 0.8, 0.8, 0.8))]
    ticket = [record("ticket", acc, 100, i + 1) for i, acc in enumerate((0.7, 0.9, 0.9))]
    finding = [record("dense", 0.4, 75, 1), record("dense", 0.5, 75, 2)]
    out = convergence(ticket, reference, finding)
    assert out["target_robust_acc"] == pytest.approx(0.8) and out["reached_target"]
    assert (out["ticket_epochs_to_target"], out["dense_epochs_to_target"]) == (3, 6)
    assert out["speedup"] == pytest.approx(600 / 450) and out["epoch_speedup"] == 2
    assert out["time_saved"] == pytest.approx(1 - 450 / 600) and out["find_passes"] == 150
    # Two tickets pruned from one finding round share its cost.
    frame = amortize(pd.DataFrame([{"trial_id": t, "find_level": "dense-x", "final_round": 1, "config.prune.rounds": 1,
                                    **out} for t in ("a", "b")]))
    assert frame["speedup_amortized"].tolist() == pytest.approx([600 / (75 + 300)] * 2)


def test_a_ticket_that_never_reaches_the_target_ranks_last_with_a_finite_value():
    reference = [record("baseline", acc, 100, i + 1) for i, acc in enumerate((0.8, 0.8))]
    reached = convergence([record("ticket", 0.81, 100), record("ticket", 0.81, 100, 2)], reference, [])
    close = convergence([record("ticket", 0.7, 100), record("ticket", 0.75, 100, 2)], reference, [])
    far = convergence([record("ticket", 0.2, 100), record("ticket", 0.3, 100, 2)], reference, [])
    assert math.isnan(close["speedup"]) and not close["reached_target"]  # the column stays honest
    for metric, better in (("speedup", max), ("epoch_speedup", max), ("ticket_epochs_to_target", min),
                           ("ticket_passes_to_target", min)):
        values = [objective_value(metric, [], s) for s in (reached, close, far)]
        assert all(math.isfinite(v) for v in values), metric
        assert better(values) == values[0], metric  # the ticket that reached the target ranks first
        assert sorted(values, reverse=better is max) == values, metric  # and the closer miss before the far one


def test_asha_compares_ticket_epochs_only(tmp_path):
    spec = load_spec(search_spec(tmp_path, **{"prune.find_with": {"fgsm": {"eps": 0.1}}}))
    scheduler = make_scheduler(spec)
    assert scheduler._time_attr == "ticket_epoch" and scheduler._max_t == 2  # the ticket's 2 epochs
    trainer = create_trainer(tiny_config(**{"prune.find_with": {"fgsm": {"eps": 0.1}}, "train.epochs": 2}))
    clock = []
    for r in trainer:
        clock.append((r.phase, trainer.ticket_epoch))
    assert clock == [("dense", 0), ("dense", 0), ("baseline", 0), ("baseline", 0), ("ticket", 1), ("ticket", 2)]


def test_a_two_objective_search_lists_its_pareto_front(tmp_path, capsys):
    path = search_spec(tmp_path, **{
        "objective": [{"metric": "best_val_robust_acc", "mode": "max"}, {"metric": "final_sparsity", "mode": "max"}],
        "search": {"algorithm": "optuna", "num_samples": 4, "max_concurrent": 2, "seed": 0, "scheduler": "fifo"},
        "train.epochs": 1})
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--num-cpus", "2"]) == 0
    trials = pd.read_parquet(out / "trials.parquet")
    assert (trials["objective"] == trials["best_val_robust_acc"]).all()
    assert (trials["objective_final_sparsity"] == trials["final_sparsity"]).all()
    capsys.readouterr()
    assert main(["results", str(out), "--format", "csv"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    front = table[table["pareto"]]
    assert len(front) >= 1 and table["pareto"].iloc[0]  # the front is listed first
    for _, a in front.iterrows():  # no trial beats a front member on both objectives
        beaten = (table["objective"] >= a["objective"]) & (table["objective_final_sparsity"] >= a["objective_final_sparsity"]) \
            & ((table["objective"] > a["objective"]) | (table["objective_final_sparsity"] > a["objective_final_sparsity"]))
        assert not beaten.any()
    assert main(["report", str(out)]) == 0
    assert "## Pareto front" in (out / "report" / "report.md").read_text()
    spec_text = yaml.safe_load(path.read_text())
    assert isinstance(spec_text["objective"], list)


def test_the_boosting_summary_says_how_the_reference_trained():
    # A speed-up is only as meaningful as the dense network it is measured against.
    from ticketsearch.results.boosting import boosting_lines

    row = {"trial_id": "t", "status": "completed", "target_robust_acc": 0.8, "reached_target": True,
           "final_sparsity": 0.5, "ticket_epochs_to_target": 11.0, "dense_epochs_to_target": 20.0,
           "epoch_speedup": 20 / 11, "speedup": 1.25, "time_saved": 0.2, "speedup_amortized": 1.25,
           "config.train.lr": 0.15, "config.train.epochs": 20}
    fixed = pd.DataFrame([{**row, "config.reference.lr": 0.05, "config.reference.epochs": ""}])
    assert "reference at lr 0.05, 20 epochs" in boosting_lines(fixed)[0]
    own = pd.DataFrame([{**row, "config.reference.lr": "", "config.reference.epochs": 30}])
    assert "reference at each ticket's own lr, 30 epochs" in boosting_lines(own)[0]
