"""A Markdown report with plots of a search's results: `write_report(out)` -> `OUT/report/report.md`.

The report answers the questions of the boosting-ticket study (Li et al. 2020, arXiv 2003.05733):
which trials won, how fast their tickets converge against the dense reference,
how sparsity trades against robustness, where in the searched space the good trials lie, and whether
a ticket pays for the cost of finding it. It reads what `ticketsearch.results.store.load` reads, so
it works on a finished search, on one still running and on the output of `ticketsearch train`.

This module puts the report together; its tables come from results/report_data.py, its own text from
results/report_text.py, its plots from results/report_plots.py and the study's sections from the
modules of the results they summarise.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import matplotlib

from ticketsearch import layout
from ticketsearch.errors import UserError
from ticketsearch.results.boosting import boosting_section, plot_curves_by_sparsity, plot_speedup_across_space
from ticketsearch.results.certified import certified_section
from ticketsearch.results.confirmation import confirmation_section
from ticketsearch.results.double_win import double_win_section
from ticketsearch.results.pareto import pareto_section
from ticketsearch.results.repeats import repeats_section
from ticketsearch.results.report_data import best_first, objective_of, trials_so_far
from ticketsearch.results.report_plots import (STYLE, new_figure, plot_curves, plot_hyperparameters, plot_pareto,
                                               plot_speedup, plot_transfer_curves)
from ticketsearch.results.report_text import failures_section, header_lines, leaderboard_lines, problems_section
from ticketsearch.results.store import load

PLOTS = ("curves.png", "pareto.png", "hyperparameters.png", "speedup.png", "sparsities.png", "speedup_space.png")


def write_report(out: str | Path, top: int = 3) -> Path:
    """Write `OUT/report/report.md` and its PNG plots; return the path of the .md.

    `top`: how many of the best tickets the convergence and speed-up plots show. Raises `UserError`
    when the directory holds no epoch records yet.
    """
    results = load(out)
    if results.epochs.empty:
        raise UserError(f"{results.out}: no epoch records yet ({layout.EPOCHS}/ is empty); nothing to report")
    # One record per epoch of a trial's path (several dense networks of one phase, best_of, share round
    # and epoch numbers; the global epoch tells them apart).
    epochs = results.epochs.drop_duplicates(["trial_id", "global_epoch"], keep="last")
    metric, mode = objective_of(results)
    trials = trials_so_far(results, epochs, metric)
    ranked = best_first(trials, mode)
    space = results.search.get("space") or {}
    layout.report_dir(results.out).mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # a plot skipped now must not survive from an earlier report
        layout.report_plot(results.out, name).unlink(missing_ok=True)

    lines = header_lines(results, trials, metric, mode)
    lines += ["", "## Leaderboard", ""] + leaderboard_lines(ranked, space, metric)
    lines += double_win_section(trials, mode)
    lines += pareto_section(trials, results.search.get("spec", {}))
    lines += boosting_section(trials)
    lines += confirmation_section(trials)
    lines += certified_section(trials)
    lines += repeats_section(trials, list(space), mode)
    # A search judged by the double-win verdict (a ticket against dense under every fine-tuning regime)
    # rather than by time to a robust accuracy: what its trials measured, not their trainer's name.
    transfer = "double_win_margin" in trials and bool(trials["double_win_margin"].notna().any())
    # (title, file name, what draws it there: path -> (caption, why it was skipped)), in the report's order.
    plots = [
        ("Convergence of the best tickets", "curves.png",
         partial(plot_transfer_curves, epochs=epochs, dense_epochs=results.dense_epochs, ranked=ranked, top=top)
         if transfer else partial(plot_curves, epochs=epochs, ranked=ranked, top=top)),
        ("Sparsity against robustness", "pareto.png", partial(plot_pareto, trials=trials)),
        ("Objective across the searched space", "hyperparameters.png",
         partial(plot_hyperparameters, trials=trials, space=space, metric=metric, mode=mode)),
        ("Speed-up including the cost of finding the ticket", "speedup.png",
         (lambda path: ("", "a transfer search compares tickets with the dense network by the double-win table "
                            "above, not by time to a robust accuracy.")) if transfer
         else partial(plot_speedup, ranked=ranked, top=top)),
    ]
    if not transfer:
        plots += [
            ("Tickets at several sparsities against the reference", "sparsities.png",
             partial(plot_curves_by_sparsity, epochs=epochs, trials=trials, figure_for=new_figure)),
            ("Where the speed-up lives", "speedup_space.png",
             partial(plot_speedup_across_space, trials=trials, figure_for=new_figure)),
        ]
    with matplotlib.rc_context(STYLE):
        for title, name, draw in plots:
            caption, skipped = draw(layout.report_plot(results.out, name))
            lines += ["", f"## {title}", ""]
            lines += [f"_Skipped: {skipped}_"] if skipped else [f"![{title}]({name})", "", f"*{caption}*"]
    lines += failures_section(trials) + problems_section(results)
    path = layout.report_markdown(results.out)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, path)
    return path
