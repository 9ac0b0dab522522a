"""What a search found about boosting tickets (Li et al. 2020), in words: did tickets reach the dense
reference's robust accuracy, how much sooner, and what that saved with the cost of finding them.

Read from `trials.parquet` (the columns of `records.convergence` and `speedup_amortized`), so the end of
`ticketsearch run`, `ticketsearch train` and `ticketsearch report` say the same thing.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

from ticketsearch.results.curves import reference_curve, ticket_curve


def boosting_lines(trials: pd.DataFrame) -> list[str]:
    """A few lines: how many finished tickets reached the reference, and the fastest, in epochs and in
    example-passes with the finding cost included (and shared among the tickets that share it)."""
    if "reached_target" not in trials or not len(trials):
        return []
    if "stage" in trials:  # confirmation trials speak for themselves (results/confirmation.py)
        trials = trials[trials["stage"] != "confirm"]
    lines = _no_verdict_lines(trials)
    finished = trials[(trials["status"] == "completed") & trials["target_robust_acc"].notna()]
    if "collapsed" in finished:
        finished = finished[~finished["collapsed"].astype(bool)]
    if not len(finished):
        return lines
    reached = finished[finished["reached_target"].astype(bool)]
    targets = finished["target_robust_acc"]
    target = f"{targets.iloc[0]:.1%}" if targets.nunique() == 1 else f"{targets.min():.1%}-{targets.max():.1%}"
    lines = [f"boosting: {len(reached)} of {len(finished)} finished tickets reached the dense reference's "
             f"validation robust accuracy ({target}{_reference_settings(finished)})"] + lines
    if not len(reached):
        return lines
    best = reached.sort_values(["epoch_speedup", "speedup"], ascending=False).iloc[0]
    # Among many trials the fastest is the search's pick, measured on the images that ranked it; one
    # trial (`ticketsearch train`) picked nothing.
    who = ("fastest in the search (its own pick, on the images that ranked it)" if len(trials) > 1
           else "the ticket (one trial, one seed)")
    lines.append(
        f"  {who}: {best['trial_id']} "
        f"(sparsity {best['final_sparsity']:.0%}) reached it in "
        f"{best['ticket_epochs_to_target']:g} epochs, the reference in {best['dense_epochs_to_target']:g} "
        f"({best['epoch_speedup']:.2f}x fewer); in example-passes with finding: {_speedup(best)}")
    others = [f"{label} {best[column]:.2f}x fewer epochs" if _finite(best.get(column)) else f"{label} not reached"
              for column, label in (("epoch_speedup_matched", "against dense at its own lr"),
                                    ("epoch_speedup_best_dense", "against the best dense network"))
              if _asked(finished, column)]
    if others:
        lr = best.get("best_dense_lr")
        lines.append("  " + "; ".join(others) + (f" (the best dense lr: {lr:g})" if _finite(lr) else ""))
    return lines


def _finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isnan(value)


def _asked(trials: pd.DataFrame, column: str) -> bool:
    """Whether the trials' spec asked for the comparison `column` measures (a config column is true)."""
    field = "config.reference.matched" if column.endswith("_matched") else "config.reference.best_of"
    return field in trials and trials[field].astype(str).isin(["", "None", "nan", "False"]).eq(False).any()


def _no_verdict_lines(trials: pd.DataFrame) -> list[str]:
    """A line per reason a trial got no speed-up (its reference, or its ticket, ended at chance), with
    how many trials it struck: a search that found nothing else should say that rather than nothing."""
    if "no_verdict" not in trials:
        return []
    lines: list[str] = []
    reference = trials["reference_collapsed"].astype(bool)
    # A trial whose reference and ticket both died is counted once, under its reference.
    for struck in (trials[reference], trials[trials["collapsed"].astype(bool) & ~reference]):
        if len(struck):
            example = f", e.g. {struck['trial_id'].iloc[0]}" if "trial_id" in struck else ""
            lines.append(f"  no verdict on {len(struck)} trial(s){example}: {struck['no_verdict'].iloc[0]}")
    return lines


def _reference_settings(trials: pd.DataFrame) -> str:
    """How the reference trained, from the trials' config columns: "; reference at lr 0.05, 20 epochs".
    A speed-up means little without it: a dense network at a poor learning rate is easy to beat."""
    def numbers(column: str) -> pd.Series:  # an unset field is stored as "" (trials_table.write_trials)
        return pd.to_numeric(trials[column], errors="coerce") if column in trials else pd.Series(np.nan, index=trials.index)

    def values(field: str) -> pd.Series:
        return numbers(f"config.reference.{field}").fillna(numbers(f"config.train.{field}"))
    parts = []
    for field, unit in (("lr", "lr {}"), ("epochs", "{} epochs")):
        column = values(field).dropna()
        if field == "lr" and "config.reference.lr" in trials and numbers("config.reference.lr").isna().any():
            parts.append("each ticket's own lr")  # no fixed reference.lr: the reference follows train.lr
        elif len(column):
            parts.append(unit.format("/".join(f"{v:g}" for v in sorted(set(column)))))
    return "; reference at " + ", ".join(parts) if parts else ""


def _speedup(row: dict[str, Any] | pd.Series) -> str:
    text = f"{row['speedup']:.2f}x (time saved {row['time_saved']:+.0%})"
    amortized = row.get("speedup_amortized", math.nan)
    if isinstance(amortized, float) and not math.isnan(amortized) and not math.isclose(amortized, row["speedup"]):
        text += f", {amortized:.2f}x with the finding round shared by the tickets pruned from it"
    return text


