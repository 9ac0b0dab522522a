"""Adversarial iterative magnitude pruning as a plan of levels (trainers/levels.py).

Round 0 trains the dense network; each later round prunes `prune.ratio` of the surviving weights by
magnitude, rewinds the survivors (to the initialisation, or to epoch k of round 0, continuing the
schedule from there) and trains the ticket. Rounds 0..R-1 train under the ticket-finding regime
(`prune.find_with`), round R under `attack.train`: the boosting-ticket cost trick (Li et al. 2020)
finds the mask with cheap FGSM and trains the ticket with PGD. The controls (`prune.control`) change
the final ticket only: `reinit` gives the IMP mask a fresh initialisation, `random_mask` draws a
random mask with the IMP mask's per-layer counts. The dense reference ("baseline") trains the dense
network under `attack.train` from the same initialisation when that is not the dense round itself.

Each round and the reference are levels, named by what they read, so trials that share a round (a
pruning-ratio sweep shares round 0; a `prune.rounds` sweep shares its IMP path; every trial shares
the reference) train it once (`IMPTrainer` runs them through `trainers/engine.py`). The trainer
never imports Ray. Drive it with `for record in trainer` or `next_record()`; between two records
`state_dict()` captures what is needed to continue, and `IMPTrainer(config, data, state=...)`
continues with the same records as an uninterrupted run on CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from ticketsearch.core.data import DataBundle
from ticketsearch.core.fastpath import resolve_fastpath
from ticketsearch.core.models import create_model
from ticketsearch.core.pruning import Mask, magnitude_prune, prunable_weights, random_mask_like
from ticketsearch.errors import UserError
from ticketsearch.spec import TrialConfig
from ticketsearch.trainers.engine import load_task
from ticketsearch.trainers.engine import LevelRun, Recipe, evaluate_test_split, evaluation_key, snapshot, stamp
from ticketsearch.trainers.levels import Level, LevelStore
from ticketsearch.records import (NAN, EpochRecord, best_dense, collapsed, convergence, convergence_gap,
                                  path_summary)


@dataclass(frozen=True)
class Step:
    """One level as it appears in a trial: its round and phase, and how it trains."""

    level: Level
    round: int
    phase: str  # dense | find | ticket | baseline
    recipe: Recipe


def plan_levels(config: TrialConfig) -> list[Step]:
    """The trial's levels in order: dense round, finding rounds, the dense reference, the ticket.

    The reference comes before the ticket so that every epoch of the ticket is measured against it
    (`convergence_gap`); it is left out when the dense round is the reference (same level), or when
    `trainer.dense_baseline` is false.
    """
    prune, train = config.prune, config.train
    base = evaluation_key(config)  # what the pruned rounds read besides their recipe and pruning
    pruning = {"ratio": prune.ratio, "scope": prune.scope, "exclude": list(prune.exclude),
               "allow_empty_layers": prune.allow_empty_layers}

    def dense(recipe: Recipe, rewind: int) -> Level:
        return dense_level(config, recipe, rewind)

    if prune.rounds == 0:
        recipe = Recipe.of(config, config.attack.train, train.epochs, train.lr)
        return [Step(dense(recipe, 0), 0, "dense", recipe)]
    find_lr = prune.find_lr or train.lr
    find = Recipe.of(config, config.find_regime, config.find_epochs, find_lr)
    steps = [Step(dense(find, prune.rewind), 0, "dense", find)]
    rewound = Recipe.of(config, config.find_regime, config.find_epochs, find_lr, first_epoch=prune.rewind)
    # Finding rounds and the ticket's are one kind of level: when the ticket trains like a finding round
    # (same regime, lr and epochs, no control), an R-round ticket is round R of every deeper path.
    for round_ in range(1, prune.rounds):
        level = Level("round", {**base, "recipe": rewound.key(), "prune": pruning}, (steps[-1].level,))
        steps.append(Step(level, round_, "find", rewound))
    found = steps[-1].level
    planned = {s.level.digest for s in steps}
    # The dense networks tickets are compared with (one step per distinct level: the reference, the
    # dense network at the ticket's lr and those of reference.best_of are often the same level).
    for phase, recipe in comparison_recipes(config):
        level = dense(recipe, 0)
        if level.digest not in planned:
            planned.add(level.digest)
            steps.append(Step(level, 0, phase, recipe))
    ticket = Recipe.of(config, config.attack.train, train.epochs, train.lr, first_epoch=prune.rewind)
    control = {} if prune.control == "none" else {"control": prune.control}
    steps.append(Step(Level("round", {**base, "recipe": ticket.key(), "prune": pruning, **control}, (found,)),
                      prune.rounds, "ticket", ticket))
    return steps


def dense_level(config: TrialConfig, recipe: Recipe, rewind: int = 0) -> Level:
    """A dense network's level: trained by `recipe` from the initialisation (keeping its weights at
    epoch `rewind` for the tickets rewound there)."""
    return Level("dense", {**evaluation_key(config), "recipe": recipe.key(), "rewind": rewind})


def reference_recipe(config: TrialConfig, lr: float | None = None) -> Recipe:
    """The dense reference: attack.train from the initialisation, at `reference` settings over `train`'s
    (at `lr`, for one of reference.best_of)."""
    ref, train = config.reference, config.train
    return Recipe.of(config, config.attack.train, ref.epochs or train.epochs, lr or ref.lr or train.lr,
                     schedule=ref.schedule)


def matched_recipe(config: TrialConfig) -> Recipe:
    """Dense training exactly as the ticket trains (its lr, schedule and epochs), from the initialisation."""
    return Recipe.of(config, config.attack.train, config.train.epochs, config.train.lr)


def comparison_recipes(config: TrialConfig) -> list[tuple[str, Recipe]]:
    """(phase, recipe) of every dense network the ticket is compared with, as the spec asks."""
    ref = config.reference
    out = [("baseline", reference_recipe(config))] if config.trainer.dense_baseline else []
    if ref.matched:
        out.append(("matched", matched_recipe(config)))
    out += [("best_of", reference_recipe(config, lr)) for lr in ref.best_of or ()]
    return out


def planned_epochs(config: TrialConfig) -> int:
    return sum(step.recipe.epochs - step.recipe.first_epoch for step in plan_levels(config))


def find_level(config: TrialConfig) -> str:
    """The level the ticket is pruned from (its finding path's last round): trials sharing it share its cost."""
    return plan_levels(config)[-1].level.parents[0].name if config.prune.rounds > 0 else ""


def summary_defaults(config: TrialConfig) -> dict[str, Any]:
    """Known from the config before the trial trains: `find_level`, so that a trial stopped early still
    counts among those sharing its finding round (`speedup_amortized`)."""
    return {"find_level": find_level(config)}


def ticket_epochs(config: TrialConfig) -> int:
    final = plan_levels(config)[-1].recipe  # the ticket's round (the dense network itself with no round)
    return final.epochs - final.first_epoch


class IMPTrainer:
    # Its dense reference is a level of its own path ("baseline" records), not a separate table.
    dense_records: tuple[EpochRecord, ...] = ()

    def __init__(self, config: TrialConfig, data: DataBundle | None = None, *, device: str | torch.device = "cpu",
                 state: dict[str, Any] | None = None, levels: LevelStore | None = None):
        self.config = config
        self.device = torch.device(device)
        self.data = (data if data is not None else load_task(config.data)).to(self.device)
        self.store = levels or LevelStore(None)
        # bf16 autocast on CUDA, channels-last, optional torch.compile: core/fastpath.py.
        self.fastpath = resolve_fastpath(config.train.precision, config.train.compile, self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(config.train.seed)  # the initialisation: from the trial seed alone
            self.model = self._new_model().to(self.device, memory_format=self.fastpath.memory_format)
        self.forward = self.fastpath.forward_module(self.model)  # the model, or its compiled wrapper
        self.weights = prunable_weights(self.model, config.prune.exclude)
        self.init_state = snapshot(self.model)
        self.plan = plan_levels(config)
        self.position = 0  # the step whose records come next
        # Records of the current step not yet emitted (a finished level's, or those an interrupted level
        # holds from before); None until the step is opened.
        self.pending: list[EpochRecord] | None = None
        self.step_emitted = 0  # records of the current step emitted so far
        self.run: LevelRun | None = None  # the level this trial is training for plan[position]
        self.rewind_state: dict[str, Tensor] | None = None  # round 0's weights at epoch prune.rewind
        self.results: dict[str, dict[str, Any]] = {}  # level name -> its result (weights dropped once unneeded)
        self.records: list[EpochRecord] = []
        self.status = "running"
        if state is not None:
            self.load_state_dict(state)

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
        record = replace(record, level=step.level.name)
        if step.phase == "ticket":
            so_far = [r for r in self.records if r.phase == "ticket"] + [record]
            reference = self._reference_records()
            # A reference that ended at chance is no yardstick: no gap is measured against it.
            gap = (NAN if collapsed(reference, self.chance, robust=True)
                   else convergence_gap(so_far, reference, self.config.prune.rewind))
            record = replace(record, convergence_gap=gap)
        self.records.append(record)
        self.step_emitted += 1
        if not self.pending and self.run is None:
            self._finish_step(step)
        return record

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
        if step.level.kind == "dense" and run.epoch == self.config.prune.rewind and step.phase == "dense":
            self.rewind_state = snapshot(self.model)  # late rewinding (Frankle et al. 2020): epoch k of round 0
        if not run.done:
            self.store.save_progress(step.level, lambda: {**run.state_dict(), "rewind": self.rewind_state})

    def _save(self, step: Step, run: LevelRun) -> None:
        rewinds = step.phase == "dense" and self.config.prune.rewind > 0
        result = {"weights": snapshot(self.model), "mask": run.mask.state_dict(), "status": run.status,
                  "rewind": self.rewind_state if rewinds else None,
                  "records": [r.as_dict() for r in run.records], "trained_by": self.store.token,
                  "best": run.best, "resumed_from": run.resumed_from}
        self.store.save_result(step.level, result)
        self.store.release(step.level)
        self.results[step.level.name] = result

    def _tested(self, step: Step) -> dict[str, Any]:
        """The level's result with its test-split figures (last and best-validation weights), computed
        once by the first trial whose ticket or reference it is, and kept with the level."""
        result, settings = self._result(step.level), self._test_settings()
        if settings in result.get("tests", {}) or result["status"] != "completed":
            return result
        self.store.claim(step.level)
        try:
            stored = self.store.result(step.level) or result
            if settings not in stored.get("tests", {}):
                self.model.load_state_dict(stored["weights"])
                test = evaluate_test_split(self.model, self.data, self.config)
                best = stored["best"]
                if best is not None and test:
                    last = stored["records"][-1]["epoch"]
                    if best["epoch"] == last:  # the same weights: the same figures (the test is seeded)
                        again = {f"best_{k}": v for k, v in test.items()}
                    else:
                        self.model.load_state_dict(best["weights"])
                        again = evaluate_test_split(self.model, self.data, self.config, "best_test_")
                    test.update({"best_epoch": float(best["epoch"]), **again})
                stored = {**stored, "tests": {**stored.get("tests", {}), settings: test}}
                self.store.save_result(step.level, stored)
        finally:
            self.store.release(step.level)
        self.results[step.level.name] = stored
        return stored

    def _test_settings(self) -> str:
        """Names what a test evaluation reads, so a level tested one way is not reported for another."""
        c = self.config
        return json.dumps({"test_eval": c.trainer.test_eval, "examples": c.train.test_examples,
                           "autoattack": c.attack.test_autoattack, "eval": c.attack.eval.model_dump(mode="json"),
                           "batch": c.train.eval_batch_size,
                           **({"certify": c.certify.model_dump(mode="json")} if c.certify else {})}, sort_keys=True)

    def _test_of(self, level: Level) -> dict[str, float]:
        result = self._result(level)
        return {} if result is None else result.get("tests", {}).get(self._test_settings(), {})

    def _finish_step(self, step: Step) -> None:
        self.pending, self.run, self.step_emitted = None, None, 0
        if step is self.plan[-1] or step is self._reference_step():  # the ticket (its path's last level)
            self._tested(step)
        result = self.results[step.level.name]
        self.position += 1
        if result["status"] == "diverged":
            self.status = "diverged"
        elif self.position >= len(self.plan):
            self.status = "completed"
        self._drop_unneeded_weights()

    # ---------------------------------------------------------------- levels
    def _result(self, level: Level) -> dict[str, Any] | None:
        if level.name not in self.results:
            result = self.store.result(level)
            if result is None:
                return None
            self.results[level.name] = result
        return self.results[level.name]

    def _as_emitted(self, result: dict[str, Any]) -> list[EpochRecord]:
        reused = result["trained_by"] != self.store.token
        return [EpochRecord.from_dict({**r, "reused": reused}) for r in result["records"]]

    def _start(self, step: Step) -> LevelRun:
        """Load the weights and mask the level starts from, and its progress if it was interrupted."""
        prune = self.config.prune
        if not step.level.parents:
            self.model.load_state_dict(self.init_state)
            mask = Mask.ones(self.weights)
            self.rewind_state = self.init_state if prune.rewind == 0 else None
        else:
            parent = self._result(step.level.parents[0])
            self.model.load_state_dict(parent["weights"])
            mask = magnitude_prune(self.weights, Mask.from_state_dict(parent["mask"], self.weights),
                                   prune.ratio, prune.scope, allow_empty_layers=prune.allow_empty_layers)
            dense = self._result(self.plan[0].level)
            if prune.rewind > 0 and dense["rewind"] is None:
                ended = dense["records"][-1]["epoch"] if dense["records"] else 0
                raise UserError(f"prune.rewind: the dense round ended at epoch {ended} (train.patience or the guard "
                                f"stopped it), before epoch {prune.rewind}, the rewind point; accepted: a rewind "
                                f"epoch the dense round reaches, or 0 (the initialisation)")
            start = self._rewind_point()
            if step.phase == "ticket" and prune.control == "random_mask":
                mask = random_mask_like(mask, torch.Generator().manual_seed(step.level.seed))
            if step.phase == "ticket" and prune.control == "reinit":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(step.level.seed)
                    start = self._new_model().state_dict()
            self.model.load_state_dict(start)
        run = LevelRun(self.model, self.forward, self.weights, mask, self.data, step.recipe, self.config,
                       seed=step.level.seed, fastpath=self.fastpath, augment=self.config.data.augment)
        progress = self.store.progress(step.level)
        if progress is not None:
            run.load_state_dict(progress)
            if step.level.kind == "dense":
                self.rewind_state = progress["rewind"]
        return run

    def _rewind_point(self) -> dict[str, Tensor]:
        """The weights a pruned round rewinds to: round 0's at epoch prune.rewind (from its level once it
        ended, else as captured here), or the initialisation."""
        dense = self._result(self.plan[0].level)
        rewind = self.rewind_state if dense is None else dense["rewind"]
        return self.init_state if rewind is None else rewind

    def _ticket_result(self) -> dict[str, Any] | None:
        """The finished ticket's level result: the last level of the path, once the trial is past it."""
        return self.results.get(self.plan[-1].level.name) if self.position >= len(self.plan) else None

    def _drop_unneeded_weights(self) -> None:
        """Keep weights only of the levels a later step starts from (trial states stay small); the
        dense round keeps its rewind point."""
        needed = {p.name for s in self.plan[self.position:] for p in s.level.parents}
        for name, result in self.results.items():
            if name not in needed and "weights" in result and name != self.plan[-1].level.name:
                self.results[name] = {k: v for k, v in result.items() if k not in ("weights", "best")}

    def _new_model(self) -> nn.Module:
        m, info = self.config.model, self.data.info
        return create_model(m.arch, width=m.width, depth=m.depth, num_classes=info.num_classes,
                            in_channels=info.channels, mean=info.mean, std=info.std, input_size=m.input_size)

    # ---------------------------------------------------------------- results
    @property
    def ticket_state(self) -> dict[str, Any] | None:
        result = self._ticket_result()
        if result is None:
            return None
        best = result.get("best") if self.config.trainer.keep == "best" else None
        return {"weights": best["weights"] if best else result["weights"], "mask": result["mask"]}

    @property
    def mask(self) -> Mask:
        held = self.run.mask.state_dict() if self.run is not None else (self.ticket_state or {}).get("mask")
        return Mask.ones(self.weights) if held is None else Mask.from_state_dict(held, self.weights)

    def summary(self) -> dict[str, Any]:
        """Trial-level numbers: the path's progress, convergence against the reference, the test split."""
        by_phase = {phase: [r for r in self.records if r.phase == phase] for phase in ("dense", "find", "ticket")}
        ticket = by_phase["ticket"] or (by_phase["dense"] if self.config.prune.rounds == 0 else [])
        finding = by_phase["dense"] + by_phase["find"] if by_phase["ticket"] else []
        ref, target = self.config.reference, self.config.reference.target
        head = self.config.prune.rewind if by_phase["ticket"] else 0  # a rewound ticket's epochs before its round
        out = {"status": self.status, **path_summary(self.records),
               **convergence(ticket, self._reference_records(), finding, target, self.chance, head)}
        if ref.matched and self.config.prune.rounds > 0:
            matched = self._records_of(dense_level(self.config, matched_recipe(self.config)))
            measured = convergence(ticket, matched, finding, target, self.chance, head)
            out.update(speedup_matched=measured["speedup"], epoch_speedup_matched=measured["epoch_speedup"])
        if ref.best_of and self.config.prune.rounds > 0:
            curves = {lr: self._records_of(dense_level(self.config, reference_recipe(self.config, lr)))
                      for lr in ref.best_of}
            out.update(best_dense(ticket, curves, finding, target, self.chance, head))
        out["find_level"] = find_level(self.config)
        result = self._ticket_result()
        if result is not None:
            out.update(result.get("tests", {}).get(self._test_settings(), {}))
        reference = self._reference_step()
        if reference is not None:
            out.update({f"reference_{k}": v for k, v in self._test_of(reference.level).items()})
        return out

    @property
    def chance(self) -> float:
        """Validation accuracy of a network that answers one class everywhere, on balanced classes."""
        return 1 / self.data.info.num_classes

    @property
    def ticket_epoch(self) -> int:
        """Epochs of the final network trained so far: the ticket's round, or the dense round without one."""
        final = self.plan[-1]
        return sum((r.round, r.phase) == (final.round, final.phase) for r in self.records)

    def _reference_step(self) -> Step | None:
        """The step whose level is the dense reference: its own, or the dense round when they coincide."""
        if self.config.prune.rounds == 0 or not self.config.trainer.dense_baseline:
            return None
        digest = dense_level(self.config, reference_recipe(self.config)).digest
        return next(s for s in self.plan if s.level.digest == digest)

    def _reference_records(self) -> list[EpochRecord]:
        step = self._reference_step()
        return [] if step is None else self._records_of(step.level)

    def _records_of(self, level: Level) -> list[EpochRecord]:
        """The records of a level of the path, in order (whatever phase it appears under)."""
        return [r for r in self.records if r.level == level.name]

    def sparsity_report(self):
        """Per-layer sparsity of the final ticket (of the current mask before the ticket exists)."""
        return self.mask.report()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue from this epoch boundary; loads with weights_only=True."""
        return {
            "config_hash": self.config.content_hash(),
            "init": self.init_state,
            "rewind": None if self.config.prune.rewind == 0 else self._rewind_point(),
            "ticket": self.ticket_state,
            "position": {"position": self.position, "status": self.status, "opened": self.pending is not None,
                         "step_emitted": self.step_emitted},
            "run": None if self.run is None else self.run.state_dict(),
            "results": self.results,
            "records": [r.as_dict() for r in self.records],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init_state = {k: v.to(self.device) for k, v in state["init"].items()}
        self.rewind_state = self.init_state if self.config.prune.rewind == 0 else state["rewind"]
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
                if step.phase == "dense":
                    self.rewind_state = state["rewind"] if self.config.prune.rewind else self.init_state
            self.pending = list(self.run.records[self.step_emitted:])
        elif position["opened"]:
            self.pending = self._as_emitted(self.results[step.level.name])[self.step_emitted:]
