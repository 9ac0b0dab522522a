"""Confirmation on fresh seeds (`search.confirm: {top: K, seeds: S}`).

A search's best trial is the maximum of many noisy figures, measured on the validation images and the
seed that ranked it: it carries a winner's-curse inflation. After the search, its K best completed
configurations (ranked as the leaderboard ranks them) are trained again with S fresh seeds each, as
ordinary trials of the same search on the same cluster, levels shared: seed j of a configuration is
`train.seed + SEED_STRIDE * j` (j = 1..S), which changes the initialisation, the data order and the
attacks' randomness, and their dense references train with the same seeds. Their validation curves,
and so their time to target, are read on validation images the search did not rank by: the images
after the first `train.eval_offset + train.eval_examples` of the split, up to `eval_examples` of them.

A confirmation trial's Tune config is `{CONFIRM: {"values": the configuration's space values,
"fixed": {path: value}, "confirms": the search trial it repeats}}`; `trial_config` reads either kind.
Rows of trials.parquet carry `stage` (`search` or `confirm`) and `confirms`.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ticketsearch.results.leaderboard import completed_first
from ticketsearch.spec import Spec, TrialConfig

CONFIRM = "confirm"
EXPERIMENT = "confirm"  # Tune's experiment name for the confirmation trials, beside the search's
SEED_STRIDE = 1000  # far from any seed a spec searches over (seeds 0..999 stay the search's own)


def trial_config(spec: Spec, tune_config: Mapping[str, Any]) -> TrialConfig:
    """The trial config of a search trial (its sampled values) or of a confirmation trial."""
    confirm = tune_config.get(CONFIRM)
    if confirm is None:
        return spec.trial(tune_config)
    return spec.trial(confirm["values"], fixed=confirm["fixed"])


def stage_of(tune_config: Mapping[str, Any]) -> tuple[str, str]:
    """(stage, the trial a confirmation repeats): ("search", "") or ("confirm", trial id)."""
    confirm = tune_config.get(CONFIRM)
    return ("search", "") if confirm is None else ("confirm", confirm["confirms"])


def confirmation_trials(spec: Spec, trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The Tune configs of the confirmation trials: S fresh seeds for each of the K best completed
    search trials (none when the spec has no `search.confirm` or no trial completed)."""
    confirm = spec.default_trial.search.confirm
    if confirm is None or trials.empty:
        return []
    search = trials[(trials["status"] == "completed") & trials["objective"].notna()]
    if "stage" in search:
        search = search[search["stage"] == "search"]
    mode = spec.default_trial.objective.mode
    best = completed_first(search.sort_values("objective", ascending=mode == "min")).head(confirm.top)
    configs = []
    for _, row in best.iterrows():
        values = {path: _plain(row[f"config.{path}"]) for path in spec.space}
        base = spec.trial(values)
        train = base.train
        for j in range(1, confirm.seeds + 1):
            fixed = {"train.seed": train.seed + SEED_STRIDE * j,
                     "train.eval_offset": train.eval_offset + train.eval_examples}
            configs.append({CONFIRM: {"values": values, "fixed": fixed, "confirms": row["trial_id"]}})
    return configs


def _plain(value: Any) -> Any:
    """A trials.parquet cell as the spec value it came from (numpy scalars to Python's)."""
    return value.item() if hasattr(value, "item") else value
