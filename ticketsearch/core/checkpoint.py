"""Trial state on disk: atomic writes, and loads with `torch.load(weights_only=True)` only.

A state is a plain nested dict of tensors and numbers (see `IMPTrainer.state_dict`) marked with a
format name and version, so a foreign or corrupt file is refused with a clear message rather than
half-loaded.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ticketsearch.errors import UserError

STATE_FORMAT = "ticketsearch.trial_state"
STATE_VERSION = 1


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary name, fsync, then rename: a reader never sees half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_tensors(path: str | Path) -> Any:
    """`torch.load(weights_only=True)` with every failure turned into a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise UserError(f"{path}: not a readable torch file (corrupt, truncated or not weights-only: {reason})") from None


def load_state(path: str | Path, config_hash: str | None = None) -> dict[str, Any]:
    """A trial state saved by `save_state`; refuses other files and states of another config."""
    state = load_tensors(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not a ticketsearch trial state (expected format {STATE_FORMAT!r})")
    if state.get("version") != STATE_VERSION:
        raise UserError(f"{path}: trial state version {state.get('version')!r}; this ticketsearch reads {STATE_VERSION}")
    if config_hash is not None and state.get("config_hash") != config_hash:
        raise UserError(
            f"{path}: saved for config {state.get('config_hash')}, not this trial's {config_hash}; "
            "use the spec and --set values it was started with, or a new --out"
        )
    return state
