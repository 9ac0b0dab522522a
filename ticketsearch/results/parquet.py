"""Parquet files of epoch records and trial summaries, written atomically with one fixed schema.

`epochs/` is a dataset directory: one file per trial (`<trial_id>.parquet`), one row per round per
epoch, columns `trial_id`, `node` (the host that trained the epoch), `node_id` (its Ray node id, which
tells apart nodes that share a host; empty without Ray), then the `EpochRecord` fields. Every file has
the same schema, so `pandas.read_parquet(out / "epochs")`, pyarrow, DuckDB and Polars read every column.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from ticketsearch import layout
from ticketsearch.records import EpochRecord

_ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
_HINTS = typing.get_type_hints(EpochRecord)

EPOCH_SCHEMA = pa.schema(
    [pa.field(name, pa.string(), nullable=False) for name in ("trial_id", "node", "node_id")]
    + [pa.field(f.name, _ARROW_TYPES[_HINTS[f.name]], nullable=False) for f in dataclasses.fields(EpochRecord)]
)


def write_table_atomic(table: pa.Table, path: str | Path) -> None:
    """Write beside the target under a name that is not `*.parquet`, fsync, then rename.

    DuckDB globs and pyarrow datasets would otherwise pick up a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        pq.write_table(table, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def epochs_table(trial_id: str, records: Iterable[tuple[EpochRecord, str, str]]) -> pa.Table:
    """`records`: (record, node, node_id) triples in global-epoch order."""
    rows = [{"trial_id": trial_id, "node": node, "node_id": node_id, **r.as_dict()} for r, node, node_id in records]
    return pa.Table.from_pylist(rows, schema=EPOCH_SCHEMA)


def write_trial_epochs(out: str | Path, trial_id: str, records: Iterable[tuple[EpochRecord, str, str]]) -> Path:
    """`<out>/epochs/<trial_id>.parquet`."""
    path = layout.trial_epochs(out, trial_id)
    write_table_atomic(epochs_table(trial_id, records), path)
    return path


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; lists and tuples become their string form."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        else:
            flat[name] = value
    return flat
