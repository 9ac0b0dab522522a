"""The final summary a search prints: best trial, its config and metrics, where the results are.

A search that failed, because every trial ended in error or because it was stopped after trials kept
failing with the same error, says so in its last line and reports `failed`: the command exits non-zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ticketsearch import layout
from ticketsearch.results.boosting import boosting_lines
from ticketsearch.results.confirmation import confirmation_lines
from ticketsearch.results.intervals import accuracy_text
from ticketsearch.results.leaderboard import completed_first
from ticketsearch.spec import Spec


def summarise(out: Path, spec: Spec, echo: Callable[[str], Any], stopped: str = "") -> dict[str, Any]:
    path = layout.trials_table(out)
    trials = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    objective = spec.default_trial.objective
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    confirming = trials[trials["stage"] == "confirm"] if "stage" in trials else trials.iloc[0:0]
    searched = trials.drop(confirming.index)
    echo(f"search {spec.name}: {len(searched)} trials ({_statuses(searched)})"
         + (f" and {len(confirming)} confirmation trials ({_statuses(confirming)})" if len(confirming) else ""))
    ranked = trials[trials["objective"].notna()] if len(trials) else trials
    if "stage" in ranked:  # the search's best; its confirmation follows (results/confirmation.py)
        ranked = ranked[ranked["stage"] == "search"]
    best: dict[str, Any] = {}
    if len(ranked):
        # The best finished trial, as the leaderboard ranks them (results.leaderboard.completed_first).
        best = completed_first(ranked.sort_values("objective", ascending=objective.mode == "min")).iloc[0].to_dict()
        values = ", ".join(f"{p}={best.get('config.' + p)!r}" for p in spec.space)
        echo(f"best trial {best['trial_id']} ({best['status']}): {objective.metric} {best['objective']:.4f}; {values}")
        shown = [("final_sparsity", "sparsity"), ("final_val_clean_acc", "val clean"),
                 ("final_val_robust_acc", "val robust"), ("test_clean_acc", "test clean"),
                 ("test_robust_acc", "test robust"), ("test_certified_acc", "test certified"),
                 ("speedup", "speed-up incl. finding")]
        # Test-split accuracies with their 95% Wilson interval and image count (results/intervals.py).
        echo("  " + ", ".join(f"{label} {accuracy_text(best, k) if k.startswith('test_') else format(best[k], '.3f')}"
                              for k, label in shown if isinstance(best.get(k), float) and not math.isnan(best[k])))
    for line in boosting_lines(trials) + confirmation_lines(trials):
        echo(line)
    echo(f"results: {layout.epochs_dir(out)} (pandas.read_parquet), {path}; "
         f"tensorboard --logdir {layout.tensorboard_dir(out)}")
    errors = counts.get("error", 0)
    failed = bool(stopped) or (len(trials) > 0 and errors == len(trials))
    if stopped:
        echo(f"search {spec.name} failed: {stopped}")
    elif failed:
        last = trials.loc[trials["status"] == "error", "error"].iloc[-1]
        echo(f"search {spec.name} failed: every trial ended in error ({errors}); the last error: {last}")
    return {"trials": len(trials), "statuses": counts, "best": best, "out": str(out), "failed": failed}


def _statuses(trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
