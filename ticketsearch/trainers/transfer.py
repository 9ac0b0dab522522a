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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ticketsearch.core.attacks import ATTACKS
from ticketsearch.core.checkpoint import load_tensors
from ticketsearch.core.data import DATASETS, DataBundle, task_info
from ticketsearch.core.fastpath import resolve_fastpath
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
from ticketsearch.errors import UserError
from ticketsearch.spec import AttackConfig, TrialConfig
from ticketsearch.trainers.engine import load_task
from ticketsearch.trainers.engine import LevelRun, Recipe, evaluate_test_split, snapshot, stamp
from ticketsearch.trainers.levels import Level, LevelStore, SaveProgress, train_level
from ticketsearch.records import NAN, EpochRecord, path_summary

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


class TransferTrainer:
    def __init__(
        self,
        config: TrialConfig,
        data: DataBundle | None = None,
        *,
        device: str | torch.device = "cpu",
        state: dict[str, Any] | None = None,
        levels: LevelStore | None = None,
        dense: bool = False,
        pretrained: tuple[dict[str, Tensor], dict[str, Any]] | None = None,
    ):
        self.config = config
        self.device = torch.device(device)
        self.store = levels or LevelStore(None)
        self.dense = dense  # the dense baseline: the same fine-tuning with no mask
        self.fastpath = resolve_fastpath(config.train.precision, config.train.compile, self.device)
        self.data = (data if data is not None else load_task(config.data)).to(self.device)
        info = self.data.info
        self.phases = plan_finetuning(config)
        self.phase_index = 0
        self.run: LevelRun | None = None  # the regime being fine-tuned
        self.records: list[EpochRecord] = []
        self.results: dict[str, dict[str, float]] = {}  # regime -> the ticket's accuracies at its end
        self.dense_results: dict[str, dict[str, float]] = {}  # regime -> the dense baseline's
        # The dense baseline's own epochs (shared by the trials of its setting): reported beside the trial's.
        self.dense_records: list[EpochRecord] = []
        self.status = "running"
        self._pretrained = pretrained
        # Epochs, seconds and passes of the shared levels this trial used (pre-training, IMP on the
        # source, the dense fine-tuning), split by who trained them.
        self.level_cost = dict.fromkeys((f"{who}_{unit}" for who in ("trained", "reused")
                                         for unit in ("epochs", "seconds", "passes")), 0.0)
        if state is None:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                model, mask, self.provenance = self._build_ticket()
        else:
            channels = int(state["init"]["normalize.mean"].shape[1])
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
        MaskApplier(self.weights, self.mask)()
        self.init_state = snapshot(self.model)  # the start of every regime: masked pre-trained weights, new head
        self.ticket_state: dict[str, Any] | None = None
        if state is not None:
            self.load_state_dict(state)

    # ---------------------------------------------------------------- driving
    @property
    def done(self) -> bool:
        return self.status != "running"

    @property
    def phase(self) -> FineTuning:
        return self.phases[min(self.phase_index, len(self.phases) - 1)]

    def __iter__(self):
        while not self.done:
            yield self.next_record()

    @property
    def ticket_epoch(self) -> int:
        """Epochs of the ticket fine-tuned so far, every regime counted."""
        return len(self.records)

    def _start_regime(self) -> LevelRun:
        """Fine-tuning under the current regime, from the masked pre-trained weights; the seed depends
        on the regime alone, so the ticket and the dense baseline draw the same batches."""
        phase, train = self.phase, self.config.train
        self.model.load_state_dict(self.init_state)
        recipe = Recipe.of(self.config, phase.regime, train.epochs, phase.lr)
        return LevelRun(self.model, self.forward, self.weights, self.mask, self.data, recipe, self.config,
                        seed=train.seed + 1000 * self.phase_index, fastpath=self.fastpath,
                        augment=self.config.data.augment)

    def next_record(self) -> EpochRecord:
        """Fine-tune and evaluate one epoch; at the end of the last regime, compare with dense."""
        if self.done:
            raise StopIteration
        if self.run is None:
            self.run = self._start_regime()
        record = stamp([self.run.run_epoch()], round_=self.provenance.get("ticket_round", 0), phase=self.phase.name,
                       first_global=len(self.records) + 1, reused=False)[0]
        self.records.append(record)
        if self.run.status == "diverged":
            self.status = "diverged"
        elif self.run.done:
            self._end_phase(record)
        return record

    def _end_phase(self, last: EpochRecord) -> None:
        """Test this regime's ticket once and keep its numbers; after the last regime, compare with dense."""
        self.results[self.phase.short] = {"val_clean_acc": last.val_clean_acc, "val_robust_acc": last.val_robust_acc,
                                          **evaluate_test_split(self.model, self.data, self.config)}
        self.ticket_state = {"weights": snapshot(self.model), "mask": self.mask.state_dict()}
        self.phase_index += 1
        self.run = None
        if self.phase_index >= len(self.phases):
            if not self.dense:
                self._compare_with_dense()
            self.status = "completed"

    # ---------------------------------------------------------------- the dense reference
    def _compare_with_dense(self) -> None:
        value, reused = train_level(self.store, Level("finetune_dense", self._dense_key()), self._run_dense)
        self.dense_results = {regime: dict(numbers) for regime, numbers in value["results"].items()}
        self.dense_records = [EpochRecord.from_dict(r) for r in value["records"]]
        self.provenance["dense_reused"] = reused
        _count(self.level_cost, value["records"], reused)

    def _run_dense(self, progress: dict[str, Any] | None, save_progress: SaveProgress) -> dict[str, Any]:
        dense = TransferTrainer(self.config, self.data, device=self.device, dense=True, state=progress,
                                pretrained=self._pretrained_weights())
        for _ in dense:
            save_progress(dense.state_dict)
        results = dense.results if dense.status == "completed" else {
            phase.short: dict.fromkeys(METRICS, NAN) for phase in dense.phases}
        return {"results": results, "status": dense.status, "records": [r.as_dict() for r in dense.records]}

    def _dense_key(self) -> dict[str, Any]:
        c = self.config
        return {"pretrained": self._pretrained_key(), "data": c.data.model_dump(mode="json"),
                "model": c.model.model_dump(mode="json"), "train": c.train.model_dump(mode="json"),
                "attack": c.attack.model_dump(mode="json"), "finetune": list(c.transfer.finetune),
                "standard_lr": c.transfer.standard_lr, "test_eval": c.trainer.test_eval,
                **({"certify": c.certify.model_dump(mode="json")} if c.certify else {})}

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
        oneshot = magnitude_prune(weights, Mask.ones(weights), prune.sparsity_after(prune.rounds), prune.scope,
                                  allow_empty_layers=prune.allow_empty_layers)
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
            value, was_reused = train_level(
                self.store, Level("source_imp", self._imp_key(round_)),
                lambda progress, save, r=round_, before=mask_state: self._imp_round(
                    *setup(), pretrained, before, r, progress, save))
            mask_state, records, reused = value["mask"], records + value["records"], reused + was_reused
            _count(self.level_cost, value["records"], was_reused)
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
                   pretrained: dict[str, Tensor], before: dict[str, Tensor] | None, round_: int,
                   progress: dict[str, Any] | None, save_progress: SaveProgress) -> dict[str, Any]:
        """One IMP round: rewind to the pre-trained weights under the mask `before`, train, prune. Its
        random stream is seeded by the round alone: the level is shared, so it must not depend on who
        trains it or on which earlier rounds were reused."""
        config, prune, train = self.config, self.config.prune, self.config.train
        mask = Mask.ones(weights) if before is None else Mask.from_state_dict(before, weights)
        model.load_state_dict(pretrained)
        recipe = Recipe.of(config, prune.find_with or NATURAL, config.find_epochs, prune.find_lr or train.lr)
        run = LevelRun(model, model, weights, mask, source, recipe, config, seed=train.seed + round_,
                       fastpath=self.fastpath, augment=config.transfer.source.augment)
        records = run.train_to_end(progress, save_progress, what=f"IMP round {round_} on {source.info.name}")
        mask = magnitude_prune(weights, mask, prune.ratio, prune.scope, allow_empty_layers=prune.allow_empty_layers)
        return {"mask": mask.state_dict(),
                "records": [r.as_dict() for r in stamp(records, round_=round_, phase="find", first_global=1, reused=False)]}

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
            value, reused = train_level(self.store, Level("pretrain", self._pretrained_key()), self._pretrain)
            records = value["records"]
            _count(self.level_cost, records, reused)
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
                "eval_examples": c.train.eval_examples,
                **({"eval_offset": c.train.eval_offset} if c.train.eval_offset else {})}

    def _pretrain(self, progress: dict[str, Any] | None, save_progress: SaveProgress) -> dict[str, Any]:
        """Train the network from scratch on the source task (seeded by pretrain.seed)."""
        config, pretrain = self.config, self.config.transfer.pretrained.pretrain
        source = load_task(config.transfer.source).to(self.device)
        info = source.info
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(pretrain.seed)
            model = self._new_model(info.num_classes, info.channels, info.mean, info.std).to(
                self.device, memory_format=self.fastpath.memory_format)
        recipe = Recipe(pretrain.regime, pretrain.epochs, pretrain.lr, pretrain.schedule, pretrain.batch_size,
                        pretrain.momentum, pretrain.weight_decay, False)
        weights = prunable_weights(model)
        run = LevelRun(model, model, weights, Mask.ones(weights), source, recipe, config, seed=pretrain.seed,
                       fastpath=self.fastpath, augment=config.transfer.source.augment)
        records = run.train_to_end(progress, save_progress, what=f"pre-training on {info.name}")
        return {"model": cpu_copy(model.state_dict()),
                "records": [r.as_dict() for r in stamp(records, round_=0, phase="pretrain", first_global=1, reused=False)]}

    def _weights_field(self) -> str:
        source = self.config.transfer.pretrained
        return f"transfer.pretrained.file {source.file}" if source.file else "transfer.pretrained"

    # ---------------------------------------------------------------- pieces
    def _new_model(self, num_classes: int, channels: int, mean=None, std=None) -> ImageClassifier:
        m = self.config.model
        return create_model(m.arch, width=m.width, depth=m.depth, num_classes=num_classes, in_channels=channels,
                            mean=mean or (0.0,) * channels, std=std or (1.0,) * channels, input_size=m.input_size)

    # ---------------------------------------------------------------- results
    def summary(self) -> dict[str, Any]:
        """Trial-level numbers: the IMP trainer's columns where they apply, per-regime accuracies of the
        ticket and of the dense network, and the double-win verdict."""
        out: dict[str, Any] = {"status": self.status, **path_summary(self.records),
                               **{k: v for k, v in self.provenance.items() if k != "ticket_round"}}
        for key, value in self.level_cost.items():  # the shared levels' epochs: trained here or reused
            out[key] += value
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
            "mask": self.mask.state_dict(),
            "init": self.init_state,
            "rewind": None,
            "ticket": self.ticket_state,
            "position": {"phase_index": self.phase_index, "status": self.status},
            "run": None if self.run is None else self.run.state_dict(),
            "records": [r.as_dict() for r in self.records],
            "results": self.results,
            "dense_results": self.dense_results,
            "dense_records": [r.as_dict() for r in self.dense_records],
            "provenance": self.provenance,
            "level_cost": self.level_cost,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init_state = {k: v.to(self.device) for k, v in state["init"].items()}
        self.model.load_state_dict(self.init_state)
        self.ticket_state = state["ticket"]
        position = state["position"]
        self.phase_index, self.status = position["phase_index"], position["status"]
        self.records = [EpochRecord.from_dict(r) for r in state["records"]]
        self.results = {k: dict(v) for k, v in state["results"].items()}
        self.dense_results = {k: dict(v) for k, v in state["dense_results"].items()}
        self.dense_records = [EpochRecord.from_dict(r) for r in state["dense_records"]]
        self.level_cost = dict(state["level_cost"])
        if state["run"] is not None:
            self.run = self._start_regime()
            self.run.load_state_dict(state["run"])


