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
the dense network's. Every stretch of training is a level of the plan (trainers/transfer_levels.py:
pre-training, each round of IMP on the source task, each fine-tuning), run by the one executor
(trainers/executor.py) and shared by every trial with its setting; the trial's records list them all,
each with its role (pretrain, find, reference, ticket). This module says how each kind of level
starts and what the trial concludes. It never imports Ray.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ticketsearch import layout
from ticketsearch.core.attacks import ATTACKS
from ticketsearch.core.checkpoint import load_tensors
from ticketsearch.core.data import DATASETS, DataBundle, task_info
from ticketsearch.core.models import ImageClassifier, create_model
from ticketsearch.core.pretrained import (
    classifier_keys,
    cpu_copy,
    fit_weights,
    load_weights_file,
    state_shape,
    torchvision_weights,
)
from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights, random_mask_like
from ticketsearch.errors import UserError
from ticketsearch.spec import TrialConfig
from ticketsearch.records import NAN, path_summary
from ticketsearch.trainers.engine import LevelRun, snapshot
from ticketsearch.trainers.executor import LevelTrainer
from ticketsearch.trainers.level_spec import LevelSpec, Step
from ticketsearch.trainers.transfer_levels import METRICS, plan_finetuning, plan_levels
from ticketsearch.trainers.levels import LevelStore

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


