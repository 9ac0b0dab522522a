"""The epoch engine: one level trained epoch by epoch, resumable between any two epochs.

Every trainer's training runs here: one epoch loop (`LevelRun.run_epoch`: train under the level's
regime with the masks re-applied after every step, the catastrophic-overfitting guard, validation,
one `EpochRecord`), one state save and load, one test evaluation (`test_accuracy`), one count of cost.
A trainer only says which levels to run, from which weights and masks, and what to make of them.

Cost is counted in example-passes, a hardware-independent unit: one forward and backward pass of one
example is one pass, so a training epoch costs examples x (attack steps + 1) (natural 1, FGSM 2,
PGD-10 11). Validation is counted apart (`eval_passes`): a clean pass plus the attack's steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from ticketsearch.core.attacks import build_attack, is_adversarial
from ticketsearch.core.certify import certified_accuracy
from ticketsearch.core.data.augment import to_float
from ticketsearch.core.data import DataBundle, prepare_data
from ticketsearch.core.fastpath import FastPath
from ticketsearch.core.loops import Augmentation, batches_per_epoch, evaluate, train_epoch
from ticketsearch.core.pruning import Mask, MaskApplier
from ticketsearch.core.schedule import lr_at
from ticketsearch.spec import AttackConfig, TrialConfig
from ticketsearch.spec.sections import CERTIFIED_REGIMES, DataSection
from ticketsearch.trainers.level_spec import LevelSpec
from ticketsearch.trainers.guard import OverfittingGuard
from ticketsearch.trainers.random_stream import RandomStream
from ticketsearch.records import NAN, EpochRecord


def load_task(data: DataSection) -> DataBundle:
    """The train / validation / test tensors a data section describes."""
    return prepare_data(data.dataset, data.root, val_split=data.val_split, fraction=data.fraction,
                        split_seed=data.split_seed, download=data.download, classes=data.classes)


# Certified training, in passes per example of one step (digits, CPU, batch 128: IBP's step took 2.8-3.2x
# a clean step's time on cnn_4layer, small_cnn and cnn_7layer, CROWN-IBP's at beta 0.5 14-18x).
IBP_STEP_PASSES = 3  # the clean pass plus a forward and backward pass over the lower and upper bounds (~2)
CROWN_IBP_EXTRA_PASSES = 12  # its backward bound pass carries a row per other class (9 on 10 classes)


def passes_per_example(regime: AttackConfig, start: float = 0.0, end: float = 1.0) -> float:
    """Forward+backward passes per training example: the attack's gradient steps plus the update's.

    TRADES and MART update on a clean pass and an adversarial pass (their losses need f(x) and f(x')),
    so a step costs k attack steps + 2 (TRADES-10, MART-10: 12), PGD-k's k + 1. TRADES' attack also
    runs a clean forward without a backward for its KL target f(x) (torchattacks' TPGD): about a third
    of a pass more (a backward costs about two forwards), not counted, so its count is a lower bound.

    Certified regimes (ibp, crown_ibp) cost what their schedule runs, so this is their mean over the
    steps from `start` to `end` (shares of the round): a warm-up step is a clean step (1), a step on
    IBP bounds `IBP_STEP_PASSES`, and a CROWN-IBP step adds `CROWN_IBP_EXTRA_PASSES` while its beta is
    above 0 (the ramp). The others cost the same at every step.
    """
    if not is_adversarial(regime):
        return 1
    if regime.kind in CERTIFIED_REGIMES:
        warmup, ramp_end = regime.warmup_share, regime.warmup_share + regime.ramp_share
        extra = CROWN_IBP_EXTRA_PASSES if regime.kind == "crown_ibp" else 0
        phases = ((0.0, warmup, 1), (warmup, ramp_end, IBP_STEP_PASSES + extra), (ramp_end, 1.0, IBP_STEP_PASSES))
        if end <= start:
            return next((cost for lo, hi, cost in phases if lo <= start < hi), IBP_STEP_PASSES)
        return sum(max(0.0, min(end, hi) - max(start, lo)) * cost for lo, hi, cost in phases) / (end - start)
    if regime.kind in ("trades", "mart"):  # k steps, the adversarial pass and the clean pass
        return regime.steps + 2
    return 1 + (regime.steps if regime.kind == "pgd" else 1)


class LevelRun:
    """Trains `model` (its prunable `weights` under `mask`) for one level, an epoch at a time.

    It reads the level's spec and nothing else of the trial (trainers/level_spec.py): its recipe, its
    evaluation, its augmentation, its random stream; `data` is the spec's task and `fastpath` its
    arithmetic. The model starts from whatever weights it holds; the run owns its optimiser, its random
    stream, the shuffling and augmentation generators and the guard, and `state_dict()` captures all
    of them with the weights, so a level continues from its last epoch on any machine.
    """

    def __init__(self, level: LevelSpec, model: nn.Module, forward: nn.Module, weights: dict[str, nn.Parameter],
                 mask: Mask, data: DataBundle, fastpath: FastPath):
        self.level, self.recipe, self.evaluation = level, level.recipe, level.evaluation
        self.model, self.forward, self.data, self.fastpath = model, forward, data, fastpath
        recipe, seed = level.recipe, level.seed_of_stream
        self.device = data.train_x.device
        self.mask = mask
        self.sparsity = mask.sparsity()
        self.apply_mask = MaskApplier(weights, mask)
        self.apply_mask()
        info = data.info
        self.augmentation = Augmentation(info.crop_padding, info.flip) if level.augment else Augmentation(0, False)
        self.random = RandomStream(seed, self.device)
        self.shuffle = torch.Generator().manual_seed(seed)
        self.augment_rng = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.steps_per_epoch = batches_per_epoch(data.train_x.shape[0], recipe.batch_size)
        self.round_steps = self.steps_per_epoch * recipe.epochs  # certified training's schedules run over these
        self.epoch = recipe.first_epoch
        self.step = recipe.first_epoch * self.steps_per_epoch
        self.records: list[EpochRecord] = []
        self.status = "running"  # running | completed | diverged
        self.optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay,
                                         nesterov=recipe.nesterov and recipe.momentum > 0)
        self.guard = OverfittingGuard(self.evaluation.guard, self.evaluation.attack)
        self.attacks: dict[AttackConfig, Any] = {}
        # The best validation robust accuracy's weights (Rice et al. 2020: robust overfitting).
        self.best: dict[str, Any] | None = None
        self.resumed_from = 0  # the epoch an interrupted level continued from (0: trained in one go)

    @property
    def done(self) -> bool:
        return self.status != "running"

    def attack(self, regime: AttackConfig) -> Any:
        if regime not in self.attacks:
            self.attacks[regime] = build_attack(self.forward, regime, self.data.info.num_classes, "attack",
                                                fold_batchnorm=self.fastpath.fold_batchnorm)
        return self.attacks[regime]

    def run_epoch(self) -> EpochRecord:
        """Train and validate one epoch; `status` leaves "running" after the level's last one."""
        with self.random.active():
            return self._run_epoch()

    def _run_epoch(self) -> EpochRecord:
        recipe, evaluation = self.recipe, self.evaluation
        result = train_epoch(
            self.forward, self.optimizer, self.data.train_x, self.data.train_y,
            batch_size=recipe.batch_size, attack=self.attack(recipe.regime), after_step=self.apply_mask,
            lr_for_step=lambda step: lr_at(step, steps_per_epoch=self.steps_per_epoch, epochs=recipe.epochs,
                                           base_lr=recipe.lr, schedule=recipe.schedule),
            first_step=self.step, shuffle=self.shuffle, augmentation=self.augmentation,
            augment_generator=self.augment_rng, fastpath=self.fastpath, round_steps=self.round_steps,
        )
        self.epoch += 1
        self.step += result.steps
        share = (self.step - result.steps) / self.round_steps, self.step / self.round_steps
        passes = float(result.examples * passes_per_example(recipe.regime, *share))
        if not math.isfinite(result.loss):
            self.status = "diverged"
            return self._record(result, passes, NAN, NAN, 0.0, 0.0, (NAN, False, ""))
        start = time.perf_counter()  # the guard's PGD check counts as evaluation time
        guard = self.guard.after_epoch(
            recipe.regime, model=self.model, optimizer=self.optimizer, forward=self.forward,
            attack_for=self.attack, images=self.data.train_x, labels=self.data.train_y, fastpath=self.fastpath)
        first = evaluation.offset
        n = min(evaluation.examples, self.data.val_x.shape[0] - first)
        val_x, val_y = self.data.val_x[first:first + n], self.data.val_y[first:first + n]
        accuracy = evaluate(self.forward, val_x, val_y, self.attack(evaluation.attack),
                            batch_size=evaluation.batch_size, fastpath=self.fastpath)
        eval_passes = float(n * (1 + (evaluation.attack.steps if is_adversarial(evaluation.attack) else 0)))
        certified = NAN
        if evaluation.certified_eps is not None:
            # IBP on the model itself (fp32, unfolded): its bound pass costs about one more pass.
            certified = certified_accuracy(self.model, to_float(val_x), val_y, evaluation.certified_eps,
                                           "ibp", batch_size=evaluation.batch_size)
            eval_passes += n
        record = self._record(result, passes, accuracy.clean, accuracy.robust, time.perf_counter() - start,
                              eval_passes, guard, certified)
        if self.best is None or accuracy.robust > self.best["val_robust_acc"]:
            self.best = {"epoch": self.epoch, "val_robust_acc": accuracy.robust, "weights": snapshot(self.model)}
        fired, action = guard[1], guard[2]
        stalled = evaluation.patience is not None and self.epoch - self.best["epoch"] >= evaluation.patience
        if self.epoch >= recipe.epochs or (fired and action != "record") or stalled:
            self.status = "completed"
        return record

    def _record(self, result, passes: float, clean: float, robust: float, eval_seconds: float, eval_passes: float,
                guard: tuple[float, bool, str], certified: float = NAN) -> EpochRecord:
        so_far = [r.val_robust_acc for r in self.records] + [robust]
        record = EpochRecord(
            round=0, phase="", epoch=self.epoch, global_epoch=len(self.records) + 1, sparsity=self.sparsity,
            regime=self.recipe.regime.describe(), lr=result.last_lr, train_loss=result.loss,
            train_acc=result.accuracy, val_clean_acc=clean, val_robust_acc=robust,
            robust_auc=sum(so_far) / len(so_far), epoch_seconds=result.seconds, eval_seconds=eval_seconds,
            examples_per_second=result.examples / result.seconds if result.seconds > 0 else NAN,
            guard_robust_acc=guard[0], guard_fired=guard[1], guard_action=guard[2],
            passes=passes, eval_passes=eval_passes, val_certified_acc=certified)
        self.records.append(record)
        return record

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"model": snapshot(self.model), "optimizer": self.optimizer.state_dict(),
                "mask": self.mask.state_dict(), "epoch": self.epoch, "step": self.step, "status": self.status,
                "records": [r.as_dict() for r in self.records], "best": self.best,
                "rng": {**self.random.state_dict(), "shuffle": self.shuffle.get_state(),
                        "augment": self.augment_rng.get_state()},
                "guard": self.guard.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step, self.status = state["epoch"], state["step"], state["status"]
        self.resumed_from = self.epoch
        self.records = [EpochRecord.from_dict(r) for r in state["records"]]
        self.best = state["best"]
        rng = state["rng"]
        self.random.load_state_dict(rng)
        self.shuffle.set_state(rng["shuffle"])
        self.augment_rng.set_state(rng["augment"])
        self.guard.load_state_dict(state["guard"])


def evaluate_test_split(model: nn.Module, data: DataBundle, config: TrialConfig, prefix: str = "test_") -> dict[str, float]:
    """The test split's figures for `model` as it is: clean, under attack.eval, (when on) AutoAttack and
    (with a certify section) certified accuracy.

    Computed in fp32 on the model itself (no folded batch norms, no compiled wrapper, no autocast), so
    a reported number does not depend on the fast path that trained it, and under a fixed seed, so the
    same weights get the same figures whoever evaluates them.
    """
    if not config.trainer.test_eval:
        return {}
    device = data.test_x.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        return _test_figures(model, data, config, prefix)


def _test_figures(model: nn.Module, data: DataBundle, config: TrialConfig, prefix: str) -> dict[str, float]:
    n = config.train.test_examples or data.test_x.shape[0]
    x, y = data.test_x[:n], data.test_y[:n]
    fp32 = FastPath(data.test_x.device.type)
    classes, batch = data.info.num_classes, config.train.eval_batch_size
    accuracy = evaluate(model, x, y, build_attack(model, config.attack.eval, classes, "attack.eval"),
                        batch_size=batch, fastpath=fp32)
    out = {f"{prefix}clean_acc": accuracy.clean, f"{prefix}robust_acc": accuracy.robust, f"{prefix}examples": float(n)}
    if config.attack.test_autoattack:
        auto = config.attack.eval.model_copy(update={"kind": "autoattack"})
        attack = build_attack(model, auto, classes, "attack.eval")
        out[f"{prefix}autoattack_acc"] = evaluate(model, x, y, attack, batch_size=batch, fastpath=fp32).robust
    certify = config.certify
    if certify is not None:
        m = min(certify.examples or n, n)  # the first of the tested images: certified <= robust <= clean on them
        out[f"{prefix}certified_acc"] = certified_accuracy(model, to_float(x[:m]), y[:m], certify.eps, certify.method,
                                                           batch_size=batch)
        out[f"{prefix}certified_examples"] = float(m)
    return out


def stamp(records: list[EpochRecord], *, round_: int, phase: str, first_global: int, reused: bool) -> list[EpochRecord]:
    """A level's records as they appear in one trial: its round, phase, global epochs, reused or not."""
    return [replace(r, round=round_, phase=phase, global_epoch=first_global + i, reused=reused)
            for i, r in enumerate(records)]


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
