"""Levels: stretches of training named by what determines them, computed once and shared.

A level is one stretch of training whose result depends only on settings that can be named: IMP's
dense round, each finding round, the final ticket's round, the dense reference; the transfer
trainer's pre-training, each IMP round on the source task and each dense fine-tuning. Its name is a
hash of its kind, the settings it reads (its `key`) and the names of the levels it starts from, as
open_lth names its levels, so a setting a level does not read never splits it: a pruning-ratio sweep
at one finding learning rate trains its dense round once.

`LevelStore` keeps levels under a directory (`<out>/levels/`, or the cluster storage's): each in
`<kind>-<digest>/` with `key.json` (for people), `progress.pt` (the training state after its last
finished epoch, so an interrupted level resumes there rather than from scratch) and `result.pt`
(written once, when it ends). Whoever trains a level holds its file lock for the whole level; a
trial that needs a level another holds first trains the levels it can (`try_claim`), and only then
waits. A store without a directory keeps levels in memory (one process, nothing shared).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

from filelock import FileLock, Timeout

from ticketsearch.core.checkpoint import load_state, save_state


@dataclass(frozen=True)
class Level:
    kind: str
    key: Mapping[str, Any] = field(hash=False)
    parents: tuple["Level", ...] = ()

    @cached_property
    def digest(self) -> str:
        text = json.dumps({"kind": self.kind, "key": self.key, "parents": [p.digest for p in self.parents]},
                          sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.digest}"

    @property
    def seed(self) -> int:
        """The level's own random seed: from its name alone, so whoever trains it draws the same numbers."""
        return int(self.digest[:8], 16)


# What a level's computation calls after each epoch with a function that returns its state.
SaveProgress = Callable[[Callable[[], dict[str, Any]]], None]

class LevelStore:
    """Finished levels and the progress of unfinished ones, on disk (shared) or in memory (private)."""

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root).expanduser()
        self._memory: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, FileLock] = {}
        # Who trains here: recorded in a result so a trial tells its own levels from reused ones.
        self.token = uuid.uuid4().hex

    def _dir(self, level: Level) -> Path:
        return self.root / level.name

    @property
    def shared(self) -> bool:
        """Whether levels outlive this process (on disk). A store in memory keeps results only: an
        unfinished level's progress is the trial's own state, which its checkpoint already carries."""
        return self.root is not None

    def _read(self, level: Level, name: str) -> dict[str, Any] | None:
        if not self.shared:
            return self._memory.get(level.name) if name == "result.pt" else None
        path = self._dir(level) / name
        return _strip(load_state(path)) if path.is_file() else None

    # ---------------------------------------------------------------- results
    def result(self, level: Level) -> dict[str, Any] | None:
        return self._read(level, "result.pt")

    def save_result(self, level: Level, result: dict[str, Any]) -> None:
        if not self.shared:
            self._memory[level.name] = result
            return
        save_state(result, self._dir(level) / "result.pt")
        (self._dir(level) / "progress.pt").unlink(missing_ok=True)

    # ---------------------------------------------------------------- progress (under the level's lock)
    def progress(self, level: Level) -> dict[str, Any] | None:
        return self._read(level, "progress.pt")

    def save_progress(self, level: Level, state: Callable[[], dict[str, Any]]) -> None:
        """Keep `state()` as the level's progress. Built only by a store on disk: in memory the trial's
        own checkpoint already carries an unfinished level, so no state is copied per epoch."""
        if self.shared:
            save_state(state(), self._dir(level) / "progress.pt")

    # ---------------------------------------------------------------- locks
    def try_claim(self, level: Level) -> bool:
        """Take the level's lock if nobody holds it; True when this store now holds it."""
        return self._acquire(level, timeout=0)

    def claim(self, level: Level) -> None:
        """Take the level's lock, waiting for whoever holds it (they finish it, or die and free it)."""
        self._acquire(level, timeout=-1)

    def _acquire(self, level: Level, timeout: float) -> bool:
        if not self.shared or level.name in self._locks:
            return True
        directory = self._dir(level)
        directory.mkdir(parents=True, exist_ok=True)
        key_file = directory / "key.json"
        if not key_file.exists():
            temporary = directory / f".key.json.{os.getpid()}"
            temporary.write_text(json.dumps({"kind": level.kind, "key": level.key,
                                             "parents": [p.name for p in level.parents]},
                                            indent=2, sort_keys=True, default=str) + "\n")
            os.replace(temporary, key_file)
        lock = FileLock(str(directory / ".lock"))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            return False
        self._locks[level.name] = lock
        return True

    def release(self, level: Level) -> None:
        lock = self._locks.pop(level.name, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for name in list(self._locks):
            self._locks.pop(name).release()


def train_level(store: LevelStore, level: Level,
                compute: Callable[[dict[str, Any] | None, SaveProgress], dict[str, Any]]
                ) -> tuple[dict[str, Any], bool]:
    """(the level's result, whether another trial trained it), training it here if nobody has.

    `compute(progress, save_progress)` trains the level to its end, from `progress` (the state it
    saved after its last finished epoch, None at the start) and calling `save_progress(state)` after
    every epoch (`state`: a function that returns it, `LevelStore.save_progress`), and returns the result. Trials that need the level meanwhile wait for it.
    """
    result = store.result(level)
    if result is not None:
        return result, result.get("trained_by") != store.token
    store.claim(level)
    try:
        result = store.result(level)  # finished by whoever held it while this trial waited
        if result is not None:
            return result, result.get("trained_by") != store.token
        result = {**compute(store.progress(level), lambda state: store.save_progress(level, state)),
                  "trained_by": store.token}
        store.save_result(level, result)
        return result, False
    finally:
        store.release(level)


def _strip(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in ("format", "version")}
