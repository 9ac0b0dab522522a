"""Test-split accuracies carry a 95% Wilson interval and the number of images it rests on: in the summary
of `train` and of `run`, in `ticketsearch results` and in the report."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from ticketsearch.records import SUMMARY_DEFAULTS
from ticketsearch.results.intervals import accuracy_text, examples_column, interval_of, wilson, with_interval
from ticketsearch.results.leaderboard import leaderboard
from ticketsearch.results.store import SearchResults


@pytest.mark.parametrize("correct, n", [(0, 50), (1, 50), (25, 50), (316, 360), (360, 360), (7, 10)])
def test_wilson_matches_scipy(correct, n):
    expected = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(correct / n, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_missing_or_impossible_inputs_give_no_interval():
    for fraction, count in ((math.nan, 100), (0.5, math.nan), (0.5, 0), (1.5, 100)):
        assert all(math.isnan(v) for v in wilson(fraction, count))
    assert with_interval(0.5, math.nan) == "50.0%"


def test_accuracies_read_with_their_interval_and_image_count():
    assert with_interval(0.877, 360) == "87.7% [83.9, 90.7] (n=360)"
    row = {"test_robust_acc": 0.5, "test_examples": 100.0, "test_certified_acc": 0.25, "test_certified_examples": 20.0}
    assert accuracy_text(row, "test_robust_acc") == "50.0% [40.4, 59.6] (n=100)"
    assert interval_of(row, "test_certified_acc")[2] == 20  # certified figures rest on their own count
    assert examples_column("reference_test_clean_acc") == "reference_test_examples"
    assert examples_column("best_test_certified_acc") == "best_test_certified_examples"


def _summary(**values) -> dict:
    return {**SUMMARY_DEFAULTS, "status": "completed", "epochs_trained": 4, "train_seconds": 1.0,
            "final_sparsity": 0.5, "final_val_clean_acc": 0.9, "final_val_robust_acc": 0.5, "robust_auc": 0.4,
            "test_clean_acc": 0.877, "test_robust_acc": 0.5, "test_examples": 360.0, **values}


def test_the_train_summary_shows_intervals(tmp_path):
    from ticketsearch.single_trial import format_summary

    text = format_summary(_summary(test_autoattack_acc=0.45), [], tmp_path)
    assert "test split: clean 87.7% [83.9, 90.7] (n=360), robust 50.0% [44.9, 55.1] (n=360), AutoAttack 45.0%" in text


def test_the_search_summary_shows_intervals(tmp_path):
    from search_helpers import search_spec

    from ticketsearch.search.summary import summarise
    from ticketsearch.spec import load_spec

    spec = load_spec(search_spec(tmp_path))
    row = _summary(trial_id="t1", objective=0.5, stage="search", confirms="", error="")
    pd.DataFrame([row]).to_parquet(tmp_path / "trials.parquet")
    lines: list[str] = []
    summarise(tmp_path, spec, lines.append)
    assert any("test clean 87.7% [83.9, 90.7] (n=360), test robust 50.0% [44.9, 55.1] (n=360)" in line
               for line in lines), lines


def test_results_and_the_report_give_the_interval_and_the_images(tmp_path):
    from ticketsearch.results.report_text import leaderboard_lines

    trials = pd.DataFrame([_summary(trial_id="a", objective=0.5),
                           _summary(trial_id="b", objective=0.4, test_clean_acc=math.nan, test_robust_acc=math.nan,
                                    test_examples=math.nan)])
    results = SearchResults(out=Path(tmp_path), epochs=pd.DataFrame(), trials=trials,
                            search={"space": {}, "spec": {"objective": {"metric": "robust_auc", "mode": "max"}}})
    board = leaderboard(results)
    columns = list(board.columns)
    assert columns[columns.index("test_clean_acc"):columns.index("test_examples") + 1] == [
        "test_clean_acc", "test_clean_acc_low", "test_clean_acc_high",
        "test_robust_acc", "test_robust_acc_low", "test_robust_acc_high", "test_examples"]
    assert (board.loc[0, "test_robust_acc_low"], board.loc[0, "test_robust_acc_high"]) == pytest.approx(wilson(0.5, 360))
    assert math.isnan(board.loc[1, "test_clean_acc_low"])
    lines = leaderboard_lines(trials, {}, "robust_auc")
    assert "| test clean (%) [95%] | test robust (%) [95%] | test images |" in lines[0]
    assert "| 87.7 [83.9, 90.7] | 50.0 [44.9, 55.1] | 360 |" in lines[2]
    assert "| – | – | – |" in lines[3]
