"""ASHA against FIFO on the same sampled configs, and the share of wall time spent in epochs.

For each search seed, runs `searches/quickstart.yaml` twice in one process on the embedded Ray, with
`search.algorithm=random` and that seed for both (Optuna's TPE adapts to results, so it would sample
differently under the two schedulers), once with ASHA and once with FIFO. Prints, per seed and pooled
over seeds, the total trial-epochs each spent, the best final validation robust accuracy of a finished
ticket found by each, and the share of (wall time x concurrent trials) spent inside trial epochs
(training, and training plus the per-epoch evaluation). Several seeds because ASHA's saving depends on
the order the configs arrive in: its first trials at a rung pass with nothing to compare against.
ASHA's clock is the ticket's epochs (the dense round, finding rounds and reference are shared levels,
trained once per width whichever scheduler runs), so the comparison counts ticket epochs. Targets
(issue 14): ASHA at most 40% of FIFO's ticket epochs, with the same best ticket as FIFO at each seed
(the config of the best completed ticket by the spec's objective).

    python3 -m uv run python benchmarks/asha_vs_fifo.py [--spec searches/quickstart.yaml] [--seeds 0,1,2]
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
    concurrency = spec.default_trial.search.max_concurrent
    completed = trials[trials["status"] == "completed"]
    tickets = epochs[(epochs["phase"] == "ticket") & epochs["trial_id"].isin(completed["trial_id"])]
    tickets = tickets.sort_values("epoch").groupby("trial_id").tail(1)
    # A level another trial trained is reported by every trial that uses it, with its seconds: count
    # each epoch where it was trained.
    trained = epochs[~epochs["reused"].astype(bool)]
    mode = spec.default_trial.objective.mode
    best = completed.sort_values("objective", ascending=mode == "min").iloc[0] if len(completed) else None
    return {
        "trials": len(trials),
        "statuses": trials["status"].value_counts().to_dict(),
        "trial_epochs": int(len(epochs)),
        "ticket_epochs": int((epochs["phase"] == "ticket").sum()),
        "trained_epochs": int(trials["trained_epochs"].sum()),
        "best_ticket": None if best is None else {p: round(float(best[f"config.{p}"]), 6) for p in spec.space},
        "best_final_ticket_val_robust_acc": float(tickets["val_robust_acc"].max()) if len(tickets) else None,
        "configs": sorted(map(tuple, trials[[c for c in trials.columns if c.startswith("config.") and
                                            c[7:] in spec.space]].round(6).values.tolist())),
        "wall_seconds": round(wall, 1),
        "share_in_training": round(trained["epoch_seconds"].sum() / (wall * concurrency), 3),
        "share_in_epochs_with_eval": round((trained["epoch_seconds"] + trained["eval_seconds"]).sum() / (wall * concurrency), 3),
    }


def compare(spec_path: str, asha: dict, seed: int, directory: Path) -> dict:
    extra = {"search.seed": seed}
    results = {
        "asha": one_search(spec_path, {"asha": asha}, directory / f"asha-{seed}", extra),
        "fifo": one_search(spec_path, "fifo", directory / f"fifo-{seed}", extra),
    }
    same_configs = results["asha"].pop("configs") == results["fifo"].pop("configs")
    a, f = results["asha"], results["fifo"]
    return {
        **results,
        "same_sampled_configs": same_configs,
        "asha_ticket_epochs_over_fifo": round(a["ticket_epochs"] / f["ticket_epochs"], 3),
        "same_best_ticket": a["best_ticket"] == f["best_ticket"],
        "best_gap_points": round(100 * (f["best_final_ticket_val_robust_acc"] - a["best_final_ticket_val_robust_acc"]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="searches/quickstart.yaml")
    parser.add_argument("--seeds", default="0,1,2", help="search seeds, comma-separated")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    asha = spec.default_trial.search.scheduler
    if asha.kind != "asha":
        raise SystemExit(f"{args.spec}: search.scheduler must be asha for this comparison")
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as directory:
        per_seed = {seed: compare(args.spec, asha.model_dump(exclude={"kind"}), seed, Path(directory)) for seed in seeds}
    pooled = {
        "asha_ticket_epochs_over_fifo": round(sum(r["asha"]["ticket_epochs"] for r in per_seed.values())
                                              / sum(r["fifo"]["ticket_epochs"] for r in per_seed.values()), 3),
        "same_best_ticket_every_seed": all(r["same_best_ticket"] for r in per_seed.values()),
        "worst_best_gap_points": max(r["best_gap_points"] for r in per_seed.values()),
        "same_sampled_configs": all(r["same_sampled_configs"] for r in per_seed.values()),
    }
    for scheduler in ("asha", "fifo"):
        slot_seconds = sum(r[scheduler]["wall_seconds"] * spec.default_trial.search.max_concurrent
                           for r in per_seed.values())
        for share in ("share_in_training", "share_in_epochs_with_eval"):
            inside = sum(r[scheduler][share] * r[scheduler]["wall_seconds"] * spec.default_trial.search.max_concurrent
                         for r in per_seed.values())
            pooled[f"{scheduler}_{share}"] = round(inside / slot_seconds, 3)
    print(json.dumps({"per_seed": per_seed, "pooled": pooled}, indent=2))


if __name__ == "__main__":
    main()
