"""The leaderboard of a search: its trials ranked by the objective (or any column).

When `train.seed` is a searched axis and the trials hold several seeds, the leaderboard is one row per
configuration instead: the completed repeats' mean and standard deviation of each metric
(results/repeats.py), ranked by the mean.
"""

from __future__ import annotations

import pandas as pd

from ticketsearch.errors import UserError
from ticketsearch.results.intervals import wilson
from ticketsearch.results.pareto import pareto_mask, spec_objectives
from ticketsearch.results.repeats import SEED_AXIS, aggregate_seeds, seeds_vary
from ticketsearch.results.store import SearchResults

METRIC_COLUMNS = ("epochs_trained", "final_sparsity", "final_val_clean_acc", "final_val_robust_acc",
                  "robust_auc", "objective", "test_clean_acc", "test_robust_acc", "epoch_speedup", "speedup",
                  "speedup_amortized")

# The test accuracies the leaderboard shows, each followed by its 95% Wilson interval (`<column>_low`,
# `<column>_high`, results/intervals.py), and the images they rest on (`test_examples`).
TESTED = ("test_clean_acc", "test_robust_acc")
FOLLOWING = {"test_clean_acc": ("test_clean_acc_low", "test_clean_acc_high"),
             "test_robust_acc": ("test_robust_acc_low", "test_robust_acc_high", "test_examples")}


def with_intervals(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` with the 95% Wilson interval of each of TESTED it holds, from its `test_examples`."""
    if "test_examples" not in trials:
        return trials
    count = pd.to_numeric(trials["test_examples"], errors="coerce")
    out = trials.assign(test_examples=count)
    for column in (c for c in TESTED if c in trials):
        bounds = [wilson(a, n) for a, n in zip(pd.to_numeric(trials[column], errors="coerce"), count)]
        out[f"{column}_low"] = [low for low, _ in bounds]
        out[f"{column}_high"] = [high for _, high in bounds]
    return out


def completed_first(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials`, in their order, with the completed ones moved first. A trial stopped early reports a
    per-epoch objective from an earlier epoch than a finished trial's, so the two do not rank against
    each other (`convergence_gap`, a mean lead over the epochs so far, is largest early on)."""
    if "status" not in trials:
        return trials
    return trials.sort_values("status", key=lambda status: status != "completed", kind="stable")


def leaderboard(results: SearchResults, *, top: int | None = None, sort: str | None = None,
                aggregate: bool | None = None) -> pd.DataFrame:
    """Trials best first; `aggregate` (default: when seeds vary) gives the mean-and-std view by config."""
    trials = results.trials
    if trials.empty:
        raise UserError(f"{results.out}: no trial has reported yet")
    space = [f"config.{path}" for path in results.search.get("space", {})]
    objectives = spec_objectives(results.search.get("spec", {}))
    mode = objectives[0][2]
    if aggregate is None:
        finished = "status" in trials and bool((trials["status"] == "completed").any())
        aggregate = finished and seeds_vary(trials, list(results.search.get("space", {})))
    if aggregate:
        return _by_configuration(trials, space, mode, top=top, sort=sort)
    if len(objectives) > 1:  # several objectives: each shown, and the Pareto front marked and ranked first
        trials = trials.assign(pareto=pareto_mask(trials, objectives))
    extra = [c for c, _, _ in objectives[1:]] + (["pareto"] if len(objectives) > 1 else [])
    columns = ["trial_id", "status", *[c for c in space if c in trials], *[c for c in METRIC_COLUMNS if c in trials],
               *extra]
    sort = sort or "objective"
    if sort not in trials:
        raise UserError(f"--sort: no column {sort!r}; choose one of {', '.join(c for c in columns if c not in ('trial_id', 'status'))}")
    ascending = mode == "min" if sort == "objective" else False
    ranked = trials.sort_values(sort, ascending=ascending, na_position="last")
    if sort == "objective":
        ranked = completed_first(ranked)
    if "pareto" in ranked:
        ranked = ranked.sort_values("pareto", ascending=False, kind="stable")
    ranked = with_intervals(ranked)
    ranked = ranked[[c for shown in columns for c in (shown, *FOLLOWING.get(shown, ())) if c in ranked]]
    ranked = ranked.rename(columns={c: c.removeprefix("config.") for c in space})
    return (ranked.head(top) if top else ranked).reset_index(drop=True)


def _by_configuration(trials: pd.DataFrame, space: list[str], mode: str, *, top: int | None,
                      sort: str | None) -> pd.DataFrame:
    table = aggregate_seeds(trials, METRIC_COLUMNS, mode=mode)
    axes = [c for c in space if c != f"config.{SEED_AXIS}" and c in table]
    stats = [f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "std") if f"{m}_mean" in table]
    sort = sort or "objective"
    key = sort if sort in table else f"{sort}_mean"
    if key not in table:
        raise UserError(f"--sort: no column {sort!r} in the view by configuration; choose one of "
                        f"{', '.join(m for m in METRIC_COLUMNS if f'{m}_mean' in table)}")
    ascending = mode == "min" if sort == "objective" else False
    ranked = table.sort_values(key, ascending=ascending, na_position="last", kind="stable")
    ranked = ranked[[*axes, "seeds", "trial_ids", *stats]].rename(columns={c: c.removeprefix("config.") for c in axes})
    return (ranked.head(top) if top else ranked).reset_index(drop=True)
