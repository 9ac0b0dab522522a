"""The driver's heartbeat in `search.json`: tells a search whose driver died from one still running.

`search.json`'s `ended` is empty both while a search runs and after its driver was killed; readers
(`ticketsearch results`, `report`) tell the two apart by `driver`: the host and pid of the driver
process and `heartbeat`, the time (seconds since the epoch) it last wrote, every `PERIOD_S` seconds.
`ticketsearch.results.store` decides: a dead pid on this host, or a heartbeat older than
`STALE_AFTER_S`, is a driver that is gone.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

PERIOD_S = 30.0
# Three missed beats: a driver busy in one Tune step (a checkpoint sync, a slow trial start) for a
# minute is still alive; one gone for longer is reported as interrupted.
STALE_AFTER_S = 3 * PERIOD_S


def driver_record() -> dict[str, Any]:
    """This process as the driver of a search, beating now."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Readers never see half a file: a temporary name, then a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2, default=str) + "\n")
    os.replace(temporary, path)


class Heartbeat:
    """A thread that refreshes `driver.heartbeat` in `search.json` while the search runs.

    A thread rather than a Tune callback: Tune's loop can block for longer than a period, and the
    beat says only that the driver process is alive. Use as a context manager around the search,
    after search.json is written and before it is written for the last time.
    """

    def __init__(self, search_json: Path, period_s: float = PERIOD_S) -> None:
        self.search_json = search_json
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticketsearch-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                document = json.loads(self.search_json.read_text())
                document["driver"] = driver_record()
                write_json_atomic(self.search_json, document)
            except (OSError, ValueError):  # a full disk or a file edited by hand: beat next period
                pass
