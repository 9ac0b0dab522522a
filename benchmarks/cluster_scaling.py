"""The same small search on a one-node and a three-node local Ray cluster, and the cost of losing a node.

Three runs in one process, each a fresh `ray.cluster_utils.Cluster` on this machine and a driver
started as a user starts it (`ticketsearch run --address ... --storage ...`, its own process):

1. one node with 3 CPUs;
2. three nodes with 1 CPU each (a head and two workers: the same CPU total, trials on all three);
3. as 2, but once the search has recorded `--fail-after` epochs the worker running the most recent
   epoch is removed (its processes killed, as a lost machine) and a fresh 1-CPU node added at once
   (an autoscaler replacing it, without the minutes a cloud takes to boot one).

The search: `searches/quickstart.yaml` (digits, small_cnn, PGD) cut to `--trials` random-search
trials under FIFO of 7 epochs each (FGSM find 1, PGD ticket 3, PGD dense baseline 3), 3 concurrent
trials of 1 CPU. Prints, per run, wall seconds (driver start to exit, including Ray's connection and
the pre-flight check), trials per minute, trial-epochs recorded and whether each (trial, epoch)
appears once; then the extra seconds of run 3 over run 2. One run of each, so on a shared machine the
figures carry the noise of whatever else runs; the CPU total is the same in every run.

    python3 -m uv run python benchmarks/cluster_scaling.py [--trials 9] [--fail-after 12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # workers start from this environment

from ray._common.utils import reset_ray_address  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

SPEC = "searches/quickstart.yaml"
EPOCHS_PER_TRIAL = 7  # FGSM find 1 + PGD ticket 3 + PGD dense baseline 3, with OVERRIDES below
OVERRIDES = {
    "search.algorithm": "random", "search.scheduler": "fifo", "search.max_concurrent": 3,
    "search.max_failures": 2, "train.epochs": 3, "prune.find_epochs": 1, "train.eval_examples": 100,
}


def start_cluster(layout: list[int]) -> tuple[Cluster, list]:
    """A head with layout[0] CPUs and one worker per further entry."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": layout[0]})
    reset_ray_address()  # other Ray users on this machine must not join it
    return cluster, [cluster.add_node(num_cpus=cpus) for cpus in layout[1:]]


def read_epochs(out: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(out / "epochs")
    except Exception:  # nothing written yet, or a file appearing between listing and reading
        return None


def one_run(layout: list[int], trials: int, directory: Path, fail_after: int | None = None) -> dict:
    cluster, workers = start_cluster(layout)
    out = directory / "out"
    sets = [arg for path, value in {**OVERRIDES, "search.num_samples": trials}.items()
            for arg in ("--set", f"{path}={value}")]
    try:
        start = time.perf_counter()
        driver = subprocess.Popen(
            [sys.executable, "-m", "ticketsearch", "run", SPEC, *sets, "--out", str(out),
             "--address", cluster.address, "--storage", str(directory / "storage")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        removed_at = None
        while driver.poll() is None:
            time.sleep(0.5)
            if fail_after is None or removed_at is not None:
                continue
            epochs = read_epochs(out)
            if epochs is None or len(epochs) < fail_after:
                continue
            # a worker (the head cannot go: it holds the cluster) running a trial not yet finished
            last = epochs.groupby("trial_id").tail(1)
            busy = set(last[last["global_epoch"] < EPOCHS_PER_TRIAL]["node_id"])
            victim = next((w for w in workers if w.node_id in busy), workers[0])
            cluster.remove_node(victim)
            workers.remove(victim)
            workers.append(cluster.add_node(num_cpus=1))
            removed_at = round(time.perf_counter() - start, 1)
        wall = time.perf_counter() - start
        if driver.returncode != 0:
            raise SystemExit(f"search failed: {driver.stderr.read().decode()[-2000:]}")
    finally:
        cluster.shutdown()
    epochs = pd.read_parquet(out / "epochs")
    table = pd.read_parquet(out / "trials.parquet")
    once = not epochs.duplicated(["trial_id", "global_epoch"]).any() and all(
        list(g["global_epoch"]) == list(range(1, len(g) + 1)) for _, g in epochs.groupby("trial_id"))
    return {
        "nodes": len(layout), "cpus": sum(layout), "wall_seconds": round(wall, 1),
        "trials_per_minute": round(len(table) / wall * 60, 2),
        "statuses": table["status"].value_counts().to_dict(), "trial_epochs": len(epochs),
        "nodes_that_trained": int(epochs["node_id"].nunique()), "each_epoch_once": bool(once),
        **({"node_removed_at_s": removed_at} if fail_after is not None else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--fail-after", type=int, default=12, help="epochs recorded before a node is removed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        results = {
            "one_node": one_run([3], args.trials, root / "one"),
            "three_nodes": one_run([1, 1, 1], args.trials, root / "three"),
            "three_nodes_one_lost": one_run([1, 1, 1], args.trials, root / "lost", fail_after=args.fail_after),
        }
    results["three_over_one_trials_per_minute"] = round(
        results["three_nodes"]["trials_per_minute"] / results["one_node"]["trials_per_minute"], 3)
    results["node_loss_extra_seconds"] = round(
        results["three_nodes_one_lost"]["wall_seconds"] - results["three_nodes"]["wall_seconds"], 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
