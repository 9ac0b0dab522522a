"""Stops a search whose trials keep failing with the same error, rather than failing every config.

An error that every config shares (a bug, a node without the data, a size no trial can meet) would
otherwise fail each remaining trial in turn, each after `search.max_failures` retries. The stopper
counts trials that end in error with the same last line of error, in a row; a trial that completes
(or is stopped early by the scheduler: it trained) breaks the run. At `limit` Tune stops the whole
experiment and `reason` says why. It is a Tune `Stopper` (Tune asks `stop_all` every step) and a
`Callback` (Tune tells it of errors) at once, so one object holds the count.
"""

from __future__ import annotations

from ray.tune import Callback
from ray.tune.stopper import Stopper

# The last line of a failed trial's error, the same text as trials.parquet's `error` column.
from ticketsearch.search.results_callback import _error_message as last_error_line


class RepeatedErrorStopper(Stopper, Callback):
    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: never stop
        self.error = ""
        self.count = 0
        self.reason = ""  # set when the search was stopped

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False  # single trials are stopped by the scheduler, not here

    def stop_all(self) -> bool:
        return bool(self.reason)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        error = last_error_line(trial)
        self.count = self.count + 1 if error == self.error else 1
        self.error = error
        if self.limit and self.count >= self.limit and not self.reason:
            self.reason = (f"stopped after {self.count} trials in a row failed with the same error "
                           f"(search.stop_after_same_errors {self.limit}): {error}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.error, self.count = "", 0

