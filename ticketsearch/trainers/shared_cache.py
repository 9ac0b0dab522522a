"""Work several trials share, done once: pre-training, IMP on a source task, the dense baseline.

A value lives in `<cache_dir>/<kind>-<digest>.pt`, where the digest hashes everything that determines
it (`key`), beside a `.json` copy of the key for people. The first trial to need a value computes it
under a file lock; trials that need it meanwhile wait on the lock and then read the file, so a setting
is computed once however many trials share it (on one machine, or on every machine that sees the
directory). Without a cache directory every caller computes its own value.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from ticketsearch.core.checkpoint import load_state, save_state


def key_digest(key: dict[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shared_value(cache_dir: str | Path | None, kind: str, key: dict[str, Any],
                 compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """(the value for `key`, whether it came from the cache). Values are dicts of tensors and numbers."""
    if cache_dir is None:
        return compute(), False
    directory = Path(cache_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kind}-{key_digest(key)}.pt"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            value = load_state(path)
            return {k: v for k, v in value.items() if k not in ("format", "version")}, True
        value = compute()
        save_state(value, path)
        path.with_suffix(".json").write_text(json.dumps(key, indent=2, sort_keys=True, default=str) + "\n")
        return value, False
