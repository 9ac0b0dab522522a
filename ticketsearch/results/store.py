"""Reading a search's results back: `load(out)` returns the tables as pandas DataFrames.

Works on a finished search, on one still running (what has been reported so far) and on the output
of `ticketsearch train`. Files are written atomically, so a reader never sees half a file; a corrupt
file (a disk error, a copy cut short) is skipped with a warning naming it, and the rest is returned.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ticketsearch import layout
from ticketsearch.errors import UserError
from ticketsearch.records import COMPARISON_ROLES


@dataclass
class SearchResults:
    out: Path
    epochs: pd.DataFrame  # one row per trial per round per epoch
    trials: pd.DataFrame  # one row per trial
    search: dict[str, Any]  # search.json (empty for a `ticketsearch train` directory)
    problems: list[str] = field(default_factory=list)  # files that could not be read

    @property
    def dense_epochs(self) -> pd.DataFrame:
        """The epochs of the dense networks the trials are compared with (role reference, matched or
        best_of): a view of `epochs`, where every trainer's records land."""
        if "role" not in self.epochs:
            return self.epochs.iloc[0:0]
        return self.epochs[self.epochs["role"].isin(COMPARISON_ROLES)]

    @property
    def finished(self) -> bool:
        """True when the search recorded its end (or the directory holds a single finished trial)."""
        if self.search:
            return self.search.get("ended") is not None
        return bool(len(self.trials)) and (self.trials["status"] != "running").all()

    @property
    def interrupted(self) -> bool:
        """True when the search has not ended and its driver is gone (killed, or its machine lost).

        Gone: its pid is dead on this host, or its heartbeat is older than `STALE_AFTER_S` (a pid reused
        by another process, or a driver on another host). A search.json without a driver record
        (written before heartbeats existed) is never called interrupted."""
        from ticketsearch.search.heartbeat import STALE_AFTER_S

        driver = self.search.get("driver") if self.search else None
        if self.finished or not isinstance(driver, dict):
            return False
        beat = driver.get("heartbeat")
        stale = isinstance(beat, (int, float)) and time.time() - beat > STALE_AFTER_S
        return stale or (driver.get("host") == socket.gethostname() and not _pid_alive(driver.get("pid")))

    def state_note(self) -> str:
        """One line on a search that has not ended: interrupted (and how to resume), or partial."""
        if self.finished:
            return ""
        if self.interrupted:
            driver = self.search["driver"]
            beat = driver.get("heartbeat")
            at = datetime.fromtimestamp(beat, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(
                beat, (int, float)) else "an unknown time"
            spec = self.search.get("spec_source", "SPEC")
            return (f"{self.out}: interrupted at {at} (its driver, pid {driver.get('pid')} on {driver.get('host')}, "
                    f"is gone): partial results; resume with `ticketsearch run {spec} --out {self.out} --resume` "
                    "(with the same --set values)")
        if isinstance(self.search.get("driver"), dict):
            return f"{self.out} is still running: partial results"
        return f"{self.out} is still running or was interrupted: partial results"  # no heartbeat to tell


def load(out: str | Path) -> SearchResults:
    out = Path(out)
    trials_path, search_path = layout.trials_table(out), layout.search_json(out)
    if not out.is_dir() or not (layout.epochs_dir(out).is_dir() or trials_path.is_file()):
        raise UserError(f"{out}: holds no ticketsearch results (no {layout.EPOCHS}/ or {layout.TRIALS}); "
                        "give the --out directory of `ticketsearch run` or `ticketsearch train`")
    problems: list[str] = []
    epochs = _read_dataset(layout.epochs_dir(out), problems)
    trials = pd.DataFrame()
    if trials_path.is_file():
        try:
            trials = pd.read_parquet(trials_path)
        except (pa.ArrowException, OSError) as error:
            problems.append(f"{trials_path}: unreadable ({' '.join(str(error).split())[:120]}); skipped")
    search: dict[str, Any] = {}
    if search_path.is_file():
        try:
            search = json.loads(search_path.read_text())
        except (json.JSONDecodeError, OSError) as error:
            problems.append(f"{search_path}: unreadable ({error}); skipped")
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    return SearchResults(out=out, epochs=epochs, trials=trials, search=search, problems=problems)


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_dataset(directory: Path, problems: list[str]) -> pd.DataFrame:
    """Every `<trial>.parquet` in `directory` as one frame; unreadable files go to `problems`."""
    tables = []
    for path in sorted(directory.glob("*.parquet")) if directory.is_dir() else []:
        try:
            tables.append(pq.read_table(path))
        except (pa.ArrowException, OSError) as error:
            problems.append(f"{path}: unreadable ({' '.join(str(error).split())[:120]}); skipped")
    return pa.concat_tables(tables, promote_options="default").to_pandas() if tables else pd.DataFrame()
