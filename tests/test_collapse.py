"""No verdict on a dead network: a reference or a ticket that ended at chance gets no target, time to
target, speed-up or convergence gap, is marked `collapsed` and is named in the summary's lines."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ticketsearch.records import COLLAPSE_MARGIN, EpochRecord, collapsed, convergence
from ticketsearch.results.boosting import boosting_lines
from ticketsearch.trainers import create_trainer

from tiny import epoch_record, tiny_config


def record(clean: float, robust: float, epoch: int = 1) -> EpochRecord:
    return epoch_record(epoch, robust, clean=clean)


def curve(*pairs: tuple[float, float]) -> list[EpochRecord]:
    return [record(c, r, i) for i, (c, r) in enumerate(pairs, start=1)]


LEARNED = curve((0.6, 0.3), (0.8, 0.5), (0.9, 0.6), (0.9, 0.6))


def test_collapse_is_the_last_epoch_at_chance_plus_the_margin():
    chance = 0.1
    assert collapsed(curve((0.9, 0.5), (0.1 + COLLAPSE_MARGIN, 0.1)), chance)
    assert not collapsed(curve((0.1, 0.1), (0.1 + COLLAPSE_MARGIN + 0.01, 0.1)), chance)  # it recovered
    # A reference is also dead when its robust accuracy ends at chance: any ticket would "reach" it.
    assert collapsed(curve((0.9, 0.12)), chance, robust=True) and not collapsed(curve((0.9, 0.12)), chance)
    assert not collapsed([], chance)


def test_a_reference_at_chance_sets_no_target():
    dead = curve((0.3, 0.2), (0.1, 0.1), (0.1, 0.1))
    out = convergence(LEARNED, dead, [], chance=0.1)
    assert out["reference_collapsed"] and not out["collapsed"]
    for column in ("target_robust_acc", "speedup", "epoch_speedup", "ticket_epochs_to_target", "dense_epochs_to_target"):
        assert math.isnan(out[column]), column
    assert not out["reached_target"]
    assert out["no_verdict"].startswith("the dense reference ended at chance (val clean 10.0%")


def test_a_ticket_at_chance_gets_no_speedup_even_when_it_touched_the_target_early():
    # The ticket's curve passes the target at epoch 2, then dies: no time to target is credited.
    ticket = curve((0.9, 0.7), (0.9, 0.7), (0.9, 0.7), (0.1, 0.0))
    out = convergence(ticket, LEARNED, [], chance=0.1)
    assert out["collapsed"] and not out["reference_collapsed"]
    assert math.isnan(out["speedup"]) and math.isnan(out["ticket_epochs_to_target"]) and not out["reached_target"]
    assert "ticket ended at chance" in out["no_verdict"]
    # The same curves with a live ticket do get a verdict: the check is what withheld it.
    alive = convergence(ticket[:3], LEARNED, [], chance=0.1)
    assert alive["reached_target"] and alive["epoch_speedup"] > 1 and alive["no_verdict"] == ""


def test_summary_lines_say_why_there_is_no_verdict():
    base = {"status": "completed", "reached_target": False, "final_sparsity": 0.5, "trial_id": "t1",
            "target_robust_acc": math.nan, "collapsed": False, "reference_collapsed": True,
            "no_verdict": "the dense reference ended at chance (val clean 9.0%, robust 8.0%; chance 10.0%): it sets no target"}
    lines = boosting_lines(pd.DataFrame([base]))
    assert lines == [f"  no verdict on 1 trial(s), e.g. t1: {base['no_verdict']}"]
    # A live trial beside a dead ticket: the dead one is neither counted as finished nor as fastest.
    live = {**base, "trial_id": "t2", "target_robust_acc": 0.5, "reached_target": True, "reference_collapsed": False,
            "no_verdict": "", "epoch_speedup": 2.0, "speedup": 1.5, "time_saved": 1 / 3, "ticket_epochs_to_target": 2.0,
            "dense_epochs_to_target": 4.0}
    dead = {**live, "trial_id": "t3", "collapsed": True, "reached_target": False, "epoch_speedup": math.nan,
            "no_verdict": "the ticket ended at chance (val clean 8.0%; chance 10.0%): it gets no time to target or speed-up"}
    lines = boosting_lines(pd.DataFrame([live, dead]))
    assert lines[0].startswith("boosting: 1 of 1 finished tickets reached")
    assert any(line.startswith("  no verdict on 1 trial(s), e.g. t3: the ticket ended at chance") for line in lines)
    assert any("fastest in the search (its own pick, on the images that ranked it): t2" in line for line in lines)


def test_a_trial_whose_networks_stay_at_chance_reports_collapsed_and_no_speedup():
    # lr 1e-9: nothing moves, and the digits nets answer (nearly) one class everywhere (6-10% clean).
    config = tiny_config(**{"train.lr": 1e-9, "train.epochs": 1, "trainer.test_eval": False})
    trainer = create_trainer(config)
    list(trainer)
    summary = trainer.summary()
    assert summary["reference_collapsed"] and summary["collapsed"]
    assert math.isnan(summary["target_robust_acc"]) and math.isnan(summary["speedup"])
    assert not summary["reached_target"]
    assert all(math.isnan(r.convergence_gap) for r in trainer.records if r.phase == "ticket")
    assert summary["no_verdict"].startswith("the dense reference ended at chance")
    lines = boosting_lines(pd.DataFrame([{**summary, "trial_id": "dead"}]))
    assert len(lines) == 1 and lines[0].startswith("  no verdict on 1 trial(s), e.g. dead: the dense reference")


@pytest.mark.parametrize("column", ["collapsed", "reference_collapsed", "no_verdict"])
def test_the_columns_exist_from_a_trials_first_row(column):
    from ticketsearch.trainers import summary_defaults

    assert column in summary_defaults(tiny_config())
