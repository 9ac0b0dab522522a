"""The one level executor: a trial's plan of levels, trained or loaded, one record at a time.

A trainer is a plan (`plan(config) -> [Step]`: each a `LevelSpec` and the role it plays in the
trial), how each kind of level starts (`start(step) -> LevelRun`: the weights and mask it trains
from), and a summary. `LevelTrainer` does the rest for every trainer: it emits the records of each
step in order, loading a level some trial finished, else claiming it and training it epoch by epoch
(while another trial holds it, it first trains the later levels of its own plan that nobody holds, so
it waits only when it must), saves each level's progress after every epoch and its result at its end,
resumes from either, tests the levels the trial reports on, once per level, and drops weights no later
step needs. Records are stamped with the step's role, round, phase and level.

Drive a trainer with `for record in trainer` or `next_record()`; between two records `state_dict()`
captures what is needed to continue, and building the trainer with `state=` continues with the same
records as an uninterrupted run on CPU. Nothing here imports Ray.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ticketsearch.core.data import DataBundle
from ticketsearch.core.fastpath import FastPath, resolve_fastpath
from ticketsearch.records import EpochRecord
from ticketsearch.spec import TrialConfig
from ticketsearch.spec.sections import DataSection
from ticketsearch.trainers.engine import LevelRun, evaluate_test_split, load_task, snapshot, stamp
from ticketsearch.trainers.level_spec import LevelSpec, Step
from ticketsearch.trainers.levels import LevelStore


class LevelTrainer(ABC):
    """The executor; a trainer subclasses it with its plan, `start`, `test_model`, `summary` and, where it
    needs them, the hooks below."""

    def __init__(self, config: TrialConfig, plan: list[Step], data: DataBundle | None, *,
                 device: str | torch.device, levels: LevelStore | None):
        self.config = config
        self.device = torch.device(device)
        self.store = levels or LevelStore(None)
        self.plan = plan
        self._tasks: dict[DataSection, DataBundle] = {}
        if data is not None:
            self._tasks[config.data] = data.to(self.device)
        self.position = 0  # the step whose records come next
        # Records of the current step not yet emitted (a finished level's, or those an interrupted level
        # holds from before); None until the step is opened.
        self.pending: list[EpochRecord] | None = None
        self.step_emitted = 0  # records of the current step emitted so far
        self.run: LevelRun | None = None  # the level this trial is training for plan[position]
        self.results: dict[str, dict[str, Any]] = {}  # level name -> its result (weights dropped once unneeded)
        self.records: list[EpochRecord] = []
        self.status = "running"

    # ---------------------------------------------------------------- what a trainer gives
    @abstractmethod
    def start(self, step: Step) -> LevelRun:
        """A run of the step's level from the weights and mask it starts from (its parent's result, the
        initialisation, the pre-trained weights)."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """Trial-level numbers from the records and the levels' results (a row of trials.parquet)."""

    def tested(self, step: Step) -> bool:
        """Whether the trial reports the level's test-split figures (its ticket, its reference)."""
        return step.role == "ticket"

    @abstractmethod
    def test_model(self, step: Step) -> nn.Module:
        """A model of the level's shape, to load its weights into for the test split."""

    def on_epoch(self, step: Step, run: LevelRun) -> None:
        """After each epoch this trial trains (IMP keeps the weights its rounds rewind to)."""

    def progress_extras(self, step: Step) -> dict[str, Any]:
        """What the trainer keeps with a level's progress beside the run's own state."""
        return {}

    def result_extras(self, step: Step, run: LevelRun) -> dict[str, Any]:
        """What the trainer keeps with a level's result beside weights, mask, records and best."""
        return {}

    def on_record(self, step: Step, record: EpochRecord) -> EpochRecord:
        """The record as the trial emits it (IMP adds the ticket's convergence gap)."""
        return record

    # ---------------------------------------------------------------- shared pieces
    def task(self, data: DataSection) -> DataBundle:
        """The tensors of a level's task on the trial's device, loaded once."""
        if data not in self._tasks:
            self._tasks[data] = load_task(data).to(self.device)
        return self._tasks[data]

    def fastpath_of(self, level: LevelSpec) -> FastPath:
        """The arithmetic a level runs in (its precision and compile, on this device)."""
        return resolve_fastpath(level.precision, level.compile, self.device)

    # ---------------------------------------------------------------- driving
    @property
    def done(self) -> bool:
        return self.status != "running"

    def __iter__(self):
        while not self.done:
            yield self.next_record()

    def next_record(self) -> EpochRecord:
        if self.done:
            raise StopIteration
        step = self.plan[self.position]
        if self.pending is None:
            self._open(step)
        if not self.pending:
            self._train_epoch(step)
        record = self.pending.pop(0)
        record = stamp([record], round_=step.round, phase=step.phase, first_global=len(self.records) + 1,
                       reused=record.reused)[0]
        record = self.on_record(step, replace(record, level=step.level.name, role=step.role))
        self.records.append(record)
        self.step_emitted += 1
        if not self.pending and self.run is None:
            self._finish_step(step)
        return record

    @property
    def ticket_epoch(self) -> int:
        """Epochs of the trial's ticket trained so far (ASHA's clock)."""
        return sum(r.role == "ticket" for r in self.records)

    def _open(self, step: Step) -> None:
        """Emit a finished level's records, or start (or resume) training it; meanwhile, while another
        trial holds it, train the later levels nobody holds, so a waiting trial waits only when it must."""
        while True:
            result = self._result(step.level)
            if result is not None:
                self.pending = self._as_emitted(result)
                return
            if self.store.try_claim(step.level):
                break
            other = next((s for s in self.plan[self.position + 1:] if self._ready(s) and self.store.try_claim(s.level)), None)
            if other is None:
                self.store.claim(step.level)
                break
            self._train_whole(other)
        result = self._result(step.level)  # finished by whoever held it while this trial waited
        if result is not None:
            self.store.release(step.level)
            self.pending = self._as_emitted(result)
            return
        self.run = self._start(step)
        # Epochs an interrupted worker trained before this trial took the level over.
        self.pending = [replace(r, reused=True) for r in self.run.records]

    def _ready(self, step: Step) -> bool:
        return self._result(step.level) is None and all(self._result(p) is not None for p in step.level.parents)

    def _train_whole(self, step: Step) -> None:
        """Train a level this trial will need later, start to end (its records are emitted in their turn)."""
        run = self._start(step)
        while not run.done:
            run.run_epoch()
            self._after_epoch(step, run)
        self._save(step, run)

    def _train_epoch(self, step: Step) -> None:
        self.pending.append(self.run.run_epoch())
        self._after_epoch(step, self.run)
        if self.run.done:
            self._save(step, self.run)
            self.run = None

    def _after_epoch(self, step: Step, run: LevelRun) -> None:
        self.on_epoch(step, run)
        if not run.done:
            self.store.save_progress(step.level, lambda: {**run.state_dict(), **self.progress_extras(step)})

    def _save(self, step: Step, run: LevelRun) -> None:
        result = {"weights": snapshot(run.model), "mask": run.mask.state_dict(), "status": run.status,
                  "records": [r.as_dict() for r in run.records], "trained_by": self.store.token,
                  "best": run.best, "resumed_from": run.resumed_from, **self.result_extras(step, run)}
        self.store.save_result(step.level, result)
        self.store.release(step.level)
        self.results[step.level.name] = result

    def _start(self, step: Step) -> LevelRun:
        run = self.start(step)
        progress = self.store.progress(step.level)
        if progress is not None:
            run.load_state_dict(progress)
            self.resumed(step, progress)
        return run

    def resumed(self, step: Step, progress: dict[str, Any]) -> None:
        """A level's run continues from `progress` (with the trainer's `progress_extras`)."""

    # ---------------------------------------------------------------- test split
    def _tested(self, step: Step) -> dict[str, Any]:
        """The level's result with its test-split figures (last and best-validation weights), computed
        once by the first trial that reports them, and kept with the level."""
        result, settings = self._result(step.level), self.test_settings()
        if settings in result.get("tests", {}) or result["status"] != "completed":
            return result
        self.store.claim(step.level)
        try:
            stored = self.store.result(step.level) or result
            if settings not in stored.get("tests", {}):
                model, data = self.test_model(step), self.task(step.level.data)
                model.load_state_dict(stored["weights"])
                test = evaluate_test_split(model, data, self.config)
                best = stored["best"]
                if best is not None and test:
                    last = stored["records"][-1]["epoch"]
                    if best["epoch"] == last:  # the same weights: the same figures (the test is seeded)
                        again = {f"best_{k}": v for k, v in test.items()}
                    else:
                        model.load_state_dict(best["weights"])
                        again = evaluate_test_split(model, data, self.config, "best_test_")
                    test.update({"best_epoch": float(best["epoch"]), **again})
                stored = {**stored, "tests": {**stored.get("tests", {}), settings: test}}
                self.store.save_result(step.level, stored)
        finally:
            self.store.release(step.level)
        self.results[step.level.name] = stored
        return stored

    def test_settings(self) -> str:
        """Names what a test evaluation reads, so a level tested one way is not reported for another."""
        c = self.config
        return json.dumps({"test_eval": c.trainer.test_eval, "examples": c.train.test_examples,
                           "autoattack": c.attack.test_autoattack, "eval": c.attack.eval.model_dump(mode="json"),
                           "batch": c.train.eval_batch_size,
                           **({"certify": c.certify.model_dump(mode="json")} if c.certify else {})}, sort_keys=True)

    def test_of(self, level: LevelSpec) -> dict[str, float]:
        """The level's test-split figures, once tested ({} before)."""
        result = self._result(level)
        return {} if result is None else result.get("tests", {}).get(self.test_settings(), {})

    # ---------------------------------------------------------------- levels
    def _finish_step(self, step: Step) -> None:
        self.pending, self.run, self.step_emitted = None, None, 0
        if self.tested(step):
            self._tested(step)
        result = self.results[step.level.name]
        self.position += 1
        if result["status"] == "diverged":
            self.status = "diverged"
        elif self.position >= len(self.plan):
            self.status = "completed"
        self._drop_unneeded_weights()

    def _result(self, level: LevelSpec) -> dict[str, Any] | None:
        if level.name not in self.results:
            result = self.store.result(level)
            if result is None:
                return None
            self.results[level.name] = result
        return self.results[level.name]

    def _as_emitted(self, result: dict[str, Any]) -> list[EpochRecord]:
        reused = result["trained_by"] != self.store.token
        return [EpochRecord.from_dict({**r, "reused": reused}) for r in result["records"]]

    def kept_weights(self) -> set[str]:
        """Levels whose weights the trainer keeps after every step that starts from them has run."""
        return {self.plan[-1].level.name}

    def _drop_unneeded_weights(self) -> None:
        """Keep weights only of the levels a later step starts from (trial states stay small)."""
        needed = {p.name for s in self.plan[self.position:] for p in s.level.parents} | self.kept_weights()
        for name, result in self.results.items():
            if name not in needed and "weights" in result:
                self.results[name] = {k: v for k, v in result.items() if k not in ("weights", "best")}

    def records_of(self, level: LevelSpec) -> list[EpochRecord]:
        """The records of a level of the plan, in order (whatever role it plays)."""
        return [r for r in self.records if r.level == level.name]

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue from this epoch boundary; loads with weights_only=True."""
        return {
            "config_hash": self.config.content_hash(),
            "position": {"position": self.position, "status": self.status, "opened": self.pending is not None,
                         "step_emitted": self.step_emitted},
            "run": None if self.run is None else {**self.run.state_dict(), **self.progress_extras(self.plan[self.position])},
            "results": self.results,
            "records": [r.as_dict() for r in self.records],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.results = dict(state["results"])
        position = state["position"]
        self.position, self.status = position["position"], position["status"]
        self.records = [EpochRecord.from_dict(r) for r in state["records"]]
        if self.done:
            return
        step, self.step_emitted = self.plan[self.position], position["step_emitted"]
        if state["run"] is not None:
            self.store.claim(step.level)
            result = self._result(step.level)
            if result is not None:  # another trial finished the level after this one stopped
                self.store.release(step.level)
                self.pending = self._as_emitted(result)[self.step_emitted:]
                return
            self.run = self._start(step)
            progress = self.store.progress(step.level)
            # The level's own progress (saved by whoever trained it last) or this trial's, whichever is later.
            if progress is None or progress["epoch"] < state["run"]["epoch"]:
                self.run.load_state_dict(state["run"])
                self.resumed(step, state["run"])
            self.pending = list(self.run.records[self.step_emitted:])
        elif position["opened"]:
            self.pending = self._as_emitted(self.results[step.level.name])[self.step_emitted:]