class TransferTrainer(LevelTrainer):
    """The plan of `plan_levels` on the one executor (trainers/executor.py): how each kind of level
    starts, and the double-win summary."""

    def __init__(self, config: TrialConfig, data: DataBundle | None = None, *, device: str | torch.device = "cpu",
                 state: dict[str, Any] | None = None, levels: LevelStore | None = None):
        super().__init__(config, plan_levels(config), data, device=device, levels=levels)
        self.data = self.task(config.data)
        self.fastpath = self.fastpath_of(self.plan[-1].level)
        self._pretrained: dict[str, Tensor] | None = None  # the dense pre-trained state dict, on the CPU
        self._model: ImageClassifier | None = None  # the downstream network every fine-tuning trains
        self.provenance: dict[str, Any] = {"pretrained": self._describe_source()}
        if config.transfer.pretrained.pretrain is None:
            self._downstream_model()  # a file or published weights that do not fit fail before any training
            if config.transfer.ticket == "files":
                self._files_mask()
        if state is not None:
            self.load_state_dict(state)

    # ---------------------------------------------------------------- how levels start
    def start(self, step: Step) -> LevelRun:
        level = step.level
        if level.kind == "pretrain":
            source = self.task(level.data)
            info = source.info
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(level.seed)
                model = self._new_model(info.num_classes, info.channels, info.mean, info.std)
            model = model.to(self.device, memory_format=self.fastpath.memory_format)
            weights = prunable_weights(model)
            return LevelRun(level, model, model, weights, Mask.ones(weights), source, self.fastpath)
        if level.kind == "source_round":
            source, model = self.task(level.data), self._source_model()
            if model.classifier.out_features != source.info.num_classes:
                raise UserError(f"transfer.source: the pre-trained classifier has {model.classifier.out_features} "
                                f"classes, {level.data.dataset} has {source.info.num_classes}; IMP runs on the task "
                                "it was trained on")
            weights = self._prunable(model)
            pruned = level.parent is not None and level.parent.kind == "source_round"
            mask = self._imp_mask(level, model) if pruned else Mask.ones(weights)
            model.load_state_dict(self._pretrained_state())  # every round rewinds to the pre-trained weights
            return LevelRun(level, model, model, weights, mask, source, self.fastpath)
        model, mask = self._finetune_start(level)
        return LevelRun(level, model, self._forward, self._prunable(model), mask, self.data, self.fastpath)

    def _finetune_model(self, level: LevelSpec) -> ImageClassifier:
        """The downstream network holding the pre-trained weights, with its new classifier drawn from the
        trial seed alone (so the ticket and the dense network start alike)."""
        model = self._downstream_model()
        model.load_state_dict({**model.state_dict(), **self._start_body})
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(level.seed)
            model.classifier.reset_parameters()
        return model

    def _finetune_start(self, level: LevelSpec) -> tuple[ImageClassifier, Mask]:
        """The downstream network as the fine-tuning starts, and the level's mask."""
        model = self._finetune_model(level)
        weights = self._prunable(model)
        if level.mask == "ones":
            return model, Mask.ones(weights)
        if level.mask.startswith("files:"):
            return model, self._files_mask()
        if level.mask == "imp":
            if level.parent is None or level.parent.kind != "source_round":  # no round: every weight
                return model, Mask.ones(weights)
            return model, Mask.from_state_dict(self._imp_mask(level, self._source_model()).state_dict(), weights)
        prune = self.config.prune
        mask = magnitude_prune(weights, Mask.ones(weights), prune.sparsity_after(prune.rounds), prune.scope,
                               allow_empty_layers=prune.allow_empty_layers)
        if level.mask == "random":
            mask = random_mask_like(mask, torch.Generator().manual_seed(level.seed))
        return model, mask

    def _imp_mask(self, level: LevelSpec, model: ImageClassifier) -> Mask:
        """The parent round's mask, pruned by magnitude of the weights it trained (`model`: a source network)."""
        parent = self._result(level.parent)
        model.load_state_dict(parent["weights"])
        weights = self._prunable(model)
        pruning = level.pruning
        return magnitude_prune(weights, Mask.from_state_dict(parent["mask"], weights), pruning.ratio, pruning.scope,
                               allow_empty_layers=pruning.allow_empty_layers)

    def _files_mask(self) -> Mask:
        """A previous search's ticket (transfer.ticket_dir) as a mask of the downstream network."""
        model = self._downstream_model()
        directory = Path(self.config.transfer.ticket_dir).expanduser()
        if not layout.ticket_manifest(directory).is_file():
            raise UserError(f"transfer.ticket_dir: {directory} is not a ticket directory (no manifest.json)")
        manifest = json.loads(layout.ticket_manifest(directory).read_text())
        theirs, ours = manifest.get("model", {}), self.config.model
        if (theirs.get("arch"), float(theirs.get("width", NAN)), theirs.get("depth")) != (ours.arch, ours.width, ours.depth):
            raise UserError(f"transfer.ticket_dir: the ticket is {theirs.get('arch')} width {theirs.get('width')} "
                            f"depth {theirs.get('depth')}; model here is {ours.arch} width {ours.width:g} depth {ours.depth}")
        state = load_tensors(layout.ticket_mask(directory))
        head = set(classifier_keys(model))
        parameters = dict(model.named_parameters())
        state = {name: m for name, m in state.items() if name not in head}
        unknown = sorted(set(state) - set(parameters))
        if unknown:
            raise UserError(f"transfer.ticket_dir: {directory / 'mask.pt'} masks {unknown[0]}, which the model has not")
        self.provenance["ticket_sparsity_in_source"] = float(manifest.get("sparsity", NAN))
        return Mask.from_state_dict(state, {name: parameters[name] for name in state})

    # ---------------------------------------------------------------- networks
    def _pretrained_state(self) -> dict[str, Tensor]:
        """The dense pre-trained state dict (CPU): a file, torchvision's weights, or the pre-training level's."""
        if self._pretrained is None:
            source = self.config.transfer.pretrained
            if source.file is not None:
                self._pretrained = load_weights_file(source.file, "transfer.pretrained.file")
            elif source.torchvision is not None:
                self._pretrained = torchvision_weights(self.config.model.arch, source.torchvision,
                                                       "transfer.pretrained.torchvision")
            else:
                self._pretrained = cpu_copy(self._result(self.plan[0].level)["weights"])
        return self._pretrained

    def _source_model(self) -> ImageClassifier:
        """A network of the pre-trained one's shape (its classes), holding its weights."""
        channels, classes = state_shape(self._pretrained_state())
        model = self._new_model(classes, channels)
        model.load_state_dict(self._pretrained_state())
        return model.to(self.device, memory_format=self.fastpath.memory_format)

    def _downstream_model(self) -> ImageClassifier:
        """The network every fine-tuning trains: the pre-trained one's shape with a classifier for `data`."""
        if self._model is None:
            config, state = self.config, self._pretrained_state()
            channels, source_classes = state_shape(state)
            if self.data.info.channels not in (1, channels):
                raise UserError(f"data.dataset: {config.data.dataset} has {self.data.info.channels} channels; the "
                                f"pre-trained network takes {channels} (or grey images, repeated)")
            model = self._new_model(source_classes, channels)
            fit_weights(model, state, self._weights_field(), f"model.arch {config.model.arch} width {config.model.width:g}")
            head = set(classifier_keys(model))
            # The pre-trained body as it fits this network: where every fine-tuning starts.
            self._start_body = {k: v for k, v in snapshot(model).items() if k not in head}
            model.replace_classifier(self.data.info.num_classes)
            self._model = model.to(self.device, memory_format=self.fastpath.memory_format)
            self._forward = self.fastpath.forward_module(self._model)  # the model, or its compiled wrapper
        return self._model

    @property
    def model(self) -> ImageClassifier:
        return self._downstream_model()

    def test_model(self, step: Step) -> nn.Module:
        return self._downstream_model()

    def tested(self, step: Step) -> bool:
        return step.role in ("ticket", "reference")

    def kept_weights(self) -> set[str]:
        kept = super().kept_weights()
        return kept | {self.plan[0].level.name} if self.config.transfer.pretrained.pretrain else kept

    def _prunable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Conv weights (and hidden linear ones with prune_linear) less prune.exclude; never the head."""
        weights = prunable_weights(model, ("classifier", *self.config.prune.exclude))
        if self.config.transfer.prune_linear:
            return weights
        return {name: w for name, w in weights.items() if w.dim() == 4}

    def _new_model(self, num_classes: int, channels: int, mean=None, std=None) -> ImageClassifier:
        m = self.config.model
        return create_model(m.arch, width=m.width, depth=m.depth, num_classes=num_classes, in_channels=channels,
                            mean=mean or (0.0,) * channels, std=std or (1.0,) * channels, input_size=m.input_size)

    def _describe_source(self) -> str:
        source, c = self.config.transfer.pretrained, self.config
        if source.file is not None:
            return f"file:{source.file}"
        if source.torchvision is not None:
            return f"torchvision:{c.model.arch}.{source.torchvision}"
        return f"pretrain:{c.transfer.source.dataset}"

    def _weights_field(self) -> str:
        source = self.config.transfer.pretrained
        return f"transfer.pretrained.file {source.file}" if source.file else "transfer.pretrained"

    # ---------------------------------------------------------------- results
    @property
    def mask(self) -> Mask:
        """The ticket's mask (every weight before the ticket's fine-tuning has started)."""
        weights = self._prunable(self._downstream_model())
        held = self._result(self.plan[-1].level)
        if self.run is not None and self.plan[self.position].role == "ticket":
            return self.run.mask
        return Mask.from_state_dict(held["mask"], weights) if held else Mask.ones(weights)

    @property
    def weights(self) -> dict[str, nn.Parameter]:
        return self._prunable(self._downstream_model())

    @property
    def sparsity(self) -> float:
        return self.mask.sparsity()

    @property
    def init_state(self) -> dict[str, Tensor]:
        """Where the finished ticket's fine-tuning started: the masked pre-trained weights and the new
        classifier."""
        level = self.plan[-1].level
        model = self._finetune_model(level)
        MaskApplier(self._prunable(model), Mask.from_state_dict(self._result(level)["mask"], self._prunable(model)))()
        return snapshot(model)

    @property
    def ticket_state(self) -> dict[str, Any] | None:
        result = self.results.get(self.plan[-1].level.name) if self.done else None
        return None if result is None else {"weights": result["weights"], "mask": result["mask"]}

    def regime_results(self, role: str) -> dict[str, dict[str, float]]:
        """regime -> the last validation accuracies and the test figures of the role's fine-tuning."""
        out = {}
        for step in self.plan:
            records = self.records_of(step.level) if step.role == role else []
            if records and self._result(step.level) is not None:
                out[step.phase.removeprefix("finetune_")] = {
                    "val_clean_acc": records[-1].val_clean_acc, "val_robust_acc": records[-1].val_robust_acc,
                    **self.test_of(step.level)}
        return out

    @property
    def dense_results(self) -> dict[str, dict[str, float]]:
        return self.regime_results("reference")

    def summary(self) -> dict[str, Any]:
        """Trial-level numbers: the path's progress and cost, what it was found from, per-regime
        accuracies of the ticket and of the dense network, and the double-win verdict."""
        out: dict[str, Any] = {"status": self.status, **path_summary(self.records), **self.provenance}
        by_level = {}
        for record in self.records:
            by_level.setdefault((record.role, record.level), []).append(record)
        rounds = [rs for (role, _), rs in by_level.items() if role == "find"]
        reused_rounds = sum(all(r.reused for r in rs) for rs in rounds)
        find = [r for rs in rounds for r in rs]
        out.update(find_seconds=sum(r.epoch_seconds for r in find), imp_rounds_reused=reused_rounds,
                   imp_reused=bool(rounds) and reused_rounds == len(rounds) == self.config.prune.rounds,
                   source_val_clean_acc=find[-1].val_clean_acc if find else NAN,
                   source_val_robust_acc=find[-1].val_robust_acc if find else NAN)
        pretrain = [r for r in self.records if r.role == "pretrain"]
        if pretrain:
            out.update(pretrain_reused=all(r.reused for r in pretrain),
                       pretrain_seconds=sum(r.epoch_seconds for r in pretrain),
                       pretrain_val_clean_acc=pretrain[-1].val_clean_acc,
                       pretrain_val_robust_acc=pretrain[-1].val_robust_acc)
        dense = [r for r in self.records if r.role == "reference"]
        out["dense_reused"] = bool(dense) and all(r.reused for r in dense)
        results, dense_results = self.regime_results("ticket"), self.dense_results
        for regime, numbers in results.items():
            out.update({f"{regime}_{k}": v for k, v in numbers.items() if k in METRICS})
        for regime, numbers in dense_results.items():
            out.update({f"dense_{regime}_{k}": v for k, v in numbers.items() if k in METRICS})
        last = self.plan[-1].phase.removeprefix("finetune_")
        if last in results:  # the last regime's test numbers fill the columns every trainer has
            out.update({k: v for k, v in results[last].items() if k.startswith("test_")})
        phases = plan_finetuning(self.config)
        if len(dense_results) == len(results) == len(phases):
            tolerance = self.config.transfer.tolerance
            _, out["double_win_margin"] = double_win(results, dense_results, tolerance, "val")
            split = "test" if self.config.trainer.test_eval else "val"
            out["double_win"], out["double_win_test_margin"] = double_win(results, dense_results, tolerance, split)
            out["double_win_split"] = split
        return out

    def sparsity_report(self):
        return self.mask.report()

    def state_dict(self) -> dict[str, Any]:
        """The executor's state, with the ticket (and where it started) once it is finished."""
        ticket = self.ticket_state
        return {**super().state_dict(), "ticket": ticket, "rewind": None,
                "init": self.init_state if ticket is not None else None}


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
    if t.ticket_dir is not None and not layout.ticket_manifest(Path(t.ticket_dir).expanduser()).is_file():
        raise UserError(f"transfer.ticket_dir: {t.ticket_dir} is not a ticket directory (no manifest.json)")
