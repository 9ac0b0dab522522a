"""The report's plots: each `plot_*(path, ...)` draws one PNG and returns (caption, reason skipped).

A plot that has nothing to show yet draws nothing and returns ("", why), which the report prints in
its place. Plots are drawn on `Figure` objects with the Agg canvas: no pyplot, no display, no global
backend; `STYLE` is the rc context they are drawn in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ticketsearch import layout
from ticketsearch.results.curves import reference_curve, ticket_curve
from ticketsearch.results.report_data import FINETUNE, best_first, metric_scale, numeric_column
from ticketsearch.results.report_text import plural

DPI = 150
STATUS_STYLE = {  # colour, marker
    "completed": ("tab:blue", "o"),
    "early-stopped": ("tab:orange", "v"),
    "running": ("tab:green", "D"),
    "diverged": ("tab:red", "X"),
    "error": ("black", "x"),
}
STYLE = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": DPI,
}


def new_figure(width: float, height: float, columns: int = 1, rows: int = 1):
    """(figure, rows x columns array of axes) of `width` x `height` inches on the Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False)


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI, facecolor="white")


def plot_curves(path: Path, epochs: pd.DataFrame, ranked: pd.DataFrame, top: int) -> tuple[str, str | None]:
    """Validation robust accuracy per epoch of the best tickets (solid) and their dense references (dashed)."""
    with_ticket = set(ticket_curve(epochs)["trial_id"])
    best = [t for t in ranked["trial_id"] if t in with_ticket][:top]
    if not best:
        return "", "no trial has reached its ticket round yet."
    figure, axes = new_figure(9, 4.6)
    ax = axes[0, 0]
    colours = matplotlib.colormaps["tab10"].colors
    regimes = set()
    rows = ranked.set_index("trial_id")
    for colour, trial_id in zip(colours, best):
        own = epochs[epochs["trial_id"] == trial_id].sort_values("global_epoch")
        ticket, reference = ticket_curve(own), reference_curve(own, rows.loc[trial_id])
        regimes.add(ticket["regime"].iloc[0])
        sparsity = 100 * ticket["sparsity"].iloc[-1]
        ax.plot(ticket["epoch"], 100 * ticket["val_robust_acc"], "-o", color=colour, markersize=4, linewidth=2,
                label=f"{trial_id} ticket ({sparsity:.0f}% sparse)")
        if not reference.empty:
            ax.plot(reference["epoch"], 100 * reference["val_robust_acc"], "--", color=colour, linewidth=1.5,
                    label=f"{trial_id} dense")
    title = "The best ticket" if len(best) == 1 else f"The {len(best)} best tickets"
    ax.set(xlabel="epoch (within the round)", ylabel="validation robust accuracy (%)",
           title=f"{title} against the dense network")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), title="solid: ticket, dashed: dense",
              title_fontsize=9)
    _save(figure, path)
    reference = ("the dense reference (dashed, same colour: the dense network under the same attack, at the "
                 "spec's `reference` settings)")
    return (f"Validation robust accuracy per epoch of the {plural(len(best), 'best ticket')} by objective (solid, "
            f"trained under {' / '.join(sorted(regimes))}) and of {reference}."), None


