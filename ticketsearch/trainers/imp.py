"""Adversarial iterative magnitude pruning as a plan of levels (trainers/levels.py).

Round 0 trains the dense network; each later round prunes `prune.ratio` of the surviving weights by
magnitude, rewinds the survivors (to the initialisation, or to epoch k of round 0, continuing the
schedule from there) and trains the ticket. Rounds 0..R-1 train under the ticket-finding regime
(`prune.find_with`), round R under `attack.train`: the boosting-ticket cost trick (Li et al. 2020)
finds the mask with cheap FGSM and trains the ticket with PGD. The controls (`prune.control`) change
the final ticket only: `reinit` gives the IMP mask a fresh initialisation, `random_mask` draws a
random mask with the IMP mask's per-layer counts. The dense reference ("baseline") trains the dense
network under `attack.train` from the same initialisation when that is not the dense round itself.

Each round and each dense network the ticket is compared with is a level (trainers/level_spec.py),
named by what it reads, so trials that share a round (a pruning-ratio sweep shares round 0; a
`prune.rounds` sweep shares its IMP path; every trial shares the reference) train it once. This
module is the plan (`plan_levels`), how its levels start (`IMPTrainer.start`) and the summary; the
executor (trainers/executor.py) runs it. The trainer never imports Ray.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from ticketsearch.core.data import DataBundle
from ticketsearch.core.models import create_model
from ticketsearch.core.pruning import Mask, magnitude_prune, prunable_weights, random_mask_like
from ticketsearch.errors import UserError
from ticketsearch.records import (NAN, EpochRecord, best_dense, collapsed, convergence, convergence_gap,
                                  path_summary)
from ticketsearch.spec import TrialConfig
from ticketsearch.trainers.engine import LevelRun, snapshot
from ticketsearch.trainers.executor import LevelTrainer
from ticketsearch.trainers.level_spec import Evaluation, LevelSpec, Pruning, Recipe, Step
from ticketsearch.trainers.levels import LevelStore


def level(config: TrialConfig, kind: str, recipe: Recipe, **start: Any) -> LevelSpec:
    """A level of this trial's task, network, seed, evaluation and arithmetic."""
    t = config.train
    return LevelSpec(kind, config.data, config.model, t.seed, recipe, Evaluation.of(config), t.precision,
                     t.compile, config.data.augment, **start)


def plan_levels(config: TrialConfig) -> list[Step]:
    """The trial's levels in order: dense round, finding rounds, the dense comparisons, the ticket.

    The comparisons come before the ticket so that every epoch of the ticket is measured against the
    reference (`convergence_gap`); a comparison that is a level already planned (the dense round is
    the reference when it trains like it; the matched network is often one of best_of) is not planned
    twice.
    """
    prune, train = config.prune, config.train
    if prune.rounds == 0:
        recipe = Recipe.of(config, config.attack.train, train.epochs, train.lr)
        return [Step(dense_level(config, recipe), "ticket", 0, "dense")]
    find_lr = prune.find_lr or train.lr
    find = Recipe.of(config, config.find_regime, config.find_epochs, find_lr)
    steps = [Step(dense_level(config, find, prune.rewind), "find", 0, "dense")]
    rewound = Recipe.of(config, config.find_regime, config.find_epochs, find_lr, first_epoch=prune.rewind)
    pruning = Pruning.of(config)
    # Finding rounds and the ticket's are one kind of level: when the ticket trains like a finding round
    # (same regime, lr and epochs, no control), an R-round ticket is round R of every deeper path.
    for round_ in range(1, prune.rounds):
        steps.append(Step(level(config, "round", rewound, parent=steps[-1].level, pruning=pruning,
                                rewind=prune.rewind), "find", round_, "find"))
    found = steps[-1].level
    planned = {s.level.name for s in steps}
    for role, recipe in comparison_recipes(config):
        dense = dense_level(config, recipe)
        if dense.name not in planned:
            planned.add(dense.name)
            steps.append(Step(dense, role, 0, PHASES[role]))
    ticket = Recipe.of(config, config.attack.train, train.epochs, train.lr, first_epoch=prune.rewind)
    steps.append(Step(level(config, "round", ticket, parent=found, pruning=pruning, rewind=prune.rewind,
                            control=prune.control), "ticket", prune.rounds, "ticket"))
    return steps


PHASES = {"reference": "baseline", "matched": "matched", "best_of": "best_of"}  # the records' phase of a role


