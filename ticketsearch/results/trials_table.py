"""`trials.parquet`: one row per trial, written by `ticketsearch run` (its driver callback) and by
`ticketsearch train` through the same functions, so both have the same columns in the same order.

A row is born with every column (`new_row`: identifiers, the trainer's summary columns at their
defaults, the flattened config as `config.<path>`), follows the trial's records while it runs
(`path_summary`) and takes the trainer's summary when it ends, so the table keeps one schema whatever
state its trials are in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import pyarrow as pa

from ticketsearch import layout
from ticketsearch.records import EpochRecord, objective_columns, path_summary
from ticketsearch.results.parquet import flatten, write_table_atomic
from ticketsearch.spec import TrialConfig


def new_row(trial_id: str, config: TrialConfig, defaults: Mapping[str, Any], stage: str = "search",
            confirms: str = "") -> dict[str, Any]:
    """A trial's row before its first epoch; `defaults`: its trainer's summary columns (trainers.summary_defaults);
    `stage`: search, or confirm for a confirmation trial repeating trial `confirms` (search/confirm.py)."""
    return {"trial_id": trial_id, "status": "pending", "error": "", "ticket_dir": "", "node": "", "node_id": "",
            "stage": stage, "confirms": confirms,
            "seed": config.train.seed, "config_hash": config.content_hash(),
            **{key: math.nan for key, _, _ in objective_columns(config.objective)},
            **defaults, **{f"config.{k}": v for k, v in flatten(config.to_dict()).items()}}


def amortize(frame: pd.DataFrame) -> pd.DataFrame:
    """`speedup_amortized`: the speed-up with the cost of finding a ticket shared among the trials that
    share it (the same finding level: a pruning-ratio sweep prunes one dense round many ways), which
    only the table of all trials knows. It is what a search that finds many tickets pays per ticket.

    The cost is divided only among the trials pruned from that finding round once it had finished:
    those whose path reached their ticket's round (`final_round` is `prune.rounds`), whether they then
    completed, stopped early or failed. A trial that errored, or was stopped or still waits, before
    its finding round ended got no ticket from it and takes no share."""
    if not {"find_level", "dense_passes_to_target", "final_round", "config.prune.rounds"} <= set(frame):
        return frame
    reached = pd.to_numeric(frame["final_round"], errors="coerce")
    pruned = (frame["find_level"] != "") & (reached >= pd.to_numeric(frame["config.prune.rounds"], errors="coerce"))
    sharing = pruned.groupby(frame["find_level"]).transform("sum").where(pruned)
    frame["speedup_amortized"] = frame["dense_passes_to_target"] / (
        frame["find_passes"] / sharing + frame["ticket_passes_to_target"])
    return frame


def follow(row: dict[str, Any], records: Sequence[EpochRecord], summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The row after these records (and, for a finished trial, its trainer's summary)."""
    row.update(path_summary(records))
    if summary is not None:
        row.update(summary)
    return row


def search_totals(out: str | Path, levels_dir: str | Path) -> dict[str, Any]:
    """What a search trained and what its trials shared: for search.json when it ends. `levels`: the
    distinct levels finished, by kind (`<kind>-<digest>/result.pt` under the levels directory)."""
    levels: dict[str, int] = {}
    for result in layout.finished_levels(levels_dir):
        kind = result.parent.name.rsplit("-", 1)[0]
        levels[kind] = levels.get(kind, 0) + 1
    path = layout.trials_table(out)
    trials = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    sums = {column: float(trials[column].sum()) if column in trials else 0.0
            for column in ("trained_epochs", "reused_epochs", "trained_seconds", "reused_seconds",
                           "trained_passes", "reused_passes")}
    return {"levels": dict(sorted(levels.items())), "distinct_levels": sum(levels.values()), **sums}


def write_trials(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    frame = amortize(pd.DataFrame(list(rows)))
    for column in frame.columns:  # one type per column whatever the rows hold (None, lists)
        if frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: "" if v is None else str(v))
    write_table_atomic(pa.Table.from_pandas(frame, preserve_index=False), path)