def _count(cost: dict[str, float], records: list[dict[str, Any]], reused: bool) -> None:
    who = "reused" if reused else "trained"
    cost[f"{who}_epochs"] += len(records)
    cost[f"{who}_seconds"] += sum(r["epoch_seconds"] for r in records)
    cost[f"{who}_passes"] += sum(r.get("passes", 0.0) for r in records)


def check(config: TrialConfig) -> None:
    """What a transfer trial needs before it starts: its files, its source task, its attacks."""
    t = config.transfer
    if t.source is not None:
        DATASETS.get(t.source.dataset, field="transfer.source.dataset")
        task_info(t.source.dataset, t.source.classes)
    pretrain = t.pretrained.pretrain
    if pretrain is not None:
        ATTACKS.get(pretrain.regime.kind, field="transfer.pretrained.pretrain.regime.kind")
        if pretrain.regime.kind == "autoattack":
            raise UserError("transfer.pretrained.pretrain.regime.kind: autoattack is for evaluation only")
    if t.pretrained.file is not None and not Path(t.pretrained.file).expanduser().exists():
        raise UserError(f"transfer.pretrained.file: {t.pretrained.file} does not exist; give a state-dict file, "
                        "a checkpoint.pt or a ticket directory")
    if t.ticket_dir is not None and not (Path(t.ticket_dir).expanduser() / "manifest.json").is_file():
        raise UserError(f"transfer.ticket_dir: {t.ticket_dir} is not a ticket directory (no manifest.json)")
