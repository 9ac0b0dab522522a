"""A trial's curves from its epoch records, by role: the one place results choose them.

Records carry the role their level plays in the trial (records.ROLES). The ticket's curve is its
`ticket` records; the reference's is the level `trials.parquet` names in `reference_level` (IMP's
dense round when the reference trains exactly like it, so it is that level's records whatever role
they carry), else the records whose role is `reference` (transfer's dense fine-tuning).
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd


def ticket_curve(own: pd.DataFrame) -> pd.DataFrame:
    """The epochs of the trial's ticket (its records, one trial)."""
    return own[own["role"] == "ticket"] if "role" in own else own.iloc[0:0]


def reference_curve(own: pd.DataFrame, trial: Mapping[str, Any]) -> pd.DataFrame:
    """The epochs of the dense reference one trial's ticket is measured against (empty when it has none)."""
    level = trial.get("reference_level", "")
    if isinstance(level, str) and level and "level" in own:
        return own[own["level"] == level]
    return own[own["role"] == "reference"] if "role" in own else own.iloc[0:0]
