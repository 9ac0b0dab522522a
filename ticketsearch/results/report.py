"""A Markdown report with plots of a search's results: `write_report(out)` -> `OUT/report/report.md`.

The report answers the questions of the boosting-ticket study (Li et al. 2020, arXiv 2003.05733):
which trials won, how fast their tickets converge against the dense reference,
how sparsity trades against robustness, where in the searched space the good trials lie, and whether
a ticket pays for the cost of finding it. It reads what `ticketsearch.results.store.load` reads, so
it works on a finished search, on one still running and on the output of `ticketsearch train`.

Plots are drawn on `Figure` objects with the Agg canvas: no pyplot, no display, no global backend.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ticketsearch.errors import UserError
from ticketsearch.results.boosting import boosting_section, plot_curves_by_sparsity, plot_speedup_across_space
from ticketsearch.results.confirmation import confirmation_section
from ticketsearch.results.certified import certified_section
from ticketsearch.results.double_win import double_win_section
from ticketsearch.results.intervals import interval_of
from ticketsearch.results.leaderboard import completed_first
from ticketsearch.results.pareto import pareto_section
from ticketsearch.results.repeats import repeats_section
from ticketsearch.results.store import SearchResults, load

PLOTS = ("curves.png", "pareto.png", "hyperparameters.png", "speedup.png", "sparsities.png", "speedup_space.png")
FINETUNE = "finetune_"  # the transfer trainer's phases: finetune_standard, finetune_adversarial
LEADERBOARD_ROWS = 10
DPI = 150
# Metrics that are fractions in [0, 1]: shown in %.
FRACTIONS = {"robust_auc", "val_robust_acc", "val_clean_acc", "train_acc", "best_val_robust_acc"}
UNITS = {"ticket_epochs_to_target": "epochs", "ticket_seconds_to_target": "s", "ticket_passes_to_target": "passes",
         "speedup": "×", "epoch_speedup": "×", "speedup_seconds": "×"}
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


def write_report(out: str | Path, top: int = 3) -> Path:
    """Write `OUT/report/report.md` and its PNG plots; return the path of the .md.

    `top`: how many of the best tickets the convergence and speed-up plots show. Raises `UserError`
    when the directory holds no epoch records yet.
    """
    results = load(out)
    if results.epochs.empty:
        raise UserError(f"{results.out}: no epoch records yet (epochs/ is empty); nothing to report")
    # One record per epoch of a trial's path (several dense networks of one phase, best_of, share round
    # and epoch numbers; the global epoch tells them apart).
    epochs = results.epochs.drop_duplicates(["trial_id", "global_epoch"], keep="last")
    metric, mode = _objective(results)
    trials = _trials_table(results, epochs, metric)
    ranked = _ranked(trials, mode)
    space = results.search.get("space") or {}
    directory = results.out / "report"
    directory.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # a plot skipped now must not survive from an earlier report
        (directory / name).unlink(missing_ok=True)

    lines = _header(results, trials, metric, mode)
    lines += ["", "## Leaderboard", ""] + _leaderboard(ranked, space, metric)
    lines += double_win_section(trials, mode)
    lines += pareto_section(trials, results.search.get("spec", {}))
    lines += boosting_section(trials)
    lines += confirmation_section(trials)
    lines += certified_section(trials)
    lines += repeats_section(trials, list(space), mode)
    transfer = bool(epochs["phase"].str.startswith(FINETUNE).all())
    with matplotlib.rc_context(STYLE):
        sections = [
            ("Convergence of the best tickets", "curves.png",
             _plot_transfer_curves(directory / "curves.png", epochs, results.dense_epochs, ranked, top)
             if transfer else _plot_curves(directory / "curves.png", epochs, ranked, top)),
            ("Sparsity against robustness", "pareto.png", _plot_pareto(directory / "pareto.png", trials)),
            ("Objective across the searched space", "hyperparameters.png",
             _plot_hyperparameters(directory / "hyperparameters.png", trials, space, metric, mode)),
            ("Speed-up including the cost of finding the ticket", "speedup.png",
             ("", "a transfer search compares tickets with the dense network by the double-win table above, "
                  "not by time to a robust accuracy.") if transfer
             else _plot_speedup(directory / "speedup.png", ranked, top)),
        ]
        if not transfer:
            sections += [
                ("Tickets at several sparsities against the reference", "sparsities.png",
                 plot_curves_by_sparsity(directory / "sparsities.png", epochs, trials, _figure)),
                ("Where the speed-up lives", "speedup_space.png",
                 plot_speedup_across_space(directory / "speedup_space.png", trials, _figure)),
            ]
    for title, name, (caption, skipped) in sections:
        lines += ["", f"## {title}", ""]
        lines += [f"_Skipped: {skipped}_"] if skipped else [f"![{title}]({name})", "", f"*{caption}*"]
    lines += _failures(trials) + _problems(results)
    path = directory / "report.md"
    temporary = directory / ".report.md.tmp"
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, path)
    return path


# ---------------------------------------------------------------------------------------------- tables


def _trials_table(results: SearchResults, epochs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """trials.parquet, plus a `running` row (from its last epoch) for a trial that has epochs only.

    `ticketsearch train` writes no `objective` column: it is then the objective metric's column.
    """
    trials = results.trials.copy()
    if "trial_id" not in trials:
        trials = pd.DataFrame({"trial_id": pd.Series(dtype=str)})
    if "objective" not in trials:
        trials["objective"] = _col(trials, metric)
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


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, NaN where absent or not a number."""
    if name not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[name], errors="coerce")


