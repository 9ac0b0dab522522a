"""Shared levels against independent trials: one grid search run twice in one process.

The grid: 2 learning rates x 4 pruning ratios x 2 widths at a fixed `prune.find_lr`, FIFO, on the
digits (offline), FGSM finding and PGD training as the boosting-ticket specs do. With
`search.share_levels: true` the search trains one dense round per width, one dense reference per
(width, learning rate) and a ticket per trial; with `false` every trial trains its whole path.
Prints the trial-epochs each run trained itself, its wall time, and its best trial's configuration.
Targets (issue 13): sharing at most 50% of the epochs and 70% of the wall time, same best config.

    python3 -m uv run python benchmarks/shared_levels.py [--epochs 4] [--concurrent 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from ticketsearch.search.driver import run_search
from ticketsearch.spec import load_spec

SPEC = {
    "name": "shared-levels-bench",
    "data": {"dataset": "digits", "val_split": 200},
    "model": {"arch": "small_cnn", "width": {"grid": [0.5, 1.0]}},
    "train": {"batch_size": 64, "lr": {"grid": [0.05, 0.1]}, "eval_examples": 200, "schedule": "cosine"},
    "attack": {"train": {"pgd": {"eps": 0.1, "alpha": 0.04, "steps": 3}},
               "eval": {"pgd": {"eps": 0.1, "alpha": 0.03, "steps": 5}}, "test_autoattack": False},
    "prune": {"ratio": {"grid": [0.3, 0.5, 0.7, 0.9]}, "rounds": 1, "find_with": {"fgsm": {"eps": 0.1}},
              "find_lr": 0.05, "exclude": ["first_conv", "classifier"]},
    "objective": {"metric": "best_val_robust_acc"},
    "search": {"algorithm": "grid", "num_samples": 1, "scheduler": "fifo", "keep_tickets": 0},
    "resources": {"cpu": 1},
}


def one_search(directory: Path, share: bool, epochs: int, concurrent: int) -> dict:
    spec_path = directory / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    spec = load_spec(spec_path, {"train.epochs": epochs, "search.share_levels": share,
                                 "search.max_concurrent": concurrent})
    out = directory / ("shared" if share else "independent")
    start = time.perf_counter()
    run_search(spec, out=out, verbose=0, echo=lambda line: None)
    wall = time.perf_counter() - start
    trials = pd.read_parquet(out / "trials.parquet")
    best = trials.loc[trials["objective"].idxmax()]
    return {
        "trials": len(trials), "statuses": trials["status"].value_counts().to_dict(),
        "trained_epochs": int(trials["trained_epochs"].sum()),
        "path_epochs": int(trials["epochs_trained"].sum()),
        "wall_seconds": round(wall, 1),
        "best": {p: float(best[f"config.{p}"]) for p in ("train.lr", "prune.ratio", "model.width")},
        "best_objective": round(float(best["objective"]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--concurrent", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        independent = one_search(Path(directory), False, args.epochs, args.concurrent)
        shared = one_search(Path(directory), True, args.epochs, args.concurrent)
    print(json.dumps({"independent": independent, "shared": shared,
                      "epochs_ratio": round(shared["trained_epochs"] / independent["trained_epochs"], 3),
                      "wall_ratio": round(shared["wall_seconds"] / independent["wall_seconds"], 3),
                      "same_best": shared["best"] == independent["best"]}, indent=2))


if __name__ == "__main__":
    main()
