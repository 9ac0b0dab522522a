"""The double-win table of a transfer search (Chen et al. 2022, their Tables 1-3 in shape).

One row per downstream data set, data fraction and ticket sparsity: the ticket's standard (SA) and
robust (RA) accuracy against the dense pre-trained network's under each fine-tuning regime, and the
verdict. Where several trials share a row (e.g. a searched learning rate) the row shows the one the
search ranks first, by its objective on validation, never by its test numbers.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

REGIMES = ("standard", "adversarial")


def double_win_section(trials: pd.DataFrame, mode: str) -> list[str]:
    """Markdown lines of the section; empty when the trials are not transfer trials with a verdict."""
    if "double_win_split" not in trials:
        return []
    judged = trials[(trials["status"] == "completed") & (trials["double_win_split"].fillna("") != "")]
    if judged.empty:
        return []
    split = judged["double_win_split"].iloc[0]
    regimes = [r for r in REGIMES if f"{r}_{split}_clean_acc" in judged]
    judged = judged.assign(
        _sparsity=pd.to_numeric(judged["final_sparsity"], errors="coerce").round(3),
        _objective=pd.to_numeric(judged.get("objective", pd.Series(math.nan, index=judged.index)), errors="coerce"),
    )
    keys = [c for c in ("config.data.dataset", "config.data.fraction") if c in judged] + ["_sparsity"]
    best = (judged.sort_values(["_objective", "trial_id"], ascending=[mode == "min", True], na_position="last")
            .groupby(keys, sort=True, dropna=False).head(1).sort_values(keys))
    headers = ["data", "fraction", "sparsity (%)"]
    for regime in regimes:
        headers += [f"{regime} SA (%)", f"{regime} RA (%)"]
    headers += ["margin (points)", "double win"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in best.to_dict("records"):
        cells = [str(row.get("config.data.dataset", "")), _number(row.get("config.data.fraction"), 1, ".3g"),
                 _number(row["_sparsity"], 100, ".1f")]
        for regime in regimes:
            for kind in ("clean", "robust"):
                ticket, dense = row.get(f"{regime}_{split}_{kind}_acc"), row.get(f"dense_{regime}_{split}_{kind}_acc")
                cells.append(f"{_number(ticket, 100, '.1f')} ({_number(dense, 100, '.1f')})")
        margin_column = "double_win_test_margin" if split == "test" else "double_win_margin"
        cells += [_number(row.get(margin_column), 100, "+.1f"), "**yes**" if bool(row.get("double_win")) else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    tolerance = _first(judged, "config.transfer.tolerance")
    sparsest = _sparsest(best)
    return ["", "## Double-win tickets", "",
            f"Ticket accuracy with the dense pre-trained network's in brackets, on the {split} split, after "
            f"fine-tuning under each regime. A double win is within {_number(tolerance, 100, '.3g')} points of "
            "dense in SA and RA under every regime; the margin is the smallest ticket-minus-dense gap plus "
            "that tolerance.", "", *lines, "", *sparsest]


def _sparsest(best: pd.DataFrame) -> list[str]:
    wins = best[best["double_win"].astype(bool)]
    if wins.empty:
        return ["_No ticket here is a double win._"]
    keys = [c for c in ("config.data.dataset", "config.data.fraction") if c in wins]
    lines = []
    for key, group in (wins.groupby(keys) if keys else [((), wins)]):
        label = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in zip(keys, key if isinstance(key, tuple) else (key,)))
        lines.append(f"- sparsest double-win ticket{' for ' + label if label else ''}: "
                     f"{100 * group['_sparsity'].max():.1f}% sparsity")
    return lines


def _number(value: Any, factor: float, spec: str) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(value) else f"{value * factor:{spec}}"


def _first(frame: pd.DataFrame, column: str) -> Any:
    values = frame[column].dropna() if column in frame else ()
    return values.iloc[0] if len(values) else None
