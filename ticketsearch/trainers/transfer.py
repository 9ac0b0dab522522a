"""Transfer: double-win tickets of a pre-trained network (Chen et al. 2022), one epoch at a time.

A trial takes dense pre-trained weights (`transfer.pretrained`: a file, torchvision's published
weights, or pre-training on `transfer.source`), a mask (`transfer.ticket`: IMP on the source task
rewinding to the pre-trained weights, one-shot magnitude pruning, a random mask, or a previous
search's ticket), replaces the classifier for the downstream task (`data`, any `fraction`) and
fine-tunes the ticket under each regime of `transfer.finetune`, every regime from the same start:
`standard` (natural training at `transfer.standard_lr`) and `adversarial` (`attack.train` at
`train.lr`). Masks are re-applied after every optimiser step. Each epoch yields an `EpochRecord` on
the downstream validation split (phase `finetune_standard` or `finetune_adversarial`); each regime's
ticket is tested once at its end.

The reference is the dense pre-trained network fine-tuned the same way. The ticket is a double win
when, under every regime, its standard and robust accuracy are each within `transfer.tolerance` of
the dense network's. Work that trials share (pre-training, each round of IMP on the source task, the
dense baseline) is computed once per distinct setting through `shared_cache`, keyed by exactly what
it depends on; it is not counted among a trial's epochs (its records stay in the cache files).

Drive it like `IMPTrainer`: iterate, `state_dict()` between records, `TransferTrainer(config,
state=...)` to continue. It never imports Ray.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.checkpoint import load_tensors
from ticketsearch.core.data import DataBundle
from ticketsearch.core.fastpath import FastPath, resolve_fastpath
from ticketsearch.core.loops import Augmentation, batches_per_epoch, evaluate, train_epoch
from ticketsearch.core.models import ImageClassifier, create_model
from ticketsearch.core.pretrained import (
    classifier_keys,
    cpu_copy,
    file_digest,
    fit_weights,
    load_weights_file,
    state_shape,
    torchvision_weights,
)
from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights, random_mask_like
from ticketsearch.core.schedule import lr_at
from ticketsearch.errors import UserError
from ticketsearch.spec import AttackConfig, TrialConfig
from ticketsearch.spec.sections import Schedule
from ticketsearch.trainers.base import EpochTrainer, load_task
from ticketsearch.trainers.guard import OverfittingGuard
from ticketsearch.trainers.random_stream import RandomStream
from ticketsearch.trainers.records import NAN, EpochRecord
from ticketsearch.trainers.shared_cache import shared_value

NATURAL = AttackConfig(kind="natural")
METRICS = ("val_clean_acc", "val_robust_acc", "test_clean_acc", "test_robust_acc")


@dataclass(frozen=True)
class FineTuning:
    name: str  # the record's phase: finetune_standard | finetune_adversarial
    regime: AttackConfig
    lr: float

    @property
    def short(self) -> str:
        return self.name.removeprefix("finetune_")


def plan_finetuning(config: TrialConfig) -> list[FineTuning]:
    transfer = config.transfer
    return [FineTuning("finetune_standard", NATURAL, transfer.standard_lr or config.train.lr) if regime == "standard"
            else FineTuning("finetune_adversarial", config.attack.train, config.train.lr)
            for regime in transfer.finetune]


def planned_epochs(config: TrialConfig) -> int:
    return config.train.epochs * len(config.transfer.finetune)


def summary_defaults(config: TrialConfig) -> dict[str, Any]:
    """Every summary column a transfer trial ends with, at its value before the trial ends (one
    schema for trials.parquet whatever state the trials are in)."""
    regimes = list(config.transfer.finetune)
    numbers = [f"{prefix}{regime}_{metric}" for prefix in ("", "dense_") for regime in regimes for metric in METRICS]
    return {"pretrained": "", "double_win": False, "double_win_split": "", "dense_reused": False,
            **dict.fromkeys(numbers + ["double_win_margin", "double_win_test_margin", "find_seconds"], NAN)}


def double_win(ticket: dict[str, dict[str, float]], dense: dict[str, dict[str, float]], tolerance: float,
               split: str) -> tuple[bool, float]:
    """(verdict, margin): margin is the smallest ticket-minus-dense gap in standard or robust accuracy
    over the regimes, plus the tolerance; the ticket is a double win when it is >= 0 (NaN: not)."""
    gaps = [ticket[regime][f"{split}_{kind}_acc"] - dense[regime][f"{split}_{kind}_acc"]
            for regime in ticket for kind in ("clean", "robust")]
    if not gaps or any(math.isnan(g) for g in gaps):
        return False, NAN
    margin = min(gaps) + tolerance
    return margin >= 0, margin


class TransferTrainer(EpochTrainer):
    def __init__(
        self,
        config: TrialConfig,
        data: DataBundle | None = None,
        *,
        device: str | torch.device = "cpu",
        state: dict[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        dense: bool = False,
        pretrained: tuple[dict[str, Tensor], dict[str, Any]] | None = None,
    ):
        self.config = config
        self.device = torch.device(device)
        self.cache_dir = cache_dir
        self.dense = dense  # the dense baseline: the same fine-tuning with no mask
        self.fastpath = resolve_fastpath(config.train.precision, config.train.compile, self.device)
        self.data = (data if data is not None else load_task(config.data)).to(self.device)
        info = self.data.info
        self.augmentation = Augmentation(info.crop_padding, info.flip) if config.data.augment else Augmentation(0, False)
        self.phases = plan_finetuning(config)
        self.phase_index, self.epoch, self.step = 0, 0, 0
        self.records: list[EpochRecord] = []
        self.results: dict[str, dict[str, float]] = {}  # regime -> the ticket's accuracies at its end
        self.dense_results: dict[str, dict[str, float]] = {}  # regime -> the dense baseline's
        # The dense baseline's own epochs (shared by the trials of its setting): reported beside the trial's.
        self.dense_records: list[EpochRecord] = []
        self.status = "running"
        seed = config.train.seed
        self.random = RandomStream(seed, self.device)
        self.shuffle = torch.Generator().manual_seed(seed)
        self.augment_rng = torch.Generator(device=self.device).manual_seed(seed + 1)
        self._pretrained = pretrained
        if state is None:
            with self.random.active():
                model, mask, self.provenance = self._build_ticket()
        else:
            channels = int(state["model"]["normalize.mean"].shape[1])
            model = self._new_model(info.num_classes, channels)
            mask = None
            self.provenance = dict(state["provenance"])
        self.model = model.to(self.device, memory_format=self.fastpath.memory_format)
        self.forward = self.fastpath.forward_module(self.model)  # the model, or its compiled wrapper
        parameters = dict(self.model.named_parameters())
        mask_state = state["mask"] if state is not None else mask.state_dict()
        self.weights = {name: parameters[name] for name in mask_state}
        self.mask = Mask.from_state_dict(mask_state, self.weights)
        self.sparsity = self.mask.sparsity()
        self.apply_mask = MaskApplier(self.weights, self.mask)
        self.apply_mask()
        self.init_state = _snapshot(self.model)  # the start of every regime: masked pre-trained weights, new head
        self.ticket_state: dict[str, Any] | None = None
        self.optimizer = self._new_optimizer(self.phase.lr)
        self.eval_attack = build_attack(self.forward, config.attack.eval, info.num_classes, "attack.eval",
                                       fold_batchnorm=self.fastpath.fold_batchnorm)
        # FGSM fine-tuning can collapse as FGSM training does; the dense baseline is guarded alike.
        self.guard = OverfittingGuard(config.attack.guard, config.attack.eval)
        if state is not None:
            self.load_state_dict(state)

    # ---------------------------------------------------------------- driving
    @property
    def phase(self) -> FineTuning:
        return self.phases[min(self.phase_index, len(self.phases) - 1)]

    def _next_record(self) -> EpochRecord:
        """Fine-tune and evaluate one epoch; at the end of the last regime, compare with dense."""
        if self.epoch == 0 and self.step == 0:
            self.model.load_state_dict(self.init_state)
            self.optimizer = self._new_optimizer(self.phase.lr)
            self.guard.reset()
        phase, train = self.phase, self.config.train
        steps_per_epoch = batches_per_epoch(self.data.train_x.shape[0], train.batch_size)
        result = train_epoch(
            self.forward, self.optimizer, self.data.train_x, self.data.train_y,
            batch_size=train.batch_size, attack=self._attack(phase.regime), after_step=self.apply_mask,
            lr_for_step=lambda step: lr_at(step, steps_per_epoch=steps_per_epoch, epochs=train.epochs,
                                           base_lr=phase.lr, schedule=train.schedule),
            first_step=self.step, shuffle=self.shuffle, augmentation=self.augmentation,
            augment_generator=self.augment_rng, fastpath=self.fastpath,
        )
        self.epoch += 1
        self.step += result.steps
        if not math.isfinite(result.loss):
            self.status = "diverged"
            return self._record(result, NAN, NAN, 0.0)
        start = time.perf_counter()  # the guard's PGD check counts as evaluation time
        guard_acc, fired, action = self.guard.after_epoch(
            phase.regime, model=self.model, optimizer=self.optimizer, forward=self.forward,
            attack_for=self._attack, images=self.data.train_x, labels=self.data.train_y,
            fastpath=self.fastpath)
        n = min(train.eval_examples, self.data.val_x.shape[0])
        accuracy = evaluate(self.forward, self.data.val_x[:n], self.data.val_y[:n], self.eval_attack,
                            batch_size=train.eval_batch_size, fastpath=self.fastpath)
        record = self._record(result, accuracy.clean, accuracy.robust, time.perf_counter() - start,
                              (guard_acc, fired, action))
        if self.epoch >= train.epochs or (fired and action != "record"):
            self._end_phase(record)
        return record

    def _record(self, result, clean: float, robust: float, eval_seconds: float,
                guard: tuple[float, bool, str] = (NAN, False, "")) -> EpochRecord:
        phase = self.phase
        this_phase = [r.val_robust_acc for r in self.records if r.phase == phase.name]
        record = EpochRecord(
            round=self.provenance.get("ticket_round", 0), phase=phase.name, epoch=self.epoch,
            global_epoch=len(self.records) + 1, sparsity=self.sparsity, regime=phase.regime.describe(),
            lr=result.last_lr, train_loss=result.loss, train_acc=result.accuracy, val_clean_acc=clean,
            val_robust_acc=robust, robust_auc=sum(this_phase + [robust]) / (len(this_phase) + 1),
            epoch_seconds=result.seconds, eval_seconds=eval_seconds,
            examples_per_second=result.examples / result.seconds if result.seconds > 0 else NAN,
            guard_robust_acc=guard[0], guard_fired=guard[1], guard_action=guard[2],
        )
        self.records.append(record)
        return record

    def _end_phase(self, last: EpochRecord) -> None:
        """Test this regime's ticket once and keep its numbers; after the last regime, compare with dense."""
        self.results[self.phase.short] = {"val_clean_acc": last.val_clean_acc, "val_robust_acc": last.val_robust_acc,
                                          **self._test()}
        self.ticket_state = {"weights": _snapshot(self.model), "mask": self.mask.state_dict()}
        self.phase_index += 1
        self.epoch, self.step = 0, 0
        if self.phase_index >= len(self.phases):
            if not self.dense:
                self._compare_with_dense()
            self.status = "completed"

    def _test(self) -> dict[str, float]:
        config = self.config
        if not config.trainer.test_eval:
            return {"test_clean_acc": NAN, "test_robust_acc": NAN}
        n = config.train.test_examples or self.data.test_x.shape[0]
        x, y = self.data.test_x[:n], self.data.test_y[:n]
        accuracy = evaluate(self.forward, x, y, self.eval_attack, batch_size=config.train.eval_batch_size,
                            fastpath=self.fastpath)
        out = {"test_clean_acc": accuracy.clean, "test_robust_acc": accuracy.robust, "test_examples": float(n)}
        if config.attack.test_autoattack:
            auto = config.attack.eval.model_copy(update={"kind": "autoattack"})
            # AutoAttack runs in fp32 on the uncompiled model: a conservative figure, whatever the fast path.
            attack = build_attack(self.model, auto, self.data.info.num_classes, "attack.eval")
            out["test_autoattack_acc"] = evaluate(self.model, x, y, attack, batch_size=config.train.eval_batch_size,
                                                  fastpath=FastPath(self.device.type)).robust
        return out

    # ---------------------------------------------------------------- the dense reference
    def _compare_with_dense(self) -> None:
        value, reused = shared_value(self.cache_dir, "dense", self._dense_key(), self._run_dense)
        self.dense_results = {regime: dict(numbers) for regime, numbers in value["results"].items()}
        self.dense_records = [EpochRecord.from_dict(r) for r in value["records"]]
        self.provenance["dense_reused"] = reused

    def _run_dense(self) -> dict[str, Any]:
        dense = TransferTrainer(self.config, self.data, device=self.device, dense=True,
                                pretrained=self._pretrained_weights())
        for _ in dense:
            pass
        results = dense.results if dense.status == "completed" else {
            phase.short: dict.fromkeys(METRICS, NAN) for phase in dense.phases}
        return {"results": results, "status": dense.status, "records": [r.as_dict() for r in dense.records]}

    def _dense_key(self) -> dict[str, Any]:
        c = self.config
        return {"pretrained": self._pretrained_key(), "data": c.data.model_dump(mode="json"),
                "model": c.model.model_dump(mode="json"), "train": c.train.model_dump(mode="json"),
                "attack": c.attack.model_dump(mode="json"), "finetune": list(c.transfer.finetune),
                "standard_lr": c.transfer.standard_lr, "test_eval": c.trainer.test_eval}

    # ---------------------------------------------------------------- building the ticket
    def _build_ticket(self) -> tuple[ImageClassifier, Mask, dict[str, Any]]:
        """(downstream model holding the pre-trained weights and a new classifier, mask, provenance)."""
        config = self.config
        state, provenance = self._pretrained_weights()
        channels, source_classes = state_shape(state)
        if self.data.info.channels not in (1, channels):
            raise UserError(f"data.dataset: {config.data.dataset} has {self.data.info.channels} channels; the "
                            f"pre-trained network takes {channels} (or grey images, repeated)")
        model = self._new_model(source_classes, channels)
        fit_weights(model, state, self._weights_field(), f"model.arch {config.model.arch} width {config.model.width:g}")
        if self.dense:
            mask, round_ = Mask.ones(self._prunable(model)), 0
        else:
            mask, round_, found = self._ticket_mask(model, state)
            provenance.update(found)
        provenance["ticket_round"] = round_
        # The new head is drawn from the trial seed alone, so ticket and dense baseline start alike.
        torch.manual_seed(config.train.seed)
        model.replace_classifier(self.data.info.num_classes)
        return model, mask, provenance

    def _ticket_mask(self, model: ImageClassifier, pretrained: dict[str, Tensor]) -> tuple[Mask, int, dict[str, Any]]:
        config, transfer, prune = self.config, self.config.transfer, self.config.prune
        if transfer.ticket == "files":
            return self._ticket_from_files(model)
        weights = self._prunable(model)
        if transfer.ticket == "imp":
            mask_state, records, reused = self._imp_on_source(pretrained)
            mask = Mask.ones(weights) if mask_state is None else Mask.from_state_dict(mask_state, weights)
            return mask, prune.rounds, {
                "find_seconds": sum(r["epoch_seconds"] for r in records),
                "imp_reused": prune.rounds > 0 and reused == prune.rounds, "imp_rounds_reused": reused,
                "source_val_clean_acc": records[-1]["val_clean_acc"] if records else NAN,
                "source_val_robust_acc": records[-1]["val_robust_acc"] if records else NAN}
        oneshot = magnitude_prune(weights, Mask.ones(weights), prune.sparsity_after(prune.rounds), prune.scope)
        if transfer.ticket == "random":
            generator = torch.Generator().manual_seed(config.train.seed)
            return random_mask_like(oneshot, generator), prune.rounds, {}
        return oneshot, prune.rounds, {}

    def _ticket_from_files(self, model: ImageClassifier) -> tuple[Mask, int, dict[str, Any]]:
        directory = Path(self.config.transfer.ticket_dir).expanduser()
        if not (directory / "manifest.json").is_file():
            raise UserError(f"transfer.ticket_dir: {directory} is not a ticket directory (no manifest.json)")
        manifest = json.loads((directory / "manifest.json").read_text())
        theirs, ours = manifest.get("model", {}), self.config.model
        if (theirs.get("arch"), float(theirs.get("width", NAN)), theirs.get("depth")) != (ours.arch, ours.width, ours.depth):
            raise UserError(f"transfer.ticket_dir: the ticket is {theirs.get('arch')} width {theirs.get('width')} "
                            f"depth {theirs.get('depth')}; model here is {ours.arch} width {ours.width:g} depth {ours.depth}")
        state = load_tensors(directory / "mask.pt")
        head = set(classifier_keys(model))
        parameters = dict(model.named_parameters())
        state = {name: m for name, m in state.items() if name not in head}
        unknown = sorted(set(state) - set(parameters))
        if unknown:
            raise UserError(f"transfer.ticket_dir: {directory / 'mask.pt'} masks {unknown[0]}, which the model has not")
        mask = Mask.from_state_dict(state, {name: parameters[name] for name in state})
        rounds = int(manifest.get("config", {}).get("prune", {}).get("rounds", 0))
        return mask, rounds, {"ticket_sparsity_in_source": float(manifest.get("sparsity", NAN))}

    def _imp_on_source(self, pretrained: dict[str, Tensor]) -> tuple[dict[str, Tensor] | None, list[dict], int]:
        """IMP on the source task from the pre-trained weights, rewinding to them every round: (the mask
        after prune.rounds rounds, None for no round; every round's records; how many rounds came from
        the cache). Each round is a shared value of its own, keyed by the rounds before it, so trials
        that prune to different depths share the rounds they have in common: a grid over sparsity
        costs one IMP path, not one per sparsity."""
        mask_state, records, reused = None, [], 0
        setup = functools.cache(lambda: self._imp_setup(pretrained))  # data and network: only if a round runs here
        for round_ in range(self.config.prune.rounds):
            value, was_reused = shared_value(
                self.cache_dir, "imp", self._imp_key(round_),
                lambda r=round_, before=mask_state: self._imp_round(*setup(), pretrained, before, r))
            mask_state, records, reused = value["mask"], records + value["records"], reused + was_reused
        return mask_state, records, reused

    def _imp_setup(self, pretrained: dict[str, Tensor]) -> tuple[DataBundle, ImageClassifier, dict[str, nn.Parameter]]:
        """(source task on the device, the source network, its prunable weights)."""
        transfer = self.config.transfer
        source = load_task(transfer.source).to(self.device)
        channels, classes = state_shape(pretrained)
        if classes != source.info.num_classes:
            raise UserError(f"transfer.source: the pre-trained classifier has {classes} classes, "
                            f"{transfer.source.dataset} has {source.info.num_classes}; IMP runs on the task it was trained on")
        model = self._new_model(classes, channels)
        model.load_state_dict(pretrained)
        model = model.to(self.device, memory_format=self.fastpath.memory_format)
        return source, model, self._prunable(model)

    def _imp_round(self, source: DataBundle, model: ImageClassifier, weights: dict[str, nn.Parameter],
                   pretrained: dict[str, Tensor], before: dict[str, Tensor] | None, round_: int) -> dict[str, Any]:
        """One IMP round: rewind to the pre-trained weights under the mask `before`, train, prune."""
        config, prune, train = self.config, self.config.prune, self.config.train
        mask = Mask.ones(weights) if before is None else Mask.from_state_dict(before, weights)
        # Its own random stream, seeded by the round alone: the value is shared, so it must not depend
        # on who computes it or on which earlier rounds came from the cache.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(train.seed + round_)
            model.load_state_dict(pretrained)
            apply = MaskApplier(weights, mask)
            apply()
            optimizer = _sgd(model, prune.find_lr or train.lr, train.momentum, train.weight_decay, train.nesterov)
            records = run_epochs(model, optimizer, source, config, phase="find", round_=round_,
                                 sparsity=mask.sparsity(), regime=prune.find_with or NATURAL,
                                 epochs=config.find_epochs, lr=prune.find_lr or train.lr, schedule=train.schedule,
                                 batch_size=train.batch_size, after_step=apply, seed=train.seed + round_,
                                 fastpath=self.fastpath)
            mask = magnitude_prune(weights, mask, prune.ratio, prune.scope)
        return {"mask": mask.state_dict(), "records": [r.as_dict() for r in records]}

    def _imp_key(self, round_: int) -> dict[str, Any]:
        """What IMP's round `round_` (0-based) depends on: everything IMP reads except prune.rounds."""
        c = self.config
        t = c.train
        return {"pretrained": self._pretrained_key(), "source": c.transfer.source.model_dump(mode="json"),
                "model": c.model.model_dump(mode="json"),
                "prune": c.prune.model_dump(mode="json", exclude={"control", "rounds"}), "round": round_,
                "prune_linear": c.transfer.prune_linear,
                "epochs": c.find_epochs, "lr": c.prune.find_lr or t.lr,
                "train": t.model_dump(mode="json", exclude={"epochs", "lr", "test_examples"}),
                "eval": c.attack.eval.model_dump(mode="json")}

    def _prunable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Conv weights (and hidden linear ones with prune_linear) less prune.exclude; never the head."""
        weights = prunable_weights(model, ("classifier", *self.config.prune.exclude))
        if self.config.transfer.prune_linear:
            return weights
        return {name: w for name, w in weights.items() if w.dim() == 4}

    # ---------------------------------------------------------------- pre-trained weights
    def _pretrained_weights(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """(the dense pre-trained state dict on the CPU, where it came from)."""
        if self._pretrained is not None:
            return self._pretrained[0], dict(self._pretrained[1])
        source = self.config.transfer.pretrained
        if source.file is not None:
            state, described = load_weights_file(source.file, "transfer.pretrained.file"), f"file:{source.file}"
            extra: dict[str, Any] = {}
        elif source.torchvision is not None:
            state = torchvision_weights(self.config.model.arch, source.torchvision, "transfer.pretrained.torchvision")
            described, extra = f"torchvision:{self.config.model.arch}.{source.torchvision}", {}
        else:
            value, reused = shared_value(self.cache_dir, "pretrain", self._pretrained_key(), self._pretrain)
            records = value["records"]
            state, described = value["model"], f"pretrain:{self.config.transfer.source.dataset}"
            extra = {"pretrain_reused": reused, "pretrain_seconds": sum(r["epoch_seconds"] for r in records),
                     "pretrain_val_clean_acc": records[-1]["val_clean_acc"],
                     "pretrain_val_robust_acc": records[-1]["val_robust_acc"]}
        self._pretrained = (state, {"pretrained": described, **extra})
        return self._pretrained[0], dict(self._pretrained[1])

    def _pretrained_key(self) -> dict[str, Any]:
        c = self.config
        source = c.transfer.pretrained
        if source.file is not None:
            return {"file_sha256": file_digest(source.file)}
        if source.torchvision is not None:
            return {"torchvision": f"{c.model.arch}.{source.torchvision}"}
        return {"pretrain": source.pretrain.model_dump(mode="json"), "source": c.transfer.source.model_dump(mode="json"),
                "model": c.model.model_dump(mode="json"), "eval": c.attack.eval.model_dump(mode="json"),
                "eval_examples": c.train.eval_examples}

    def _pretrain(self) -> dict[str, Any]:
        """Train the network from scratch on the source task (seeded by pretrain.seed)."""
        config, pretrain = self.config, self.config.transfer.pretrained.pretrain
        source = load_task(config.transfer.source).to(self.device)
        info = source.info
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(pretrain.seed)
            model = self._new_model(info.num_classes, info.channels, info.mean, info.std).to(
                self.device, memory_format=self.fastpath.memory_format)
            optimizer = _sgd(model, pretrain.lr, pretrain.momentum, pretrain.weight_decay, False)
            records = run_epochs(model, optimizer, source, config, phase="pretrain", round_=0, sparsity=0.0,
                                 regime=pretrain.regime, epochs=pretrain.epochs, lr=pretrain.lr,
                                 schedule=pretrain.schedule, batch_size=pretrain.batch_size,
                                 after_step=lambda: None, seed=pretrain.seed, fastpath=self.fastpath)
        return {"model": cpu_copy(model.state_dict()), "records": [r.as_dict() for r in records]}

    def _weights_field(self) -> str:
        source = self.config.transfer.pretrained
        return f"transfer.pretrained.file {source.file}" if source.file else "transfer.pretrained"

    # ---------------------------------------------------------------- pieces
    def _new_model(self, num_classes: int, channels: int, mean=None, std=None) -> ImageClassifier:
        m = self.config.model
        return create_model(m.arch, width=m.width, depth=m.depth, num_classes=num_classes, in_channels=channels,
                            mean=mean or (0.0,) * channels, std=std or (1.0,) * channels, input_size=m.input_size)

    def _new_optimizer(self, lr: float) -> torch.optim.Optimizer:
        t = self.config.train
        return _sgd(self.model, lr, t.momentum, t.weight_decay, t.nesterov)

    # ---------------------------------------------------------------- results
    def summary(self) -> dict[str, Any]:
        """Trial-level numbers: the IMP trainer's columns where they apply, per-regime accuracies of the
        ticket and of the dense network, and the double-win verdict."""
        last = self.records[-1] if self.records else None
        this_phase = [r for r in self.records if last is not None and r.phase == last.phase]
        out: dict[str, Any] = {
            "status": self.status,
            "epochs_trained": len(self.records),
            "train_seconds": sum(r.epoch_seconds for r in self.records),
            "eval_seconds": sum(r.eval_seconds for r in self.records),
            "final_round": last.round if last else 0,
            "final_sparsity": self.sparsity,
            "final_val_clean_acc": last.val_clean_acc if last else NAN,
            "final_val_robust_acc": last.val_robust_acc if last else NAN,
            "best_val_robust_acc": max((r.val_robust_acc for r in this_phase), default=NAN),
            "robust_auc": last.robust_auc if last else NAN,
            "guard_fired": any(r.guard_fired for r in self.records),
            **{k: v for k, v in self.provenance.items() if k != "ticket_round"},
        }
        for regime, numbers in self.results.items():
            out.update({f"{regime}_{k}": v for k, v in numbers.items() if k in METRICS})
        for regime, numbers in self.dense_results.items():
            out.update({f"dense_{regime}_{k}": v for k, v in numbers.items() if k in METRICS})
        if self.results:  # the last regime's test numbers fill the columns every trainer has
            final = self.results[self.phases[-1].short] if self.phases[-1].short in self.results else {}
            out.update({k: v for k, v in final.items() if k.startswith("test_")})
        if self.dense_results and len(self.results) == len(self.phases):
            tolerance = self.config.transfer.tolerance
            _, out["double_win_margin"] = double_win(self.results, self.dense_results, tolerance, "val")
            split = "test" if self.config.trainer.test_eval else "val"
            out["double_win"], out["double_win_test_margin"] = double_win(self.results, self.dense_results, tolerance, split)
            out["double_win_split"] = split
        return out

    def sparsity_report(self):
        return self.mask.report()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "config_hash": self.config.content_hash(),
            "model": _snapshot(self.model),
            "optimizer": self.optimizer.state_dict(),
            "mask": self.mask.state_dict(),
            "init": self.init_state,
            "rewind": None,
            "ticket": self.ticket_state,
            "position": {"phase_index": self.phase_index, "epoch": self.epoch, "step": self.step, "status": self.status},
            "records": [r.as_dict() for r in self.records],
            "results": self.results,
            "dense_results": self.dense_results,
            "dense_records": [r.as_dict() for r in self.dense_records],
            "provenance": self.provenance,
            "rng": {**self.random.state_dict(), "shuffle": self.shuffle.get_state(), "augment": self.augment_rng.get_state()},
            "guard": self.guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init_state = {k: v.to(self.device) for k, v in state["init"].items()}
        self.model.load_state_dict(state["model"])
        self.ticket_state = state["ticket"]
        position = state["position"]
        self.phase_index, self.epoch, self.step = position["phase_index"], position["epoch"], position["step"]
        self.status = position["status"]
        self.optimizer = self._new_optimizer(self.phase.lr)
        self.optimizer.load_state_dict(state["optimizer"])
        self.records = [EpochRecord.from_dict(r) for r in state["records"]]
        self.results = {k: dict(v) for k, v in state["results"].items()}
        self.dense_results = {k: dict(v) for k, v in state["dense_results"].items()}
        self.dense_records = [EpochRecord.from_dict(r) for r in state.get("dense_records", [])]
        self.guard.load_state_dict(state["guard"])
        rng = state["rng"]
        self.random.load_state_dict(rng)
        self.shuffle.set_state(rng["shuffle"])
        self.augment_rng.set_state(rng["augment"])


def run_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, data: DataBundle, config: TrialConfig, *,
               phase: str, round_: int, sparsity: float, regime: AttackConfig, epochs: int, lr: float,
               schedule: Schedule, batch_size: int, after_step: Callable[[], None], seed: int,
               fastpath: FastPath) -> list[EpochRecord]:
    """Train `epochs` epochs on `data` (the source task: pre-training, IMP) with one record each."""
    info = data.info
    attack = build_attack(model, regime, info.num_classes, "attack", fold_batchnorm=fastpath.fold_batchnorm)
    eval_attack = build_attack(model, config.attack.eval, info.num_classes, "attack.eval",
                               fold_batchnorm=fastpath.fold_batchnorm)
    augmentation = Augmentation(info.crop_padding, info.flip)
    shuffle = torch.Generator().manual_seed(seed)
    augment_rng = torch.Generator(device=data.train_x.device).manual_seed(seed + 1)
    steps_per_epoch = batches_per_epoch(data.train_x.shape[0], batch_size)
    records: list[EpochRecord] = []
    step = 0
    n = min(config.train.eval_examples, data.val_x.shape[0])
    for epoch in range(1, epochs + 1):
        result = train_epoch(model, optimizer, data.train_x, data.train_y, batch_size=batch_size, attack=attack,
                             after_step=after_step, first_step=step, shuffle=shuffle, augmentation=augmentation,
                             lr_for_step=lambda s: lr_at(s, steps_per_epoch=steps_per_epoch, epochs=epochs,
                                                         base_lr=lr, schedule=schedule),
                             augment_generator=augment_rng, fastpath=fastpath)
        step += result.steps
        if not math.isfinite(result.loss):
            raise UserError(f"{phase} on {info.name} diverged (loss {result.loss}) in epoch {epoch}; lower its lr")
        start = time.perf_counter()
        accuracy = evaluate(model, data.val_x[:n], data.val_y[:n], eval_attack,
                            batch_size=config.train.eval_batch_size, fastpath=fastpath)
        previous = [r.val_robust_acc for r in records]
        records.append(EpochRecord(
            round=round_, phase=phase, epoch=epoch, global_epoch=epoch, sparsity=sparsity, regime=regime.describe(),
            lr=result.last_lr, train_loss=result.loss, train_acc=result.accuracy, val_clean_acc=accuracy.clean,
            val_robust_acc=accuracy.robust, robust_auc=(sum(previous) + accuracy.robust) / (len(previous) + 1),
            epoch_seconds=result.seconds, eval_seconds=time.perf_counter() - start,
            examples_per_second=result.examples / result.seconds if result.seconds > 0 else NAN,
            guard_robust_acc=NAN, guard_fired=False, guard_action=""))
    return records


def _sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0)


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
