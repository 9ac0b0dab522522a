"""Deleting a trial's old checkpoints without racing Tune's experiment snapshots.

Tune's own `CheckpointConfig(num_to_keep=N)` deletes a trial's older checkpoints as soon as a new one
arrives, but it writes which checkpoint is a trial's latest only into snapshots of the experiment,
taken every 10 s or more. A driver killed in between leaves a snapshot that names a deleted
checkpoint, and `--resume` then loses that trial ("Could not recover from checkpoint as it does not
exist on storage anymore"; Ray issue #27790). With epochs of a few seconds that is a likely outcome
of a crash.

So Tune keeps every checkpoint, and this driver callback deletes them instead: checkpoint j goes only
when `keep` newer ones exist and the one after it was saved at least `SNAPSHOT_LAG_S` ago. Any
snapshot taken since then names checkpoint j+1 or a newer one, so no snapshot young enough to be the
last one can name a deleted checkpoint. When the experiment ends, Tune has written its final
snapshot, and each trial is cut to its newest `keep` checkpoints.

Limit: checkpoints saved before a `--resume` are not seen by this callback (it starts empty), so the
up to SNAPSHOT_LAG_S of checkpoints a killed driver left behind stay on storage.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ray import tune

logger = logging.getLogger(__name__)

# Seconds. Tune snapshots at least every max(10 s, 19 x the time one snapshot takes), so the guarantee
# holds while a snapshot takes under 15 s; slower snapshots (huge experiments on slow object stores)
# would need a longer lag, at the cost of the disk of the checkpoints it keeps.
SNAPSHOT_LAG_S = 300.0


class CheckpointRetention(tune.Callback):
    def __init__(self, keep: int, lag_s: float = SNAPSHOT_LAG_S, clock: Callable[[], float] = time.monotonic):
        self.keep, self.lag_s, self.clock = keep, lag_s, clock
        # trial id -> [(when it was saved, by `clock`; the checkpoint)], oldest first
        self.saved: dict[str, list[tuple[float, tune.Checkpoint]]] = {}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.saved.setdefault(trial.trial_id, []).append((self.clock(), checkpoint))
        self._delete_old(lagged=True)

    def on_step_end(self, iteration, trials, **info):
        self._delete_old(lagged=True)  # trials that stopped saving still shed their old checkpoints

    def on_experiment_end(self, trials, **info):
        self._delete_old(lagged=False)

    def _delete_old(self, lagged: bool) -> None:
        now = self.clock()
        for saved in self.saved.values():
            while len(saved) > self.keep and (not lagged or now - saved[1][0] >= self.lag_s):
                _, checkpoint = saved.pop(0)
                try:
                    checkpoint.filesystem.delete_dir(checkpoint.path)
                except OSError as error:  # already gone, or storage unreachable for a moment: keep going
                    logger.warning("could not delete checkpoint %s: %s", checkpoint.path, error)