def dense_level(config: TrialConfig, recipe: Recipe, rewind: int = 0) -> LevelSpec:
    """A dense network's level: trained by `recipe` from the initialisation (keeping its weights at
    epoch `rewind` for the tickets rewound there)."""
    return level(config, "dense", recipe, rewind=rewind)


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
    """(role, recipe) of every dense network the ticket is compared with, as the spec asks."""
    ref = config.reference
    out = [("reference", reference_recipe(config))] if config.trainer.dense_baseline else []
    if ref.matched:
        out.append(("matched", matched_recipe(config)))
    out += [("best_of", reference_recipe(config, lr)) for lr in ref.best_of or ()]
    return out


def reference_level(config: TrialConfig) -> LevelSpec | None:
    """The level of the dense reference: its own, or the dense round's when they are the same level."""
    if config.prune.rounds == 0 or not config.trainer.dense_baseline:
        return None
    return dense_level(config, reference_recipe(config))


def planned_epochs(config: TrialConfig) -> int:
    return sum(step.level.epochs for step in plan_levels(config))


def find_level(config: TrialConfig) -> str:
    """The level the ticket is pruned from (its finding path's last round): trials sharing it share its cost."""
    return plan_levels(config)[-1].level.parent.name if config.prune.rounds > 0 else ""


def summary_defaults(config: TrialConfig) -> dict[str, Any]:
    """Known from the config before the trial trains: `find_level`, so that a trial stopped early still
    counts among those sharing its finding round (`speedup_amortized`)."""
    return {"find_level": find_level(config), "reference_level": _name(reference_level(config))}


def ticket_epochs(config: TrialConfig) -> int:
    return plan_levels(config)[-1].level.epochs  # the ticket's round (the dense network itself with no round)


def _name(level: LevelSpec | None) -> str:
    return "" if level is None else level.name


