"""The report's Markdown sections of its own: the header, the leaderboard, failed trials and unreadable files.

The study's sections (double win, Pareto front, boosting, confirmation, certified, repeats) live beside
the results they summarise; results/report.py puts them all in order.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from ticketsearch import layout
from ticketsearch.results.intervals import interval_of
from ticketsearch.results.report_data import first_value, metric_scale, numeric_column
from ticketsearch.results.store import SearchResults

LEADERBOARD_ROWS = 10


def header_lines(results: SearchResults, trials: pd.DataFrame, metric: str, mode: str) -> list[str]:
    search = results.search
    name = search.get("name") or first_value(trials, "config.name") or results.out.name
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
        lines.append(f"- a single trial from `ticketsearch train` (no {layout.SEARCH_JSON})")
    lines += [
        f"- state: {state}",
        f"- objective: `{metric}` ({mode}imise)",
        f"- trials: {len(trials)} ({by_status}); {plural(len(results.epochs), 'epoch record')}",
        f"- results: `{results.out}`",
    ]
    tested = numeric_column(trials, "test_examples").dropna()
    if len(tested):  # how many test images every test figure stands on (AutoAttack's cost sets it)
        counts = sorted({int(n) for n in tested})
        autoattack = numeric_column(trials, "test_autoattack_acc").notna().any()
        lines.append(f"- test split: n = {' / '.join(map(str, counts))} images per finished ticket, under `attack.eval`"
                     + (" and AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square)" if autoattack else "")
                     + "; each test accuracy with its 95% Wilson interval over those images")
    return lines


def leaderboard_lines(ranked: pd.DataFrame, space: dict[str, Any], metric: str) -> list[str]:
    if ranked.empty:
        return ["_No trial has reported its objective yet._"]
    factor, _ = metric_scale(metric)
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
        lines += ["", f"_{len(ranked) - LEADERBOARD_ROWS} more trials in `{layout.TRIALS}`._"]
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


def failures_section(trials: pd.DataFrame) -> list[str]:
    failed = trials[trials["status"].isin(["error", "diverged"])]
    if failed.empty:
        return []
    lines = ["", "## Failed trials", ""]
    for row in failed.sort_values("trial_id").to_dict("records"):
        message = " ".join(str(row.get("error") or "no message recorded").split())
        lines.append(f"- `{row['trial_id']}` ({row['status']}): {message[:300]}")
    return lines


def problems_section(results: SearchResults) -> list[str]:
    if not results.problems:
        return []
    return ["", "## Files that could not be read", ""] + [f"- {p}" for p in results.problems]


# ---------------------------------------------------------------------------------------------- formatting


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


def plural(count: int, noun: str) -> str:
    """`count` and the noun, plural unless the count is 1: "1 trial", "2 trials"."""
    return f"{count} {noun}{'s' * (count != 1)}"


def _time(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return "–"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
