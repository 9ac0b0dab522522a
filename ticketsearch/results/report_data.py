"""What the report is drawn from: its trials table, its objective, the trials' ranking and how a metric is shown.

Shared by the report's text (results/report_text.py) and its plots (results/report_plots.py), so both
rank and scale the trials the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ticketsearch.results.leaderboard import completed_first
from ticketsearch.results.store import SearchResults

FINETUNE = "finetune_"  # the transfer trainer's phases: finetune_standard, finetune_adversarial
# Metrics that are fractions in [0, 1]: shown in %.
FRACTIONS = {"robust_auc", "val_robust_acc", "val_clean_acc", "train_acc", "best_val_robust_acc"}
UNITS = {"ticket_epochs_to_target": "epochs", "ticket_seconds_to_target": "s", "ticket_passes_to_target": "passes",
         "speedup": "×", "epoch_speedup": "×", "speedup_seconds": "×"}


def trials_so_far(results: SearchResults, epochs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """trials.parquet, plus a `running` row (from its last epoch) for a trial that has epochs only.

    `ticketsearch train` writes no `objective` column: it is then the objective metric's column.
    """
    trials = results.trials.copy()
    if "trial_id" not in trials:
        trials = pd.DataFrame({"trial_id": pd.Series(dtype=str)})
    if "objective" not in trials:
        trials["objective"] = numeric_column(trials, metric)
    missing = sorted(set(epochs["trial_id"]) - set(trials["trial_id"]))
    if missing:
        last = epochs[epochs["trial_id"].isin(missing)].sort_values("global_epoch").groupby("trial_id").last()
        extra = pd.DataFrame({
            "trial_id": last.index, "status": "running",
            "final_sparsity": last["sparsity"].to_numpy(), "final_val_clean_acc": last["val_clean_acc"].to_numpy(),
            "final_val_robust_acc": last["val_robust_acc"].to_numpy(), "robust_auc": last["robust_auc"].to_numpy(),
            "objective": last[metric].to_numpy() if metric in last else np.nan,
        })
        trials = pd.concat([trials, extra], ignore_index=True)
    for column in ("status", "error"):
        if column not in trials:
            trials[column] = "running" if column == "status" else ""
    trials["status"] = trials["status"].fillna("running")
    return trials


def numeric_column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, NaN where absent or not a number."""
    if name not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[name], errors="coerce")


def objective_of(results: SearchResults) -> tuple[str, str]:
    """(metric, mode) the report ranks by: the spec's (first) objective, else the trials' own config."""
    spec_objective = (results.search.get("spec") or {}).get("objective") or {}
    if isinstance(spec_objective, list):  # several objectives: the report ranks by the first
        spec_objective = spec_objective[0] if spec_objective else {}
    trials = results.trials
    metric = spec_objective.get("metric") or first_value(trials, "config.objective.metric") or "robust_auc"
    mode = spec_objective.get("mode") or first_value(trials, "config.objective.mode") or "max"
    return str(metric), str(mode)


def first_value(frame: pd.DataFrame, column: str) -> Any:
    """The column's first value that is not missing; None when there is none."""
    values = frame[column].dropna() if column in frame else ()
    return values.iloc[0] if len(values) else None


def best_first(trials: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Trials with an objective, best first, completed ones before the rest (ties broken by trial id,
    so the order is reproducible)."""
    scored = trials.assign(objective=numeric_column(trials, "objective"))
    scored = scored[scored["objective"].notna()].sort_values("trial_id")
    scored = scored.sort_values("objective", ascending=mode == "min", kind="stable")
    return completed_first(scored).reset_index(drop=True)


def metric_scale(metric: str) -> tuple[float, str]:
    """(factor, axis label) of an objective value."""
    if metric in FRACTIONS:
        return 100.0, f"{metric} (%)"
    unit = UNITS.get(metric)
    return 1.0, f"{metric} ({unit})" if unit else metric
