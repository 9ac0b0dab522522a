"""Run at the start of every Ray worker of a search (Ray's `worker_process_setup_hook`): a quiet end.

At the end of a search Ray stops its workers with SIGTERM, and a worker's SIGTERM handler raises
SystemExit wherever the worker's Python happens to be. When that is inside a weakref callback, a
finaliser or an atexit function, Python cannot propagate it and prints "Exception ignored in ...
SystemExit: 1" with a traceback to the worker's stderr, which Ray forwards to the user's terminal
after the search has finished. Such exceptions are written to `ticketsearch-shutdown-<pid>.log`
beside the worker's own log files instead (a name Ray's log forwarding does not pick up); every
other exception Python cannot raise is reported as before.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path


def quiet_shutdown() -> None:
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if unraisable.exc_type is None or not issubclass(unraisable.exc_type, SystemExit):
            previous(unraisable)
            return
        lines = traceback.format_exception(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
        where = f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}\n"
        with open(_log_dir() / f"ticketsearch-shutdown-{os.getpid()}.log", "a") as log:
            log.write(where + "".join(lines))

    sys.unraisablehook = hook


def _log_dir() -> Path:
    """Where Ray writes this worker's stderr (its session's logs folder), else the temporary folder."""
    try:
        target = Path(os.readlink(f"/proc/{os.getpid()}/fd/2"))
    except OSError:  # not Linux, or stderr closed
        return Path(tempfile.gettempdir())
    return target.parent if target.parent.is_dir() else Path(tempfile.gettempdir())
