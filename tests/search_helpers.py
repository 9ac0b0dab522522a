"""Shared pieces of the search tests: tiny search specs and readers of a search's output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from tiny import tiny_tree


def search_spec(tmp_path: Path, name: str = "search.yaml", **values) -> Path:
    """A tiny real search: digits, small_cnn, PGD-2 training, PGD-5 evaluation on 100 images."""
    tree = tiny_tree(**{
        "name": "tinysearch",
        "model.width": {"choice": [0.25, 0.5]},
        "train.lr": {"loguniform": [0.01, 0.2]},
        "prune.ratio": {"uniform": [0.2, 0.8]},
        "search": {"algorithm": "optuna", "num_samples": 4, "max_concurrent": 2, "seed": 0,
                   "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2}}},
        "resources": {"cpu": 1},
        **values,
    })
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def corrupt_mnist(root: Path, n_train: int = 60) -> Path:
    """MNIST whose label files are whole and whose training images are cut short: the checks made
    before a search (sizes read from the labels) pass, and every trial on it fails loading its images."""
    from fake_datasets import write_mnist

    write_mnist(root, n_train=n_train, n_test=20)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    return root


def start_search(spec: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`ticketsearch run` in its own process group, so a test can kill it and its Ray with it."""
    return subprocess.Popen(
        [sys.executable, "-m", "ticketsearch", "run", str(spec), "--out", str(out), "--num-cpus", "2", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env={**os.environ},
    )


def epochs_recorded(out: Path) -> int:
    try:
        return len(pd.read_parquet(out / "epochs")) if (out / "epochs").is_dir() else 0
    except Exception:  # a file may appear between listing and reading; the writer is atomic per file
        return 0


def trial_worker_pids(driver_pid: int) -> list[int]:
    """Pids of the Ray workers running a trial under `driver_pid` (Linux /proc): Ray names them
    `ray::ImplicitFunc...`. Found from the process tree, not from Tune's result.json, which reaches the
    storage path only when Tune next syncs its driver staging directory."""
    def parent(pid: str) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                continue
            ancestor = parent(pid)
            while ancestor not in (0, 1, driver_pid):
                ancestor = parent(str(ancestor))
        except (OSError, ValueError, IndexError):  # the process ended while we looked
            continue
        if ancestor == driver_pid:
            found.append(int(pid))
    return found


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def assert_each_epoch_once(out: Path) -> pd.DataFrame:
    epochs = pd.read_parquet(out / "epochs")
    trials = pd.read_parquet(out / "trials.parquet")
    for trial_id, group in epochs.groupby("trial_id"):
        assert list(group["global_epoch"]) == list(range(1, len(group) + 1)), f"gap or duplicate in {trial_id}"
        row = trials[trials["trial_id"] == trial_id].iloc[0]
        assert row["epochs_trained"] == len(group)
    return epochs