def boosting_section(trials: pd.DataFrame) -> list[str]:
    """The report's account of boosting: the summary lines and the time-saved table, with and without the
    cost of finding the ticket (Li et al. 2020 count it in; a search that prunes one round many ways
    shares it)."""
    finished = _measured(trials)
    if not len(finished):
        return []
    lines = ["", "## Boosting tickets: time to the dense reference", ""]
    lines += [line.strip() for line in boosting_lines(trials)]
    lines += ["", "Costs are counted in example-passes (one forward and backward pass of one example: an epoch "
              "of PGD-k is k+1 per example). Time saved = 1 - ticket cost / reference cost to reach the "
              "reference's validation robust accuracy; a negative value is time lost.", "",
              "| trial | sparsity | lr | width | epochs (ticket / reference) | time saved, finding excluded "
              "| incl. finding | finding shared |", "|---|---|---|---|---|---|---|---|"]
    for _, row in finished.sort_values("speedup", ascending=False, na_position="last").iterrows():
        excluded = 1 - row["ticket_passes_to_target"] / row["dense_passes_to_target"]
        shared = 1 - 1 / row["speedup_amortized"] if row.get("speedup_amortized", 0) > 0 else math.nan
        epochs = (f"{row['ticket_epochs_to_target']:g} / {row['dense_epochs_to_target']:g}"
                  if row["reached_target"] else f"not reached / {row['dense_epochs_to_target']:g}")
        lines.append(f"| `{row['trial_id']}` | {row['final_sparsity']:.0%} | {_value(row, 'config.train.lr')} | "
                     f"{_value(row, 'config.model.width')} | {epochs} | {_percent(excluded)} | "
                     f"{_percent(row['time_saved'])} | {_percent(shared)} |")
    return lines


def plot_speedup_across_space(path, trials: pd.DataFrame, figure_for) -> tuple[str, str | None]:
    """Speed-up (finding excluded and included) against sparsity, learning rate and width: where the
    boosting effect lives and where it vanishes. `figure_for(width, height, columns)` makes the figure."""
    finished = _measured(trials)
    finished = finished[finished["reached_target"].astype(bool)]
    axes_columns = [("final_sparsity", "sparsity"), ("config.train.lr", "learning rate"),
                    ("config.model.width", "width")]
    axes_columns = [(c, label) for c, label in axes_columns if c in finished and finished[c].nunique() > 1]
    if not len(finished) or not axes_columns:
        return "", "no finished ticket reached the reference's target, or nothing varied."
    figure, axes = figure_for(4.2 * len(axes_columns), 3.8, len(axes_columns))
    for ax, (column, label) in zip(axes[0], axes_columns):
        x = pd.to_numeric(finished[column], errors="coerce")
        ax.scatter(x, finished["epoch_speedup"], color="tab:blue", label="epochs, finding excluded")
        ax.scatter(x, finished["speedup"], color="tab:orange", marker="s", label="passes, finding included")
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        if column == "config.train.lr":
            ax.set_xscale("log")
        ax.set(xlabel=label, ylabel="speed-up over the reference (×)")
    figure.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    figure.savefig(path)
    return ("Speed-up of each finished ticket that reached the reference's robust accuracy, against what the "
            "search varied; above the dashed line the ticket is faster than the dense reference (the spec's "
            "`reference` settings, one learning rate for every ticket: a speed-up that rises with the ticket's "
            "learning rate is the learning rate's; the confirmation section compares with dense at the "
            "ticket's own lr and with the best dense network)."), None


def plot_curves_by_sparsity(path, epochs: pd.DataFrame, trials: pd.DataFrame, figure_for,
                            count: int = 5) -> tuple[str, str | None]:
    """Validation robust accuracy per epoch of tickets at several sparsities against their reference."""
    finished = _measured(trials).sort_values("final_sparsity")
    if not len(finished):
        return "", "no finished ticket has a dense reference yet."
    picked = finished.iloc[sorted({round(i) for i in np.linspace(0, len(finished) - 1, min(count, len(finished)))})]
    figure, axes = figure_for(7.5, 4.4, 1)
    ax = axes[0][0]
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(picked)))
    for colour, (_, row) in zip(colours, picked.iterrows()):
        ticket = ticket_curve(epochs[epochs["trial_id"] == row["trial_id"]])
        ax.plot(np.arange(1, len(ticket) + 1), ticket["val_robust_acc"], color=colour, marker="o", markersize=3,
                label=f"{row['final_sparsity']:.0%} sparse ({row['trial_id']})")
    reference = reference_curve(epochs[epochs["trial_id"] == picked.iloc[0]["trial_id"]], picked.iloc[0])
    ax.plot(np.arange(1, len(reference) + 1), reference["val_robust_acc"], color="black", linestyle="--",
            label="dense reference")
    ax.axhline(picked.iloc[0]["target_robust_acc"], color="gray", linewidth=1, linestyle=":")
    ax.set(xlabel="epoch of training", ylabel="validation robust accuracy")
    ax.legend(loc="lower right")
    figure.savefig(path)
    return ("Tickets at several sparsities (colours) against the dense reference of the first (dashed); the dotted "
            "line is the target, the reference's validation robust accuracy."), None


def _measured(trials: pd.DataFrame) -> pd.DataFrame:
    if "reached_target" not in trials or "status" not in trials:
        return trials.iloc[0:0]
    return trials[(trials["status"] == "completed") & pd.to_numeric(trials["target_robust_acc"]).notna()]


def _value(row: pd.Series, column: str) -> str:
    value = row.get(column, math.nan)
    return f"{value:.3g}" if isinstance(value, float) and not math.isnan(value) else "–"


def _percent(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.0%}"