def _objective(results: SearchResults) -> tuple[str, str]:
    spec_objective = (results.search.get("spec") or {}).get("objective") or {}
    if isinstance(spec_objective, list):  # several objectives: the report ranks by the first
        spec_objective = spec_objective[0] if spec_objective else {}
    trials = results.trials
    metric = spec_objective.get("metric") or _first(trials, "config.objective.metric") or "robust_auc"
    mode = spec_objective.get("mode") or _first(trials, "config.objective.mode") or "max"
    return str(metric), str(mode)


def _first(frame: pd.DataFrame, column: str) -> Any:
    values = frame[column].dropna() if column in frame else ()
    return values.iloc[0] if len(values) else None


def _ranked(trials: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Trials with an objective, best first, completed ones before the rest (ties broken by trial id,
    so the order is reproducible)."""
    scored = trials.assign(objective=_col(trials, "objective"))
    scored = scored[scored["objective"].notna()].sort_values("trial_id")
    return completed_first(scored.sort_values("objective", ascending=mode == "min", kind="stable")).reset_index(drop=True)


def _scale(metric: str) -> tuple[float, str]:
    """(factor, axis label) of an objective value."""
    if metric in FRACTIONS:
        return 100.0, f"{metric} (%)"
    unit = UNITS.get(metric)
    return 1.0, f"{metric} ({unit})" if unit else metric


def _fmt(value: Any, percent: bool = False, digits: str = ".4g", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{100 * value:.1f}" if percent else f"{value:{digits}}{suffix}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _time(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return "–"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------------------------------- text


def _header(results: SearchResults, trials: pd.DataFrame, metric: str, mode: str) -> list[str]:
    search = results.search
    name = search.get("name") or _first(trials, "config.name") or results.out.name
    counts = trials["status"].value_counts()
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"
    if results.finished:
        state = f"finished {_time(search.get('ended'))}" if search else "finished"
    else:
        state = f"**{results.state_note()}** (as of {_time(datetime.now(UTC).timestamp())})"
    lines = [f"# Report: {name}", ""]
    if search:
        lines.append(f"- spec hash: `{search.get('spec_hash', '–')}`; started {_time(search.get('started'))}")
    else:
        lines.append("- a single trial from `ticketsearch train` (no search.json)")
    lines += [
        f"- state: {state}",
        f"- objective: `{metric}` ({mode}imise)",
        f"- trials: {len(trials)} ({by_status}); {_n(len(results.epochs), 'epoch record')}",
        f"- results: `{results.out}`",
    ]
    tested = _col(trials, "test_examples").dropna()
    if len(tested):  # how many test images every test figure stands on (AutoAttack's cost sets it)
        counts = sorted({int(n) for n in tested})
        autoattack = _col(trials, "test_autoattack_acc").notna().any()
        lines.append(f"- test split: n = {' / '.join(map(str, counts))} images per finished ticket, under `attack.eval`"
                     + (" and AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square)" if autoattack else "")
                     + "; each test accuracy with its 95% Wilson interval over those images")
    return lines


def _leaderboard(ranked: pd.DataFrame, space: dict[str, Any], metric: str) -> list[str]:
    if ranked.empty:
        return ["_No trial has reported its objective yet._"]
    factor, _ = _scale(metric)
    headers = ["#", "trial", "status", *space, metric + (" (%)" if factor == 100 else ""), "sparsity (%)",
               "val clean (%)", "val robust (%)", "test clean (%) [95%]", "test robust (%) [95%]", "test images",
               "speed-up"]
    rows = []
    accuracies = ("final_sparsity", "final_val_clean_acc", "final_val_robust_acc")
    for rank, row in enumerate(ranked.head(LEADERBOARD_ROWS).to_dict("records"), start=1):
        objective = f"{row['objective'] * factor:.1f}" if factor == 100 else _fmt(row["objective"])
        rows.append([
            str(rank), f"`{row['trial_id']}`", row["status"], *(_fmt(row.get(f"config.{p}")) for p in space),
            objective, *(_fmt(row.get(c), percent=True) for c in accuracies),
            *(_tested(row, c) for c in ("test_clean_acc", "test_robust_acc")),
            _fmt(row.get("test_examples"), digits=".0f"),
            _fmt(row.get("speedup"), digits=".2f", suffix="×"),
        ])
    lines = _table(headers, rows)
    if len(ranked) > LEADERBOARD_ROWS:
        lines += ["", f"_{len(ranked) - LEADERBOARD_ROWS} more trials in `trials.parquet`._"]
    note = ("Sparsity and validation accuracies are at the trial's last epoch; test accuracies are measured once, "
            "on the finished ticket, on n = `test images` images, with their 95% Wilson interval in brackets "
            "(the sampling of the images only, not of the seed); speed-up is the dense reference's example-passes "
            "to its robust accuracy over (finding + ticket passes to it).")
    return [*lines, "", note]


def _tested(row: dict[str, Any], column: str) -> str:
    """A test-split accuracy in %, with its 95% Wilson interval from the images it rests on."""
    low, high, _ = interval_of(row, column)
    cell = _fmt(row.get(column), percent=True)
    return cell if math.isnan(low) else f"{cell} [{100 * low:.1f}, {100 * high:.1f}]"


def _failures(trials: pd.DataFrame) -> list[str]:
    failed = trials[trials["status"].isin(["error", "diverged"])]
    if failed.empty:
        return []
    lines = ["", "## Failed trials", ""]
    for row in failed.sort_values("trial_id").to_dict("records"):
        message = " ".join(str(row.get("error") or "no message recorded").split())
        lines.append(f"- `{row['trial_id']}` ({row['status']}): {message[:300]}")
    return lines


def _problems(results: SearchResults) -> list[str]:
    if not results.problems:
        return []
    return ["", "## Files that could not be read", ""] + [f"- {p}" for p in results.problems]


# ---------------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float, columns: int = 1, rows: int = 1):
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False)


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI, facecolor="white")


def _plot_curves(path: Path, epochs: pd.DataFrame, ranked: pd.DataFrame, top: int) -> tuple[str, str | None]:
    """Validation robust accuracy per epoch of the best tickets (solid) and their dense references (dashed)."""
    with_ticket = set(epochs.loc[epochs["phase"] == "ticket", "trial_id"])
    best = [t for t in ranked["trial_id"] if t in with_ticket][:top]
    if not best:
        return "", "no trial has reached its ticket round yet."
    figure, axes = _figure(9, 4.6)
    ax = axes[0, 0]
    colours = matplotlib.colormaps["tab10"].colors
    regimes, other_regime = set(), False
    for colour, trial_id in zip(colours, best):
        own = epochs[epochs["trial_id"] == trial_id].sort_values("global_epoch")
        ticket = own[own["phase"] == "ticket"]
        reference = own[own["phase"] == "baseline"]
        note = ""
        if reference.empty:
            reference = own[own["phase"] == "dense"]
            if not reference.empty and reference["regime"].iloc[0] != ticket["regime"].iloc[0]:
                note = f", {reference['regime'].iloc[0]}"  # no baseline yet: the dense round's finding regime
                other_regime = True
        regimes.add(ticket["regime"].iloc[0])
        sparsity = 100 * ticket["sparsity"].iloc[-1]
        ax.plot(ticket["epoch"], 100 * ticket["val_robust_acc"], "-o", color=colour, markersize=4, linewidth=2,
                label=f"{trial_id} ticket ({sparsity:.0f}% sparse)")
        if not reference.empty:
            ax.plot(reference["epoch"], 100 * reference["val_robust_acc"], "--", color=colour, linewidth=1.5,
                    label=f"{trial_id} dense{note}")
    title = "The best ticket" if len(best) == 1 else f"The {len(best)} best tickets"
    ax.set(xlabel="epoch (within the round)", ylabel="validation robust accuracy (%)",
           title=f"{title} against the dense network")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), title="solid: ticket, dashed: dense",
              title_fontsize=9)
    _save(figure, path)
    reference = ("the dense reference (dashed, same colour; or, where the legend names another regime, the "
                 "dense round that found the ticket)" if other_regime
                 else "the dense reference (dashed, same colour: the dense network under the same attack, at "
                      "the spec's `reference` settings)")
    return (f"Validation robust accuracy per epoch of the {_n(len(best), 'best ticket')} by objective (solid, trained "
            f"under {' / '.join(sorted(regimes))}) and of {reference}."), None


def _plot_transfer_curves(path: Path, epochs: pd.DataFrame, dense_epochs: pd.DataFrame, ranked: pd.DataFrame,
                          top: int) -> tuple[str, str | None]:
    """Transfer searches: validation robust accuracy per fine-tuning epoch of the best tickets (solid)
    and of the dense baseline each is compared with (dashed), one panel per fine-tuning regime."""
    reported = set(epochs["trial_id"])
    best = [t for t in ranked["trial_id"] if t in reported][:top]
    if not best:
        return "", "no transfer trial has reported an epoch yet."
    if dense_epochs.empty:  # no trial has finished its dense comparison yet: no dashed curves
        dense_epochs = epochs.iloc[0:0]
    phases = list(epochs.sort_values("global_epoch")["phase"].drop_duplicates())  # in the order they ran
    figure, axes = _figure(5.2 * len(phases) + 3, 4.6, columns=len(phases))
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
    return (f"Validation robust accuracy per fine-tuning epoch of the {_n(len(best), 'best ticket')} by objective "
            "(solid) and of the dense pre-trained network fine-tuned the same way (dashed, same colour), "
            "per fine-tuning regime."), None


def _pareto_front(points: np.ndarray) -> np.ndarray:
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


def _plot_pareto(path: Path, trials: pd.DataFrame) -> tuple[str, str | None]:
    frame = trials.assign(x=100 * _col(trials, "final_sparsity"), y=100 * _col(trials, "final_val_robust_acc"))
    frame = frame[frame["x"].notna() & frame["y"].notna()].reset_index(drop=True)
    if frame.empty:
        return "", "no trial has a final sparsity and validation robust accuracy yet."
    figure, axes = _figure(7, 4.6)
    ax = axes[0, 0]
    front = _pareto_front(frame[["x", "y"]].to_numpy())
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
    return (f"Final sparsity against final validation robust accuracy of {_n(len(frame), 'trial')} (at each "
            "trial's last epoch, so early-stopped trials sit at the sparsity of their last round); circled: the "
            f"{_n(len(front), 'trial')} on the Pareto front."), None


def _plot_hyperparameters(path: Path, trials: pd.DataFrame, space: dict[str, Any], metric: str,
                          mode: str) -> tuple[str, str | None]:
    if not space:
        return "", "no search space (the output of a single `ticketsearch train` run)."
    factor, label = _scale(metric)
    frame = trials.assign(y=factor * _col(trials, "objective"))
    paths = [p for p in space if f"config.{p}" in frame]
    frame = frame[frame["y"].notna() & frame[[f"config.{p}" for p in paths]].notna().all(axis=1)]
    if frame.empty or not paths:
        return "", ("no trial has reported its objective yet." if frame.empty
                    else "no searched parameter is a column of trials.parquet.")
    best = _ranked(frame, mode).iloc[0]  # the leaderboard's first, ties included
    columns = min(3, len(paths))
    rows = math.ceil(len(paths) / columns)
    figure, axes = _figure(4.2 * columns, 3.6 * rows, columns, rows)
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
    return (f"The objective {metric} of {_n(len(frame), 'trial')} against each searched parameter; a star marks "
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


def _plot_speedup(path: Path, ranked: pd.DataFrame, top: int) -> tuple[str, str | None]:
    """Epochs and example-passes to the dense reference's robust accuracy; the ticket's passes include finding it."""
    frame = ranked.assign(**{c: _col(ranked, c) for c in (
        "target_robust_acc", "ticket_epochs_to_target", "dense_epochs_to_target", "ticket_passes_to_target",
        "dense_passes_to_target", "find_passes", "speedup", "epoch_speedup", "final_sparsity")})
    frame = frame[frame["target_robust_acc"].notna() & frame["dense_epochs_to_target"].notna()].head(top)
    if frame.empty:
        return "", ("no trial has convergence measures yet (they need a finished ticket round and a dense "
                    "reference under the ticket's regime).")
    frame = frame.reset_index(drop=True)
    frame["find_passes"] = frame["find_passes"].fillna(0.0)
    figure, axes = _figure(8 + 0.8 * len(frame), 4.6, columns=2)
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
