"""The leaderboard of a search: its trials ranked by the objective (or any column)."""

from __future__ import annotations

import pandas as pd

from ticketsearch.errors import UserError
from ticketsearch.results.store import SearchResults

METRIC_COLUMNS = ("epochs_trained", "final_sparsity", "final_val_clean_acc", "final_val_robust_acc",
                  "robust_auc", "objective", "test_clean_acc", "test_robust_acc", "speedup")


def leaderboard(results: SearchResults, *, top: int | None = None, sort: str | None = None) -> pd.DataFrame:
    trials = results.trials
    if trials.empty:
        raise UserError(f"{results.out}: no trial has reported yet")
    space = [f"config.{path}" for path in results.search.get("space", {})]
    columns = ["trial_id", "status", *[c for c in space if c in trials], *[c for c in METRIC_COLUMNS if c in trials]]
    sort = sort or "objective"
    if sort not in trials:
        raise UserError(f"--sort: no column {sort!r}; choose one of {', '.join(c for c in columns if c not in ('trial_id', 'status'))}")
    mode = results.search.get("spec", {}).get("objective", {}).get("mode", "max") if sort == "objective" else "max"
    ranked = trials.sort_values(sort, ascending=mode == "min", na_position="last")[columns]
    ranked = ranked.rename(columns={c: c.removeprefix("config.") for c in space})
    return (ranked.head(top) if top else ranked).reset_index(drop=True)
