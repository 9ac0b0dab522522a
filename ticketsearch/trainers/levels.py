"""Where levels live: computed once, shared by the trials that need them, resumable.

A level (trainers/level_spec.py) is one stretch of training named by the hash of everything it reads,
as open_lth names its levels, so a setting a level does not read never splits it: a pruning-ratio
sweep at one finding learning rate trains its dense round once.

`LevelStore` keeps levels under a directory (`<out>/levels/`, or the cluster storage's): each in
`<name>/` with `key.json` (its spec, for people), `progress.pt` (the training state after its last
finished epoch, so an interrupted level resumes there rather than from scratch) and `result.pt`
(written once, when it ends). Whoever trains a level holds its file lock for the whole level; a
trial that needs a level another holds first trains the levels it can (`try_claim`), and only then
waits. A store without a directory keeps levels in memory (one process, nothing shared).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from filelock import FileLock, Timeout

from ticketsearch import layout
from ticketsearch.core.checkpoint import load_state, save_state

if TYPE_CHECKING:  # level_spec imports the spec sections; the store needs only a level's name and spec
    from ticketsearch.trainers.level_spec import LevelSpec


class LevelStore:
    """Finished levels and the progress of unfinished ones, on disk (shared) or in memory (private)."""

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root).expanduser()
        self._memory: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, FileLock] = {}
        # Who trains here: recorded in a result so a trial tells its own levels from reused ones.
        self.token = uuid.uuid4().hex

    def _dir(self, level: LevelSpec) -> Path:
        return layout.level_dir(self.root, level.name)

    @property
    def shared(self) -> bool:
        """Whether levels outlive this process (on disk). A store in memory keeps results only: an
        unfinished level's progress is the trial's own state, which its checkpoint already carries."""
        return self.root is not None

    def _read(self, level: LevelSpec, file: Callable[[Path], Path]) -> dict[str, Any] | None:
        """The level's result or progress (`file`: layout.level_result or layout.level_progress)."""
        if not self.shared:
            return self._memory.get(level.name) if file is layout.level_result else None
        path = file(self._dir(level))
        return _strip(load_state(path)) if path.is_file() else None

    # ---------------------------------------------------------------- results
    def result(self, level: LevelSpec) -> dict[str, Any] | None:
        return self._read(level, layout.level_result)

    def save_result(self, level: LevelSpec, result: dict[str, Any]) -> None:
        if not self.shared:
            self._memory[level.name] = result
            return
        save_state(result, layout.level_result(self._dir(level)))
        layout.level_progress(self._dir(level)).unlink(missing_ok=True)

    # ---------------------------------------------------------------- progress (under the level's lock)
    def progress(self, level: LevelSpec) -> dict[str, Any] | None:
        return self._read(level, layout.level_progress)

    def save_progress(self, level: LevelSpec, state: Callable[[], dict[str, Any]]) -> None:
        """Keep `state()` as the level's progress. Built only by a store on disk: in memory the trial's
        own checkpoint already carries an unfinished level, so no state is copied per epoch."""
        if self.shared:
            save_state(state(), layout.level_progress(self._dir(level)))

    # ---------------------------------------------------------------- locks
    def try_claim(self, level: LevelSpec) -> bool:
        """Take the level's lock if nobody holds it; True when this store now holds it."""
        return self._acquire(level, timeout=0)

    def claim(self, level: LevelSpec) -> None:
        """Take the level's lock, waiting for whoever holds it (they finish it, or die and free it)."""
        self._acquire(level, timeout=-1)

    def _acquire(self, level: LevelSpec, timeout: float) -> bool:
        if not self.shared or level.name in self._locks:
            return True
        directory = self._dir(level)
        directory.mkdir(parents=True, exist_ok=True)
        key_file = layout.level_key(directory)
        if not key_file.exists():
            temporary = key_file.with_name(f".{key_file.name}.{os.getpid()}")
            temporary.write_text(json.dumps(level.describe(), indent=2, sort_keys=True) + "\n")
            os.replace(temporary, key_file)
        lock = FileLock(str(layout.level_lock(directory)))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            return False
        self._locks[level.name] = lock
        return True

    def release(self, level: LevelSpec) -> None:
        lock = self._locks.pop(level.name, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for name in list(self._locks):
            self._locks.pop(name).release()


def _strip(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in ("format", "version")}
