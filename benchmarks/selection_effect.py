"""The selection effect of a search's pick, measured: the quick start over several search seeds, each
confirmed configuration's speed-ups on fresh seeds and fresh validation images beside the search's own
figure for it.

Runs `ticketsearch run searches/quickstart.yaml` with `search.seed` and `train.seed` set to each of
--seeds (or reads the output directories of earlier runs with --runs), then prints, per confirmed
configuration, its searched values, how many of its fresh seeds reached each target, and for each
speed-up in epochs to the target (finding excluded) against the reference (lr 0.05), against dense
at the ticket's own lr (matched) and against the best of dense at 0.05, 0.1 and 0.2: the search's own
figure (the maximum over its trials, measured on the images and the seed that ranked them) and the
confirmed mean with its 95% t interval over the seeds that reached that target
(results/confirmation.py). The last lines give the mean of search minus confirmed over the rows where
both exist: the winner's-curse inflation of the search's own figure.

    python3 -m uv run python benchmarks/selection_effect.py --seeds 0 1 2
    python3 -m uv run python benchmarks/selection_effect.py --runs /tmp/qs0 /tmp/qs1 /tmp/qs2
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from ticketsearch import layout
from ticketsearch.results.confirmation import confirmation_table

SPEC = "searches/quickstart.yaml"
COMPARISONS = (("epoch_speedup", "reference"), ("epoch_speedup_matched", "matched"),
               ("epoch_speedup_best_dense", "best dense"))
SEARCHED = ("train.lr", "prune.ratio", "model.width")


def run(seed: int, out: Path) -> float:
    """Run the quick start at `seed`; its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ticketsearch", "run", SPEC, "--out", str(out),
                    "--set", f"search.seed={seed}", "--set", f"train.seed={seed}"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def cell(row: pd.Series, column: str) -> str:
    mean, low, high = row[f"{column}_mean"], row[f"{column}_low"], row[f"{column}_high"]
    if math.isnan(mean):
        return "not reached"
    return f"{mean:.2f}x" + (f" [{low:.2f}, {high:.2f}]" if not math.isnan(low) else " (1 seed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, nargs="+", help="read these output directories instead of running")
    parser.add_argument("--out", type=Path, default=Path("runs/selection-effect"))
    args = parser.parse_args()
    runs = args.runs or [args.out / f"seed{seed}" for seed in args.seeds]
    if not args.runs:
        for seed, out in zip(args.seeds, runs):
            print(f"search seed {seed}: {run(seed, out):.0f} s wall", flush=True)
    print("| search seed | configuration (lr, ratio, width) | seeds reached | "
          + " | ".join(f"vs {name}: search / confirmed" for _, name in COMPARISONS) + " |")
    print("|---|---|---|" + "---|" * len(COMPARISONS))
    gaps: dict[str, list[float]] = {column: [] for column, _ in COMPARISONS}
    for out in runs:
        trials = pd.read_parquet(layout.trials_table(out))
        table = confirmation_table(trials)
        by_id = trials.set_index("trial_id")
        for _, row in table.iterrows():
            values = ", ".join(f"{by_id.at[row['confirms'], f'config.{path}']:.3g}" for path in SEARCHED)
            confirms = trials[(trials["stage"] == "confirm") & (trials["confirms"] == row["confirms"])]
            reached = "/".join(str(int(confirms[column].notna().sum())) for column, _ in COMPARISONS)
            cells = []
            for column, _ in COMPARISONS:
                search = row[f"{column}_search"]
                cells.append(f"{'not reached' if math.isnan(search) else f'{search:.2f}x'} / {cell(row, column)}")
                if not math.isnan(search) and not math.isnan(row[f"{column}_mean"]):
                    gaps[column].append(search - row[f"{column}_mean"])
            print(f"| {out.name} | `{row['confirms']}` ({values}) | {reached} of {row['seeds']} | " + " | ".join(cells) + " |")
    for column, name in COMPARISONS:
        if gaps[column]:
            print(f"vs {name}: search minus confirmed, mean over {len(gaps[column])} configurations: "
                  f"{sum(gaps[column]) / len(gaps[column]):+.2f}x")


if __name__ == "__main__":
    main()
