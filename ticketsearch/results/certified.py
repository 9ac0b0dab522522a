"""Certified accuracy against sparsity: what the `certify` section measured on a search's tickets.

Pruning can raise certified robustness (Li et al. 2022, "Can pruning improve certified robustness of
neural networks?"); this table shows, ticket by ticket in order of sparsity, the test split's clean,
PGD robust and certified accuracy (`test_*` columns of trials.parquet, from
`trainers/engine.py:evaluate_test_split`) next to the dense reference's (`reference_test_*`), so a
ticket that certifies more than the dense network it was pruned from stands out.
"""

from __future__ import annotations

import math

import pandas as pd


def certified_section(trials: pd.DataFrame) -> list[str]:
    """The report's table of certified accuracy by sparsity (nothing when no trial was certified)."""
    if "test_certified_acc" not in trials or "status" not in trials:
        return []
    done = trials[(trials["status"] == "completed") & pd.to_numeric(trials["test_certified_acc"]).notna()]
    if not len(done):
        return []
    done = done.sort_values(["final_sparsity", "trial_id"])
    how = {f"{row.get('certify_method', '')} at eps {_eps(row.get('certify_eps', math.nan))}"
           for _, row in done.iterrows()}
    reference = "reference_test_certified_acc" in done and pd.to_numeric(done["reference_test_certified_acc"]).notna().any()
    lines = ["", "## Certified accuracy against sparsity", "",
             f"Test images certified ({', '.join(sorted(how))}) of {len(done)} finished ticket{'s' * (len(done) != 1)}: "
             "the share classified "
             "correctly whose every logit margin is proven positive over the whole eps-ball (a lower bound on "
             "the robust accuracy that no attack can lower), next to the PGD robust and clean accuracy of the "
             "same images" + (" and the dense reference's." if reference else "."), ""]
    headers = ["trial", "sparsity", "certified", "PGD robust", "clean", "images"]
    if reference:
        headers += ["reference certified", "ticket - reference"]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, row in done.iterrows():
        cells = [f"`{row['trial_id']}`", f"{row['final_sparsity']:.1%}", _percent(row["test_certified_acc"]),
                 _percent(row.get("test_robust_acc")), _percent(row.get("test_clean_acc")),
                 f"{row.get('test_certified_examples', math.nan):.0f}"]
        if reference:
            dense = row.get("reference_test_certified_acc", math.nan)
            cells += [_percent(dense), _points(row["test_certified_acc"] - dense)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _eps(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.4g} ({value * 255:.3g}/255)"


def _percent(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _points(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:+.1f} points"
