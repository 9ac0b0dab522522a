"""Replays Ray's ASHA on the curves of finished FIFO searches, to choose rungs without re-running.

Under FIFO every trial trains every ticket epoch, so its `ray/tune/<trial>/result.json` holds each
value ASHA would have judged, and the time each epoch took. This script feeds those results, in the
order trials were created, to Ray's own `AsyncHyperBandScheduler` on a simulated clock with
`--concurrency` slots: a trial starts when a slot frees, reports each ticket epoch after the seconds
it took in the FIFO run (times a random factor, `--jitter`, since which trial reaches a rung first
depends on timing), and leaves its slot when ASHA stops it or after its last epoch plus
`--finish-seconds` (the test-split evaluation of a finished ticket; AutoAttack on 50 images is about
15 s). Trained levels are shared, so a trial's seconds before its first ticket epoch (the dense round
and reference, for the first trial of each width) are taken from the FIFO run as they are.

For each search, ladder (`grace/factor`) and number of trials (the first n the search created:
Tune's random search draws configs in sequence, so the first n of a larger search are the n-trial
search), it prints the share of FIFO's ticket epochs ASHA trained (mean and range over `--repeats`
jittered clocks) and how often ASHA completed FIFO's best ticket (the best finished trial by the
objective). It is a model of one real run, not the run: check the chosen ladder with
`benchmarks/asha_vs_fifo.py`.

    python3 -m uv run python benchmarks/asha_replay.py OUT [OUT ...] [--ladders 2/3,2/4,1/4] [--trials 16,24,32]
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from ticketsearch.records import TICKET_EPOCH


def load_trials(out: Path) -> list[dict]:
    """Each trial of a FIFO search, in creation order: seconds before its first ticket epoch, the
    seconds and objective of each ticket epoch, as its result.json recorded them."""
    trials = []
    for result_json in sorted(out.glob("ray/*/*/result.json"), key=lambda p: int(p.parent.name.rsplit("_", 1)[1])):
        rows: dict[int, dict] = {}
        for line in result_json.read_text().splitlines():
            row = json.loads(line)
            rows[row["training_iteration"]] = row  # a restored trial reports again: keep the last
        rows = [rows[i] for i in sorted(rows)]
        ticket = [r for r in rows if r.get(TICKET_EPOCH, 0) >= 1]
        if not ticket:
            continue
        first = rows.index(ticket[0])
        before = rows[first - 1]["time_total_s"] if first else 0.0
        seconds = np.diff([before] + [r["time_total_s"] for r in ticket])
        trials.append({"trial_id": result_json.parent.name, "pre_seconds": before,
                       "epoch_seconds": seconds.tolist(), "objective": [r["objective"] for r in ticket]})
    return trials


def replay(trials: list[dict], grace: int, factor: float, mode: str, concurrency: int,
           finish_seconds: float, start_seconds: float, jitter: float, rng: np.random.Generator) -> dict:
    """One ASHA search on a simulated clock: the ticket epochs it trained and the trials it completed."""
    max_t = max(len(t["objective"]) for t in trials)
    scheduler = AsyncHyperBandScheduler(time_attr=TICKET_EPOCH, metric="objective", mode=mode,
                                        grace_period=grace, reduction_factor=factor, max_t=max_t)
    events: list[tuple[float, int, int]] = []  # (time, trial index, ticket epoch reported then)
    waiting = list(range(len(trials)))
    trained = [0] * len(trials)
    completed: list[int] = []

    def scale() -> float:
        return float(np.exp(rng.normal(0.0, jitter))) if jitter else 1.0

    def start(now: float) -> None:
        index = waiting.pop(0)
        scheduler.on_trial_add(None, SimpleNamespace(trial_id=index))
        first = now + (start_seconds + trials[index]["pre_seconds"] + trials[index]["epoch_seconds"][0]) * scale()
        heapq.heappush(events, (first, index, 1))

    for _ in range(min(concurrency, len(waiting))):
        start(0.0)
    while events:
        now, index, epoch = heapq.heappop(events)
        trained[index] = epoch
        value = trials[index]["objective"][epoch - 1]
        action = scheduler.on_trial_result(None, SimpleNamespace(trial_id=index), {TICKET_EPOCH: epoch, "objective": value})
        if epoch == len(trials[index]["objective"]):
            completed.append(index)
            free_at = now + finish_seconds * scale()
        elif action == TrialScheduler.STOP:
            free_at = now
        else:
            heapq.heappush(events, (now + trials[index]["epoch_seconds"][epoch] * scale(), index, epoch + 1))
            continue
        if waiting:
            start(free_at)
    return {"ticket_epochs": sum(trained), "completed": completed}


def best_trial(trials: list[dict], indices: list[int], mode: str) -> int:
    finals = {i: trials[i]["objective"][-1] for i in indices}
    return (max if mode == "max" else min)(finals, key=finals.get)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", nargs="+", type=Path,
                        help="output folders of finished FIFO searches (run with the default storage, <out>/ray)")
    parser.add_argument("--ladders", default="2/3,2/4,1/3,1/4", help="grace/reduction-factor pairs, comma-separated")
    parser.add_argument("--trials", default="16", help="numbers of trials (the first n of each search), comma-separated")
    parser.add_argument("--mode", default="max", choices=["max", "min"], help="the objective's mode")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--finish-seconds", type=float, default=15.0, help="a finished ticket's test evaluation, s")
    parser.add_argument("--start-seconds", type=float, default=1.0, help="Tune starting a trial on a reused actor, s")
    parser.add_argument("--jitter", type=float, default=0.2, help="sd of the log of each duration's random factor")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    ladders = [tuple(float(x) for x in ladder.split("/")) for ladder in args.ladders.split(",")]
    rows = []
    for out in args.outs:
        everything = load_trials(out)
        if not everything:
            raise SystemExit(f"{out}: no trial results under {out / 'ray'}; pass the --out of a finished FIFO search")
        for n in (int(n) for n in args.trials.split(",")):
            trials = everything[:n]
            if len(trials) < n:
                raise SystemExit(f"{out}: {len(trials)} trials reached a ticket epoch, fewer than {n}")
            fifo_epochs = sum(len(t["objective"]) for t in trials)
            best = best_trial(trials, list(range(n)), args.mode)
            for grace, factor in ladders:
                rng = np.random.default_rng(0)
                runs = [replay(trials, int(grace), factor, args.mode, args.concurrency, args.finish_seconds,
                               args.start_seconds, args.jitter, rng) for _ in range(args.repeats)]
                shares = [r["ticket_epochs"] / fifo_epochs for r in runs]
                rows.append({"search": out.name, "trials": n, "ladder": f"{int(grace)}/{factor:g}",
                             "share_mean": round(float(np.mean(shares)), 3), "share_min": round(min(shares), 3),
                             "share_max": round(max(shares), 3),
                             "best_kept": round(sum(best in r["completed"] for r in runs) / len(runs), 2)})
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
