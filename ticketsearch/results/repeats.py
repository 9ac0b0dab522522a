"""Repeats over seeds: finished trials whose configs differ only in `train.seed`, as mean and std.

When a search has `train.seed` as an axis (`{grid: [0, 1, 2]}`, `{choice: [...]}`), every figure it
reports has an error bar: `aggregate_seeds` groups the completed trials by every `config.` column
except the seed and gives, per group, the number of seeds and each metric's mean and sample standard
deviation (ddof 1; NaN for a single seed). Early-stopped, failed and running trials are left out: a
repeat that did not finish would pull the mean towards wherever it was cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

SEED = "config.train.seed"
SEED_AXIS = "train.seed"
# What a reader compares across configs (fractions, except speedup and the epoch counts).
REPEAT_METRICS = ("objective", "final_sparsity", "final_val_clean_acc", "final_val_robust_acc", "best_val_robust_acc",
                  "test_clean_acc", "test_robust_acc", "test_autoattack_acc", "speedup", "epochs_trained")


def seeds_vary(trials: pd.DataFrame, space: Sequence[str]) -> bool:
    """Whether `train.seed` is a searched axis and the trials hold more than one of its values."""
    return SEED_AXIS in space and SEED in trials and trials[SEED].nunique(dropna=True) > 1


def aggregate_seeds(trials: pd.DataFrame, metrics: Sequence[str] = REPEAT_METRICS, *, mode: str = "max") -> pd.DataFrame:
    """One row per configuration of the completed trials, best mean objective first.

    Columns: the config columns other than the seed (as in trials.parquet), `seeds` (how many repeats
    finished), `trial_ids` (comma-separated) and `<metric>_mean`, `<metric>_std` for each metric present.
    """
    done = trials[trials["status"] == "completed"] if "status" in trials else trials
    keys = [c for c in done.columns if c.startswith("config.") and c != SEED]
    present = [m for m in metrics if m in done]
    # Grouped by the text of the config values: lists arrive as strings, and NaN (an unset optional
    # field) must be a value of its own rather than dropped.
    labels = pd.Series([repr(values) for values in done[keys].itertuples(index=False)], index=done.index, dtype=object)
    groups = done.assign(**{m: pd.to_numeric(done[m], errors="coerce") for m in present}).groupby(labels, sort=False)
    stats = groups[present].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    table = pd.concat([
        groups[keys].first(),
        groups.size().rename("seeds"),
        groups["trial_id"].agg(lambda ids: ",".join(sorted(ids))).rename("trial_ids"),
        stats,
    ], axis=1).reset_index(drop=True)
    if "objective_mean" in table:
        table = table.sort_values(["objective_mean", "trial_ids"], ascending=[mode == "min", True], na_position="last")
    return table.reset_index(drop=True)


def repeats_section(trials: pd.DataFrame, space: Sequence[str], mode: str) -> list[str]:
    """Markdown lines of the report's section on repeats; empty when the seed is not a varying axis."""
    if not seeds_vary(trials, space):
        return []
    table = aggregate_seeds(trials, mode=mode)
    lines = ["", "## Repeats over seeds", ""]
    if table.empty:
        return lines + ["_No repeated configuration has finished yet._"]
    axes = [a for a in space if a != SEED_AXIS and f"config.{a}" in table]
    shown = [m for m in ("objective", "final_val_robust_acc", "test_clean_acc", "test_robust_acc", "test_autoattack_acc")
             if f"{m}_mean" in table]
    headers = [*axes, "seeds", *shown]
    rows = []
    for row in table.to_dict("records"):
        rows.append([*(_text(row[f"config.{a}"]) for a in axes), str(row["seeds"]),
                     *(_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in shown)])
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + ["", "Mean ± sample standard deviation over the seeds of each configuration that finished "
                        "(completed trials only; ± – for a single seed). Accuracies are fractions."]


def _text(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "\\|")


def _mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.4g} ± {'–' if pd.isna(std) else f'{std:.2g}'}"
