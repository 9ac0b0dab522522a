"""Learning rate as a pure function of the optimiser step within a round.

A pure function (no scheduler object) makes resuming trivial: the step counter is the whole state.
"""

from __future__ import annotations

import bisect
import math

from ticketsearch.spec.sections import Schedule


def lr_at(step: int, *, steps_per_epoch: int, epochs: int, base_lr: float, schedule: Schedule) -> float:
    """lr for optimiser step `step` (0-based) of a round of `epochs` epochs."""
    # Progress in epochs at the end of this step, so the first step of a warm-up has a non-zero lr
    # and a cosine or cyclic schedule reaches zero exactly at the last step.
    t = (step + 1) / steps_per_epoch
    if schedule.kind == "constant":
        return base_lr
    if schedule.kind == "step":
        return base_lr * schedule.gamma ** bisect.bisect_right(sorted(schedule.milestones), t - 1e-9)
    if schedule.kind == "cyclic":
        peak = schedule.peak * epochs
        return base_lr * (t / peak if t <= peak else max(0.0, (epochs - t) / (epochs - peak)))
    warmup = min(schedule.warmup_epochs, epochs)
    if t <= warmup:
        return base_lr * t / warmup
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warmup) / max(epochs - warmup, 1e-9))))
