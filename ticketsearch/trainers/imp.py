"""Adversarial iterative magnitude pruning: one trial, one epoch at a time, resumable.

Round 0 trains the dense network; each later round prunes `prune.ratio` of the surviving weights by
magnitude, rewinds the survivors (to the initialisation or to epoch k of round 0) and trains the
ticket. Rounds 0..R-1 train under the ticket-finding regime (`prune.find_with`), round R under
`attack.train`: the boosting-ticket cost trick (Li et al. 2020) finds the mask with cheap FGSM and
trains the ticket with PGD. When the two regimes differ a "baseline" phase trains the dense network
under `attack.train` too, so the ticket's convergence is compared in the same trial.

The trainer never imports Ray. Drive it with `for record in trainer`, or `next_record()`; between two
records `state_dict()` captures everything needed to continue (weights, masks, rewind point,
optimiser, schedule position, RNG states, records), and `IMPTrainer(config, data, state=...)`
continues with the same records as an uninterrupted run on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.data import DataBundle
from ticketsearch.core.fastpath import FastPath, resolve_fastpath
from ticketsearch.core.loops import Augmentation, batches_per_epoch, evaluate, train_epoch
from ticketsearch.core.models import create_model
from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights, random_mask_like
from ticketsearch.core.schedule import lr_at
from ticketsearch.spec import AttackConfig, TrialConfig
from ticketsearch.trainers.base import EpochTrainer, load_task
from ticketsearch.trainers.guard import OverfittingGuard
from ticketsearch.trainers.random_stream import RandomStream
from ticketsearch.trainers.records import NAN, EpochRecord, convergence

@dataclass(frozen=True)
class Phase:
    round: int
    name: str  # dense | find | ticket | baseline
    regime: AttackConfig
    epochs: int
    lr: float


def plan_phases(config: TrialConfig) -> list[Phase]:
    rounds, train = config.prune.rounds, config.train
    if rounds == 0:
        return [Phase(0, "dense", config.attack.train, train.epochs, train.lr)]
    find_lr = config.prune.find_lr or train.lr
    phases = [Phase(0, "dense", config.find_regime, config.find_epochs, find_lr)]
    phases += [Phase(r, "find", config.find_regime, config.find_epochs, find_lr) for r in range(1, rounds)]
    phases.append(Phase(rounds, "ticket", config.attack.train, train.epochs, train.lr))
    dense_differs = (config.find_regime, config.find_epochs, find_lr) != (config.attack.train, train.epochs, train.lr)
    if config.trainer.dense_baseline and dense_differs:
        phases.append(Phase(0, "baseline", config.attack.train, train.epochs, train.lr))
    return phases


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class IMPTrainer(EpochTrainer):
    def __init__(
        self,
        config: TrialConfig,
        data: DataBundle | None = None,
        *,
        device: str | torch.device = "cpu",
        state: dict[str, Any] | None = None,
    ):
        self.config = config
        self.device = torch.device(device)
        self.data = (data if data is not None else load_task(config.data)).to(self.device)
        info = self.data.info
        # bf16 autocast on CUDA, channels-last, optional torch.compile: core/fastpath.py.
        self.fastpath = resolve_fastpath(config.train.precision, config.train.compile, self.device)
        self.augmentation = Augmentation(info.crop_padding, info.flip) if config.data.augment else Augmentation(0, False)
        # The trial's own random stream: seeded here, swapped in around every epoch (next_record), so
        # trainers interleaved in one process stay reproducible and the caller's RNG is left alone.
        self.random = RandomStream(config.train.seed, self.device)
        with self.random.active():
            self.model = self._new_model().to(self.device, memory_format=self.fastpath.memory_format)
        # What the loops and attacks call: the model itself or its compiled wrapper (same parameters).
        self.forward = self.fastpath.forward_module(self.model)
        self.weights = prunable_weights(self.model, config.prune.exclude)
        self.init_state = _snapshot(self.model)
        self.rewind_state: dict[str, Tensor] | None = self.init_state if config.prune.rewind == 0 else None
        self.ticket_state: dict[str, Any] | None = None  # the final ticket, kept while the baseline trains
        self._set_mask(Mask.ones(self.weights))
        self.phases = plan_phases(config)
        self.phase_index, self.epoch, self.step = 0, 0, 0
        self.records: list[EpochRecord] = []
        self.test: dict[str, float] = {}
        self.status = "running"
        self.shuffle = torch.Generator().manual_seed(config.train.seed)
        self.augment_rng = torch.Generator(device=self.device).manual_seed(config.train.seed + 1)
        self.guard = OverfittingGuard(config.attack.guard, config.attack.eval)
        self.optimizer = self._new_optimizer()
        self.eval_attack = build_attack(self.forward, config.attack.eval, info.num_classes, "attack.eval",
                                       fold_batchnorm=self.fastpath.fold_batchnorm)
        if state is not None:
            self.load_state_dict(state)

    # ---------------------------------------------------------------- driving
    @property
    def phase(self) -> Phase:
        return self.phases[self.phase_index]

    def _next_record(self) -> EpochRecord:
        """Train and evaluate one epoch of the current round; start the next round when it ends."""
        if self.epoch == 0 and self.step == 0:
            self._start_phase()
        phase, config = self.phase, self.config
        steps_per_epoch = batches_per_epoch(self.data.train_x.shape[0], config.train.batch_size)
        result = train_epoch(
            self.forward, self.optimizer, self.data.train_x, self.data.train_y,
            batch_size=config.train.batch_size,
            attack=self._attack(phase.regime),
            after_step=self.apply_mask,
            lr_for_step=lambda step: lr_at(step, steps_per_epoch=steps_per_epoch, epochs=phase.epochs,
                                           base_lr=phase.lr, schedule=config.train.schedule),
            first_step=self.step,
            shuffle=self.shuffle,
            augmentation=self.augmentation,
            augment_generator=self.augment_rng,
            fastpath=self.fastpath,
        )
        self.epoch += 1
        self.step += result.steps
        if phase.name == "dense" and self.epoch == config.prune.rewind:
            self.rewind_state = _snapshot(self.model)  # late rewinding (Frankle et al. 2020): epoch k of round 0
        if not math.isfinite(result.loss):
            self.status = "diverged"
            return self._record(result, NAN, NAN, 0.0, NAN, False, "")
        start = time.perf_counter()  # the guard's PGD check counts as evaluation time
        guard_acc, fired, action = self.guard.after_epoch(
            phase.regime, model=self.model, optimizer=self.optimizer, forward=self.forward,
            attack_for=self._attack, images=self.data.train_x, labels=self.data.train_y,
            fastpath=self.fastpath)
        n = min(config.train.eval_examples, self.data.val_x.shape[0])
        accuracy = evaluate(self.forward, self.data.val_x[:n], self.data.val_y[:n], self.eval_attack,
                            batch_size=config.train.eval_batch_size, fastpath=self.fastpath)
        record = self._record(result, accuracy.clean, accuracy.robust, time.perf_counter() - start,
                              guard_acc, fired, action)
        if self.epoch >= phase.epochs or (fired and action != "record"):
            self._end_phase()
        return record

    def _record(self, result, clean, robust, eval_seconds, guard_acc, fired, action) -> EpochRecord:
        phase = self.phase
        this_round = [r.val_robust_acc for r in self.records if (r.round, r.phase) == (phase.round, phase.name)]
        record = EpochRecord(
            round=phase.round, phase=phase.name, epoch=self.epoch, global_epoch=len(self.records) + 1,
            sparsity=self.sparsity, regime=phase.regime.describe(), lr=result.last_lr,
            train_loss=result.loss, train_acc=result.accuracy, val_clean_acc=clean, val_robust_acc=robust,
            robust_auc=sum(this_round + [robust]) / (len(this_round) + 1),
            epoch_seconds=result.seconds, eval_seconds=eval_seconds,
            examples_per_second=result.examples / result.seconds if result.seconds > 0 else NAN,
            guard_robust_acc=guard_acc, guard_fired=fired, guard_action=action,
        )
        self.records.append(record)
        return record

    # ---------------------------------------------------------------- rounds
    def _start_phase(self) -> None:
        phase, prune = self.phase, self.config.prune
        if phase.name in ("find", "ticket"):
            new_mask = magnitude_prune(self.weights, self.mask, prune.ratio, prune.scope)
            if prune.control == "random_mask":
                new_mask = random_mask_like(new_mask, torch.Generator().manual_seed(self.config.train.seed + phase.round))
            self._set_mask(new_mask)
            start = self._fresh_init(phase.round) if prune.control == "reinit" else self.rewind_state
            self.model.load_state_dict(start)
        elif phase.name == "baseline":
            self._set_mask(Mask.ones(self.weights))
            self.model.load_state_dict(self.init_state)
        self.apply_mask()
        self.optimizer = self._new_optimizer()
        self.guard.reset()

    def _end_phase(self) -> None:
        phase = self.phase
        if phase.name == "ticket" or (phase.name == "dense" and self.config.prune.rounds == 0):
            self._finish_ticket()
        self.phase_index += 1
        self.epoch, self.step = 0, 0
        if self.phase_index >= len(self.phases):
            self.status = "completed"

    def _finish_ticket(self) -> None:
        """Evaluate the finished ticket on the test split once, and keep its files."""
        self.ticket_state = {"weights": _snapshot(self.model), "mask": self.mask.state_dict()}
        if not self.config.trainer.test_eval:
            return
        n = self.config.train.test_examples or self.data.test_x.shape[0]
        x, y = self.data.test_x[:n], self.data.test_y[:n]
        accuracy = evaluate(self.forward, x, y, self.eval_attack, batch_size=self.config.train.eval_batch_size,
                            fastpath=self.fastpath)
        self.test = {"test_clean_acc": accuracy.clean, "test_robust_acc": accuracy.robust, "test_examples": float(n)}
        if self.config.attack.test_autoattack:
            # The reported AutoAttack figure runs in fp32 on the uncompiled model whatever the fast path:
            # its many batch shapes would recompile, and a conservative number should not depend on bf16.
            auto = self.config.attack.eval.model_copy(update={"kind": "autoattack"})
            attack = build_attack(self.model, auto, self.data.info.num_classes, "attack.eval")
            self.test["test_autoattack_acc"] = evaluate(self.model, x, y, attack,
                                                        batch_size=self.config.train.eval_batch_size,
                                                        fastpath=FastPath(self.device.type)).robust

    def _set_mask(self, mask: Mask) -> None:
        self.mask = mask
        self.sparsity = mask.sparsity()
        self.apply_mask = MaskApplier(self.weights, mask)

    def _fresh_init(self, round_: int) -> dict[str, Tensor]:
        """A new random initialisation (the reinit control), seeded by the trial seed and round."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed + 7919 * round_)
            return self._new_model().state_dict()

    # ---------------------------------------------------------------- pieces
    def _new_model(self) -> nn.Module:
        m, info = self.config.model, self.data.info
        return create_model(m.arch, width=m.width, depth=m.depth, num_classes=info.num_classes,
                            in_channels=info.channels, mean=info.mean, std=info.std, input_size=m.input_size)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        t = self.config.train
        return torch.optim.SGD(self.model.parameters(), lr=t.lr, momentum=t.momentum,
                               weight_decay=t.weight_decay, nesterov=t.nesterov and t.momentum > 0)

    # ---------------------------------------------------------------- results
    def summary(self) -> dict[str, Any]:
        """Trial-level numbers: status, final and best validation metrics, convergence, test split."""
        main = [r for r in self.records if r.phase != "baseline"]
        last = main[-1] if main else None
        final_round = [r for r in main if last is not None and r.round == last.round]
        return {
            "status": self.status,
            "epochs_trained": len(self.records),
            "train_seconds": sum(r.epoch_seconds for r in self.records),
            "eval_seconds": sum(r.eval_seconds for r in self.records),
            "final_round": last.round if last else 0,
            "final_sparsity": last.sparsity if last else 0.0,
            "final_val_clean_acc": last.val_clean_acc if last else NAN,
            "final_val_robust_acc": last.val_robust_acc if last else NAN,
            "best_val_robust_acc": max((r.val_robust_acc for r in final_round), default=NAN),
            "robust_auc": last.robust_auc if last else NAN,
            "guard_fired": any(r.guard_fired for r in self.records),
            **convergence(self.records),
            **self.test,
        }

    def sparsity_report(self):
        """Per-layer sparsity of the final ticket (of the current mask before the ticket exists)."""
        return Mask(self.ticket_state["mask"]).report() if self.ticket_state else self.mask.report()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue from this epoch boundary; loads with weights_only=True."""
        return {
            "config_hash": self.config.content_hash(),
            "model": _snapshot(self.model),
            "optimizer": self.optimizer.state_dict(),
            "mask": self.mask.state_dict(),
            "init": self.init_state,
            "rewind": None if self.config.prune.rewind == 0 else self.rewind_state,
            "ticket": self.ticket_state,
            "position": {"phase_index": self.phase_index, "epoch": self.epoch, "step": self.step, "status": self.status},
            "records": [r.as_dict() for r in self.records],
            "test": dict(self.test),
            "rng": {**self.random.state_dict(), "shuffle": self.shuffle.get_state(),
                    "augment": self.augment_rng.get_state()},
            "guard": self.guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init_state = {k: v.to(self.device) for k, v in state["init"].items()}
        rewind = state["rewind"]
        self.rewind_state = self.init_state if self.config.prune.rewind == 0 else (
            None if rewind is None else {k: v.to(self.device) for k, v in rewind.items()})
        self.ticket_state = state["ticket"]
        self._set_mask(Mask.from_state_dict(state["mask"], self.weights))
        self.model.load_state_dict(state["model"])
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        position = state["position"]
        self.phase_index, self.epoch, self.step = position["phase_index"], position["epoch"], position["step"]
        self.status = position["status"]
        self.records = [EpochRecord.from_dict(r) for r in state["records"]]
        self.test = dict(state["test"])
        rng = state["rng"]
        self.random.load_state_dict(rng)
        self.shuffle.set_state(rng["shuffle"])
        self.augment_rng.set_state(rng["augment"])
        self.guard.load_state_dict(state["guard"])


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