def plot_transfer_curves(path: Path, epochs: pd.DataFrame, dense_epochs: pd.DataFrame, ranked: pd.DataFrame,
                          top: int) -> tuple[str, str | None]:
    """Transfer searches: validation robust accuracy per fine-tuning epoch of the best tickets (solid)
    and of the dense baseline each is compared with (dashed), one panel per fine-tuning regime."""
    epochs = ticket_curve(epochs)
    reported = set(epochs["trial_id"])
    best = [t for t in ranked["trial_id"] if t in reported][:top]
    if not best:
        return "", "no transfer trial has reported an epoch yet."
    if dense_epochs.empty:  # no trial has finished its dense comparison yet: no dashed curves
        dense_epochs = epochs.iloc[0:0]
    phases = list(epochs.sort_values("global_epoch")["phase"].drop_duplicates())  # in the order they ran
    figure, axes = new_figure(5.2 * len(phases) + 3, 4.6, columns=len(phases))
    colours = matplotlib.colormaps["tab10"].colors
    for ax, phase in zip(axes[0], phases):
        for colour, trial_id in zip(colours, best):
            ticket = epochs[(epochs["trial_id"] == trial_id) & (epochs["phase"] == phase)].sort_values("epoch")
            if ticket.empty:
                continue
            ax.plot(ticket["epoch"], 100 * ticket["val_robust_acc"], "-o", color=colour, markersize=4, linewidth=2,
                    label=f"{trial_id} ticket ({100 * ticket['sparsity'].iloc[-1]:.0f}% sparse)")
            dense = dense_epochs[(dense_epochs["trial_id"] == trial_id) & (dense_epochs["phase"] == phase)]
            if not dense.empty:
                dense = dense.sort_values("epoch")
                ax.plot(dense["epoch"], 100 * dense["val_robust_acc"], "--s", color=colour, markersize=3,
                        linewidth=1.5, label=f"{trial_id} dense")
        ax.set(xlabel="fine-tuning epoch", ylabel="validation robust accuracy (%)",
               title=f"{phase.removeprefix(FINETUNE)} fine-tuning")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), title="solid: ticket, dashed: dense",
                       title_fontsize=9)
    _save(figure, path)
    return (f"Validation robust accuracy per fine-tuning epoch of the {plural(len(best), 'best ticket')} by objective "
            "(solid) and of the dense pre-trained network fine-tuned the same way (dashed, same colour), "
            "per fine-tuning regime."), None


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats in both sparsity and robust accuracy (both maximised)."""
    order = np.lexsort((-points[:, 1], -points[:, 0]))  # sparsity descending, then accuracy descending
    front, best = [], -np.inf
    for index in order:
        if points[index, 1] > best:
            front.append(index)
            best = points[index, 1]
    return np.array(front[::-1], dtype=int)  # sparsity ascending


def _status_groups(frame: pd.DataFrame):
    """(status, its rows, colour, marker) in the order of STATUS_STYLE, unknown statuses last."""
    order = {status: i for i, status in enumerate(STATUS_STYLE)}
    for status in sorted(frame["status"].unique(), key=lambda s: (order.get(s, len(order)), s)):
        colour, marker = STATUS_STYLE.get(status, ("tab:purple", "s"))
        yield status, frame[frame["status"] == status], colour, marker


def plot_pareto(path: Path, trials: pd.DataFrame) -> tuple[str, str | None]:
    frame = trials.assign(x=100 * numeric_column(trials, "final_sparsity"),
                          y=100 * numeric_column(trials, "final_val_robust_acc"))
    frame = frame[frame["x"].notna() & frame["y"].notna()].reset_index(drop=True)
    if frame.empty:
        return "", "no trial has a final sparsity and validation robust accuracy yet."
    figure, axes = new_figure(7, 4.6)
    ax = axes[0, 0]
    front = pareto_front(frame[["x", "y"]].to_numpy())
    fx, fy = frame.loc[front, "x"], frame.loc[front, "y"]
    ax.plot(fx, fy, drawstyle="steps-pre", color="0.3", linewidth=1.2, zorder=1, label="Pareto front")
    ax.scatter(fx, fy, s=150, facecolors="none", edgecolors="crimson", linewidths=1.8, zorder=3,
               label="on the front")
    for status, group, colour, marker in _status_groups(frame):
        ax.scatter(group["x"], group["y"], c=colour, marker=marker, s=40, alpha=0.85, zorder=2,
                   label=f"{status} ({len(group)})")
    for i in front:
        ax.annotate(frame.loc[i, "trial_id"], (frame.loc[i, "x"], frame.loc[i, "y"]), xytext=(6, 6),
                    textcoords="offset points", fontsize=8, color="crimson")
    ax.set(xlabel="final sparsity (%)", ylabel="final validation robust accuracy (%)",
           title="Sparsity against robustness, every trial")
    ax.set_xlim(-3, 103)
    ax.legend(loc="best")
    _save(figure, path)
    return (f"Final sparsity against final validation robust accuracy of {plural(len(frame), 'trial')} (at each "
            "trial's last epoch, so early-stopped trials sit at the sparsity of their last round); circled: the "
            f"{plural(len(front), 'trial')} on the Pareto front."), None


def plot_hyperparameters(path: Path, trials: pd.DataFrame, space: dict[str, Any], metric: str,
                          mode: str) -> tuple[str, str | None]:
    if not space:
        return "", "no search space (the output of a single `ticketsearch train` run)."
    factor, label = metric_scale(metric)
    frame = trials.assign(y=factor * numeric_column(trials, "objective"))
    paths = [p for p in space if f"config.{p}" in frame]
    frame = frame[frame["y"].notna() & frame[[f"config.{p}" for p in paths]].notna().all(axis=1)]
    if frame.empty or not paths:
        return "", ("no trial has reported its objective yet." if frame.empty
                    else f"no searched parameter is a column of {layout.TRIALS}.")
    best = best_first(frame, mode).iloc[0]  # the leaderboard's first, ties included
    columns = min(3, len(paths))
    rows = math.ceil(len(paths) / columns)
    figure, axes = new_figure(4.2 * columns, 3.6 * rows, columns, rows)
    for ax, parameter in zip(axes.flat, paths):
        kind, args = space[parameter].get("kind"), space[parameter].get("args") or []
        values = pd.to_numeric(frame[f"config.{parameter}"], errors="coerce")
        numeric = values.notna().all()
        if numeric:
            x = values
            _numeric_axis(ax, kind, args, x)
            best_x = float(pd.to_numeric(pd.Series([best[f'config.{parameter}']])).iloc[0])
        else:  # a categorical parameter: one position per choice, in the order of the space
            labels = [str(a) for a in args] or sorted(frame[f"config.{parameter}"].astype(str).unique())
            position = {v: i for i, v in enumerate(labels)}
            x = frame[f"config.{parameter}"].astype(str).map(position)
            ax.set_xticks(range(len(labels)), labels)
            best_x = position.get(str(best[f"config.{parameter}"]), np.nan)
        for status, group, colour, marker in _status_groups(frame.assign(x=x)):
            ax.scatter(group["x"], group["y"], c=colour, marker=marker, s=40, alpha=0.85, label=status)
        ax.scatter([best_x], [best["y"]], s=220, marker="*", facecolors="none", edgecolors="crimson",
                   linewidths=1.5, label="best")
        ax.set(xlabel=f"{parameter} ({kind})", ylabel=label, title=parameter)
    for ax in list(axes.flat)[len(paths):]:
        ax.set_visible(False)
    legend = {}
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    names, handles = list(legend), list(legend.values())
    figure.legend(handles, names, loc="outside lower center", ncols=len(names))
    figure.suptitle(f"Objective ({metric}, {mode}imised) against each searched parameter")
    _save(figure, path)
    return (f"The objective {metric} of {plural(len(frame), 'trial')} against each searched parameter; a star marks "
            "the best trial. Early-stopped trials report the objective at the epoch they stopped."), None


def _numeric_axis(ax, kind: str, args: list, values: pd.Series) -> None:
    """Log scale for loguniform (and choices spanning a decade), plain tick labels, x limits at the searched range."""
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    everything = pd.concat([values, pd.Series(numbers, dtype=float)])
    log = kind == "loguniform" or (
        kind in ("choice", "grid") and (everything > 0).all() and everything.max() / everything.min() >= 10)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if kind in ("choice", "grid") and len(numbers) == len(args) and len(numbers) <= 8:
        ax.set_xticks(sorted(set(numbers)))
    if kind in ("uniform", "loguniform", "quniform", "randint") and len(numbers) >= 2:
        low, high = numbers[0], numbers[1]
        if log and low > 0:
            pad = (high / low) ** 0.05
            ax.set_xlim(low / pad, high * pad)
        else:
            ax.set_xlim(low - 0.05 * (high - low), high + 0.05 * (high - low))


def plot_speedup(path: Path, ranked: pd.DataFrame, top: int) -> tuple[str, str | None]:
    """Epochs and example-passes to the dense reference's robust accuracy; the ticket's passes include finding it."""
    frame = ranked.assign(**{c: numeric_column(ranked, c) for c in (
        "target_robust_acc", "ticket_epochs_to_target", "dense_epochs_to_target", "ticket_passes_to_target",
        "dense_passes_to_target", "find_passes", "speedup", "epoch_speedup", "final_sparsity")})
    frame = frame[frame["target_robust_acc"].notna() & frame["dense_epochs_to_target"].notna()].head(top)
    if frame.empty:
        return "", ("no trial has convergence measures yet (they need a finished ticket round and a dense "
                    "reference under the ticket's regime).")
    frame = frame.reset_index(drop=True)
    frame["find_passes"] = frame["find_passes"].fillna(0.0)
    figure, axes = new_figure(8 + 0.8 * len(frame), 4.6, columns=2)
    left, right = axes[0]
    x = np.arange(len(frame))
    width = 0.38
    ticket_x, dense_x = x - width / 2, x + width / 2
    reached = frame[frame["ticket_epochs_to_target"].notna()]
    # Bars only where there is a value: a zero-height bar would pin the y limit (its sticky edge).
    left.bar(ticket_x[reached.index], reached["ticket_epochs_to_target"], width, color="tab:blue")
    left.bar(dense_x, frame["dense_epochs_to_target"], width, color="tab:gray")
    right.bar(ticket_x, frame["find_passes"], width, color="tab:blue", alpha=0.35, hatch="//",
              edgecolor="tab:blue", label="ticket: finding it (rounds 0..R-1)")
    right.bar(ticket_x[reached.index], reached["ticket_passes_to_target"], width,
              bottom=reached["find_passes"], color="tab:blue", label="ticket: training to target")
    right.bar(dense_x, frame["dense_passes_to_target"], width, color="tab:gray", label="dense: training to target")
    note = {"xytext": (0, 3), "textcoords": "offset points", "ha": "center", "fontsize": 9}
    for i, row in frame.iterrows():
        if i not in reached.index:
            left.annotate("target\nnot reached", (ticket_x[i], 0), **note)
            right.annotate("target\nnot reached", (ticket_x[i], row["find_passes"]), **note)
            continue
        left.annotate(f"×{row['epoch_speedup']:.2f}", (ticket_x[i], row["ticket_epochs_to_target"]), **note)
        right.annotate(f"×{row['speedup']:.2f}", (ticket_x[i], row["find_passes"] + row["ticket_passes_to_target"]),
                       **note)
    labels = [f"{r.trial_id}\n{100 * r.final_sparsity:.0f}% sparse" if not math.isnan(r.final_sparsity)
              else r.trial_id for r in frame.itertuples()]
    for ax in (left, right):
        ax.set_xticks(x, labels)
        ax.set_xlim(-0.8, len(frame) - 0.2)
        ax.margins(y=0.18)
        ax.grid(axis="x", visible=False)
    left.set(ylabel="epochs to target", title="Epochs (finding excluded)")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set(ylabel="example-passes to target", title="Example-passes (finding included)")
    figure.legend(*right.get_legend_handles_labels(), loc="outside lower center", ncols=3)
    figure.suptitle("Cost to reach the dense reference's validation robust accuracy")
    _save(figure, path)
    return ("Epochs (left) and training example-passes (right: forward and backward passes of one example; a "
            "PGD-k epoch is k+1 per example) that the best tickets and the dense reference take to reach the "
            "reference's validation robust accuracy; the ticket's passes stack the cost of finding it (hatched) "
            "under its training; ×: speed-up, reference over ticket (above 1: the ticket is faster)."), None
