"""The Pareto front of a search with several objectives: the trials no other trial beats on every one.

The objectives are the spec's (`objective: [{metric, mode}, ...]`), recorded per trial as `objective`
(the first) and `objective_<metric>` (the others), the values the searcher saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def spec_objectives(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(column, metric, mode) of each objective in a spec tree as search.json keeps it."""
    objective = spec.get("objective") or {}
    listed = objective if isinstance(objective, list) else [objective, *objective.get("more", [])]
    return [("objective" if i == 0 else f"objective_{o.get('metric')}", o.get("metric", "robust_auc"),
             o.get("mode", "max")) for i, o in enumerate(listed)]


def pareto_mask(trials: pd.DataFrame, objectives: list[tuple[str, str, str]]) -> pd.Series:
    """True for the trials on the front: finite in every objective and dominated by none."""
    columns = [column for column, _, _ in objectives]
    if len(objectives) < 2 or not all(c in trials for c in columns):
        return pd.Series(False, index=trials.index)
    values = trials[columns].to_numpy(dtype=float)
    signs = np.array([1.0 if mode == "max" else -1.0 for _, _, mode in objectives])
    scores = values * signs  # larger is better in every column
    finite = np.isfinite(scores).all(axis=1)
    front = np.zeros(len(trials), dtype=bool)
    for i in np.flatnonzero(finite):
        others = scores[finite]
        dominated = ((others >= scores[i]).all(axis=1) & (others > scores[i]).any(axis=1)).any()
        front[i] = not dominated
    return pd.Series(front, index=trials.index)


def pareto_section(trials: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    """The report's table of the front (nothing for a single objective)."""
    objectives = spec_objectives(spec)
    on_front = pareto_mask(trials, objectives)
    if not on_front.any():
        return []
    front = trials[on_front].sort_values(objectives[0][0], ascending=objectives[0][2] == "min")
    headers = ["trial", *[f"{metric} ({mode})" for _, metric, mode in objectives]]
    lines = ["", "## Pareto front", "",
             f"{int(on_front.sum())} of {len(trials)} trials are beaten by no other trial on every objective.", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, row in front.iterrows():
        lines.append("| " + " | ".join([f"`{row['trial_id']}`", *[f"{row[c]:.4g}" for c, _, _ in objectives]]) + " |")
    return lines
