"""What confirmation on fresh seeds (search/confirm.py) says: per confirmed configuration, the mean of
each speed-up over its seeds with a 95% interval, how many seeds reached the target, and the search's
own figure for the same configuration beside it, so the size of the selection effect shows.

The interval is Student's t over the seeds that reached the target (a seed that never reached it has
no speed-up; their count is given instead): with 2 seeds it is wide, as it should be.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

# (column, how it reads): the speed-ups a confirmation reports, where the trials have them.
SPEEDUPS = (("epoch_speedup", "epochs, finding excluded"), ("speedup", "passes with finding"),
            ("epoch_speedup_matched", "vs dense at its own lr"), ("epoch_speedup_best_dense", "vs the best dense"))


def t_interval(values: pd.Series, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of `values` (NaN dropped): Student's t interval; NaN bounds for fewer than 2."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def confirmation_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per confirmed configuration, in the order the search ranked them: `confirms` (the search
    trial), `seeds`, `reached`, and per speed-up `<column>_mean`, `_low`, `_high` over the seeds and
    `<column>_search` (the search trial's own figure)."""
    if "stage" not in trials or not (trials["stage"] == "confirm").any():
        return pd.DataFrame()
    confirmed = trials[(trials["stage"] == "confirm") & (trials["status"] == "completed")]
    search = trials.set_index("trial_id")
    rows = []
    for trial_id in dict.fromkeys(trials.loc[trials["stage"] == "confirm", "confirms"]):
        seeds = confirmed[confirmed["confirms"] == trial_id]
        row = {"confirms": trial_id, "seeds": len(seeds),
               "reached": int(seeds["reached_target"].astype(bool).sum()) if len(seeds) else 0}
        for column, _ in SPEEDUPS:
            if column not in trials:
                continue
            row[f"{column}_mean"], row[f"{column}_low"], row[f"{column}_high"] = t_interval(seeds[column])
            row[f"{column}_search"] = float(search.at[trial_id, column]) if trial_id in search.index else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def confirmation_lines(trials: pd.DataFrame) -> list[str]:
    """The confirmation in a few lines: each configuration's speed-ups with intervals, then the
    headline: the fastest confirmed configuration, or that none was faster."""
    table = confirmation_table(trials)
    if table.empty:
        return []
    lines = ["confirmation on fresh seeds and validation images the search did not rank by "
             "(mean [95% interval] over the seeds that reached the target; the search's own figure in parentheses):"]
    for _, row in table.iterrows():
        parts = [f"{label} {_figure(row, column)}" for column, label in SPEEDUPS if f"{column}_mean" in row
                 and not math.isnan(row[f"{column}_mean"])]
        lines.append(f"  {row['confirms']}: {row['reached']} of {row['seeds']} seeds reached the target"
                     + (f"; {', '.join(parts)}" if parts else ""))
    lines.append(_headline(table))
    return lines


def _figure(row: pd.Series, column: str) -> str:
    low, high = row[f"{column}_low"], row[f"{column}_high"]
    interval = f" [{low:.2f}, {high:.2f}]" if not math.isnan(low) else " [one seed: no interval]"
    search = row[f"{column}_search"]
    return f"{row[f'{column}_mean']:.2f}x{interval}" + (f" ({search:.2f}x)" if not math.isnan(search) else "")


def _headline(table: pd.DataFrame) -> str:
    """The confirmed configuration with the highest lower bound on its epoch speed-up over the
    reference, among those whose every seed reached the target, against each dense network: faster
    only when the interval's lower end is above 1, slower when its upper end is below 1."""
    complete = table[(table["reached"] == table["seeds"]) & (table["seeds"] > 0)]
    if complete.empty:
        return "  confirmed: no configuration reached the target at every seed"
    key = complete["epoch_speedup_low"].fillna(complete["epoch_speedup_mean"])
    best = complete.loc[key.idxmax()]
    verdicts = [f"{label}: {_verdict(best, column)}" for column, label in HEADLINE if f"{column}_mean" in best]
    return f"  confirmed: {best['confirms']} ({best['seeds']} seeds), in epochs to the target; " + "; ".join(verdicts)


# The comparisons of the headline, in epochs to each one's target (finding excluded).
HEADLINE = (("epoch_speedup", "against the reference"), ("epoch_speedup_matched", "against dense at its own lr"),
            ("epoch_speedup_best_dense", "against the best dense network"))


def _verdict(row: pd.Series, column: str) -> str:
    mean, low, high = row[f"{column}_mean"], row[f"{column}_low"], row[f"{column}_high"]
    if math.isnan(mean):
        return "not reached at any seed"
    if math.isnan(low):
        return f"{mean:.2f}x (one seed reached it: no interval)"
    word = "faster" if low > 1 else "slower" if high < 1 else "not shown faster (the interval spans 1)"
    return f"{mean:.2f}x [{low:.2f}, {high:.2f}], {word}"


def confirmation_section(trials: pd.DataFrame) -> list[str]:
    """The report's account of the confirmation: its lines, and the table of every speed-up per
    configuration (mean [95% interval] over its seeds; the search's own figure beside it)."""
    table = confirmation_table(trials)
    if table.empty:
        return []
    lines = ["", "## Confirmation on fresh seeds", ""] + [line.strip() for line in confirmation_lines(trials)]
    columns = [(column, label) for column, label in SPEEDUPS if f"{column}_mean" in table]
    lines += ["", "| configuration | seeds reached | " + " | ".join(label for _, label in columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = [_figure(row, column) if not math.isnan(row[f"{column}_mean"]) else "–" for column, _ in columns]
        lines.append(f"| `{row['confirms']}` | {row['reached']} of {row['seeds']} | " + " | ".join(cells) + " |")
    return lines