class IMPTrainer(LevelTrainer):
    def __init__(self, config: TrialConfig, data: DataBundle | None = None, *, device: str | torch.device = "cpu",
                 state: dict[str, Any] | None = None, levels: LevelStore | None = None):
        super().__init__(config, plan_levels(config), data, device=device, levels=levels)
        self.data = self.task(config.data)
        first = self.plan[0].level
        self.fastpath = self.fastpath_of(first)  # bf16 autocast on CUDA, channels-last, optional torch.compile
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(first.seed)  # the initialisation: from the trial seed alone
            self.model = self._new_model().to(self.device, memory_format=self.fastpath.memory_format)
        self.forward = self.fastpath.forward_module(self.model)  # the model, or its compiled wrapper
        self.weights = prunable_weights(self.model, config.prune.exclude)
        self.init_state = snapshot(self.model)
        self.rewind_state: dict[str, Tensor] | None = None  # round 0's weights at epoch prune.rewind
        self.reference = reference_level(config)
        if state is not None:
            self.init_state = {k: v.to(self.device) for k, v in state["init"].items()}
            self.rewind_state = self.init_state if config.prune.rewind == 0 else state["rewind"]
            self.load_state_dict(state)

    # ---------------------------------------------------------------- how levels start
    def start(self, step: Step) -> LevelRun:
        """Load the weights and mask the level starts from."""
        level, prune = step.level, self.config.prune
        if level.kind == "dense":
            self.model.load_state_dict(self.init_state)
            mask = Mask.ones(self.weights)
            if step.phase == "dense":
                self.rewind_state = self.init_state if level.rewind == 0 else None
        else:
            parent = self._result(level.parent)
            self.model.load_state_dict(parent["weights"])
            pruning = level.pruning
            mask = magnitude_prune(self.weights, Mask.from_state_dict(parent["mask"], self.weights), pruning.ratio,
                                   pruning.scope, allow_empty_layers=pruning.allow_empty_layers)
            dense = self._result(self.plan[0].level)
            if level.rewind > 0 and dense["rewind"] is None:
                ended = dense["records"][-1]["epoch"] if dense["records"] else 0
                raise UserError(f"prune.rewind: the dense round ended at epoch {ended} (train.patience or the guard "
                                f"stopped it), before epoch {prune.rewind}, the rewind point; accepted: a rewind "
                                f"epoch the dense round reaches, or 0 (the initialisation)")
            start = self._rewind_point()
            if level.control == "random_mask":
                mask = random_mask_like(mask, torch.Generator().manual_seed(level.seed_of_stream))
            if level.control == "reinit":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(level.seed_of_stream)
                    start = self._new_model().state_dict()
            self.model.load_state_dict(start)
        return LevelRun(level, self.model, self.forward, self.weights, mask, self.data, self.fastpath)

    def on_epoch(self, step: Step, run: LevelRun) -> None:
        if step.phase == "dense" and run.epoch == step.level.rewind:
            self.rewind_state = snapshot(self.model)  # late rewinding (Frankle et al. 2020): epoch k of round 0

    def progress_extras(self, step: Step) -> dict[str, Any]:
        return {"rewind": self.rewind_state} if step.phase == "dense" else {}

    def resumed(self, step: Step, progress: dict[str, Any]) -> None:
        if step.phase == "dense":
            self.rewind_state = progress["rewind"]

    def result_extras(self, step: Step, run: LevelRun) -> dict[str, Any]:
        rewinds = step.phase == "dense" and step.level.rewind > 0
        return {"rewind": self.rewind_state if rewinds else None}

    def _rewind_point(self) -> dict[str, Tensor]:
        """The weights a pruned round rewinds to: round 0's at epoch prune.rewind (from its level once it
        ended, else as captured here), or the initialisation."""
        dense = self._result(self.plan[0].level)
        rewind = self.rewind_state if dense is None else dense["rewind"]
        return self.init_state if rewind is None else rewind

    def _new_model(self) -> nn.Module:
        m, info = self.config.model, self.data.info
        return create_model(m.arch, width=m.width, depth=m.depth, num_classes=info.num_classes,
                            in_channels=info.channels, mean=info.mean, std=info.std, input_size=m.input_size)

    def tested(self, step: Step) -> bool:
        return step.role == "ticket" or (self.reference is not None and step.level.name == self.reference.name)

    def test_model(self, step: Step) -> nn.Module:
        return self.model

    def on_record(self, step: Step, record: EpochRecord) -> EpochRecord:
        if step.role != "ticket" or self.config.prune.rounds == 0:
            return record
        so_far = [r for r in self.records if r.role == "ticket"] + [record]
        reference = self._reference_records()
        # A reference that ended at chance is no yardstick: no gap is measured against it.
        gap = (NAN if collapsed(reference, self.chance, robust=True)
               else convergence_gap(so_far, reference, self.config.prune.rewind))
        return replace(record, convergence_gap=gap)

    # ---------------------------------------------------------------- results
    def _ticket_result(self) -> dict[str, Any] | None:
        """The finished ticket's level result: the last level of the path, once the trial is past it."""
        return self.results.get(self.plan[-1].level.name) if self.position >= len(self.plan) else None

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
        ticket = [r for r in self.records if r.role == "ticket"]
        pruned = self.config.prune.rounds > 0 and bool(ticket)  # the ticket's round has begun
        finding = [r for r in self.records if r.role == "find"] if pruned else []
        ref, target = self.config.reference, self.config.reference.target
        head = self.config.prune.rewind if pruned else 0  # a rewound ticket's epochs before its round
        out = {"status": self.status, **path_summary(self.records),
               **convergence(ticket, self._reference_records(), finding, target, self.chance, head)}
        if ref.matched and self.config.prune.rounds > 0:
            matched = self.records_of(dense_level(self.config, matched_recipe(self.config)))
            measured = convergence(ticket, matched, finding, target, self.chance, head)
            out.update(speedup_matched=measured["speedup"], epoch_speedup_matched=measured["epoch_speedup"])
        if ref.best_of and self.config.prune.rounds > 0:
            curves = {lr: self.records_of(dense_level(self.config, reference_recipe(self.config, lr)))
                      for lr in ref.best_of}
            out.update(best_dense(ticket, curves, finding, target, self.chance, head))
        out.update(summary_defaults(self.config))
        result = self._ticket_result()
        if result is not None:
            out.update(result.get("tests", {}).get(self.test_settings(), {}))
        if self.reference is not None:
            out.update({f"reference_{k}": v for k, v in self.test_of(self.reference).items()})
        return out

    @property
    def chance(self) -> float:
        """Validation accuracy of a network that answers one class everywhere, on balanced classes."""
        return 1 / self.data.info.num_classes

    def _reference_records(self) -> list[EpochRecord]:
        return [] if self.reference is None else self.records_of(self.reference)

    def sparsity_report(self):
        """Per-layer sparsity of the final ticket (of the current mask before the ticket exists)."""
        return self.mask.report()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue from this epoch boundary; loads with weights_only=True."""
        return {**super().state_dict(), "init": self.init_state,
                "rewind": None if self.config.prune.rewind == 0 else self._rewind_point(),
                "ticket": self.ticket_state}
