"""ASHA against FIFO on the same sampled configs, and the share of wall time spent in epochs.

Runs `searches/quickstart.yaml` twice in one process on the embedded Ray, with
`search.algorithm=random` and the same search seed for both (Optuna's TPE adapts to results, so it
would sample differently under the two schedulers), once with ASHA and once with FIFO. Prints the total
trial-epochs each spent, the best final validation robust accuracy of a finished ticket found by
each, and, for the ASHA run, the share of (wall time x concurrent trials) spent inside trial epochs
(training, and training plus the per-epoch evaluation). Targets (issue 3): ASHA at most 40% of FIFO's
trial-epochs with its best within 2 points of FIFO's; at least 80% of wall time inside epochs with 2
concurrent trials on 2 CPUs.

    python3 -m uv run python benchmarks/asha_vs_fifo.py [--spec searches/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from ticketsearch.search.driver import run_search
from ticketsearch.spec import load_spec


def one_search(spec_path: str, scheduler: dict, out: Path, extra: dict) -> dict:
    spec = load_spec(spec_path, {"search.algorithm": "random", "search.scheduler": scheduler, **extra})
    start = time.perf_counter()
    run_search(spec, out=out, verbose=0, echo=lambda line: None)
    wall = time.perf_counter() - start
    epochs = pd.read_parquet(out / "epochs")
    trials = pd.read_parquet(out / "trials.parquet")
    tickets = epochs[epochs["phase"] == "ticket"].groupby("trial_id").tail(1)
    concurrency = spec.default_trial.search.max_concurrent
    return {
        "trials": len(trials),
        "statuses": trials["status"].value_counts().to_dict(),
        "trial_epochs": int(len(epochs)),
        "best_final_ticket_val_robust_acc": float(tickets["val_robust_acc"].max()) if len(tickets) else None,
        "configs": sorted(map(tuple, trials[[c for c in trials.columns if c.startswith("config.") and
                                            c[7:] in spec.space]].round(6).values.tolist())),
        "wall_seconds": round(wall, 1),
        "share_in_training": round(epochs["epoch_seconds"].sum() / (wall * concurrency), 3),
        "share_in_epochs_with_eval": round((epochs["epoch_seconds"] + epochs["eval_seconds"]).sum() / (wall * concurrency), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="searches/quickstart.yaml")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    asha = spec.default_trial.search.scheduler
    if asha.kind != "asha":
        raise SystemExit(f"{args.spec}: search.scheduler must be asha for this comparison")
    with tempfile.TemporaryDirectory() as directory:
        results = {
            "asha": one_search(args.spec, {"asha": asha.model_dump(exclude={"kind"})}, Path(directory) / "asha", {}),
            "fifo": one_search(args.spec, "fifo", Path(directory) / "fifo", {}),
        }
    same_configs = results["asha"].pop("configs") == results["fifo"].pop("configs")
    a, f = results["asha"], results["fifo"]
    print(json.dumps({
        **results,
        "same_sampled_configs": same_configs,
        "asha_epochs_over_fifo": round(a["trial_epochs"] / f["trial_epochs"], 3),
        "best_gap_points": round(100 * (f["best_final_ticket_val_robust_acc"] - a["best_final_ticket_val_robust_acc"]), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
