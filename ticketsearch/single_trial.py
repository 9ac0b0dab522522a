"""`ticketsearch train`: one trial in this process, without Ray, with its results on disk.

Writes into the output directory, after every epoch: `epochs/<trial_id>.parquet` (all records so
far), `tensorboard/<trial_id>/` scalars and `checkpoint.pt` (the trial state, so `--resume`
continues); at the end `trials.parquet` (the one-row summary) and `config.json`.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from ticketsearch import layout
from ticketsearch.core.checkpoint import load_state, save_state
from ticketsearch.errors import UserError
from ticketsearch.records import EpochRecord, objective_columns, objective_value
from ticketsearch.results.parquet import write_trial_epochs
from ticketsearch.results.boosting import boosting_lines
from ticketsearch.results.intervals import accuracy_text
from ticketsearch.results.tensorboard import TrialWriter
from ticketsearch.results.tickets import write_ticket
from ticketsearch.results.trials_table import follow, new_row, write_trials
from ticketsearch.spec import TrialConfig
from ticketsearch.trainers import check_config, create_trainer, planned_epochs, summary_defaults


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device: {name} asked for but no CUDA GPU is visible; use --device cpu")
    return device


def trial_id_for(config: TrialConfig) -> str:
    return f"{config.name}-{config.content_hash()}"


def run_one_trial(
    config: TrialConfig,
    *,
    out: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    resume: bool = False,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    trial_id = trial_id_for(config)
    out = Path(out) if out else layout.default_out(trial_id)
    checkpoint = layout.checkpoint(out)
    if threads:
        torch.set_num_threads(threads)
    state = None
    if resume:
        if not checkpoint.is_file():
            raise UserError(f"--resume: {checkpoint} does not exist; run without --resume to start the trial")
        state = load_state(checkpoint, config.content_hash())
    elif checkpoint.exists():
        raise UserError(f"--out: {out} already holds a trial; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    layout.config_json(out).write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    started = time.time()
    node = socket.gethostname()
    check_config(config)
    levels = layout.trial_levels(layout.levels_dir(out), trial_id, config.search.share_levels)
    trainer = create_trainer(config, device=resolve_device(device), state=state, levels_dir=levels)
    echo(f"trial {trial_id}: {config.model.arch} width {config.model.width:g} on {config.data.dataset}, "
         f"{planned_epochs(config)} epochs planned, device {trainer.device}, out {out}")
    writer = TrialWriter(out, trial_id)
    try:
        for record in trainer:
            writer.add_record(record)
            write_trial_epochs(out, trial_id, [(r, node, "") for r in trainer.records])  # no Ray: no node id
            save_state(trainer.state_dict(), checkpoint)
            echo(format_record(record))
    finally:
        writer.close()
    trial_summary = trainer.summary()
    summary = follow(new_row(trial_id, config, summary_defaults(config)), trainer.records, trial_summary)
    summary.update({"status": trainer.status, "node": node})
    summary.update({key: objective_value(metric, trainer.records, trial_summary)
                    for key, metric, _ in objective_columns(config.objective)})
    if trainer.ticket_state is not None:
        ticket = write_ticket(layout.ticket_dir(out, trial_id), trainer.state_dict(), config, summary)
        summary["ticket_dir"] = str(ticket)
    write_trials(layout.trials_table(out), [summary])
    summary["wall_seconds"] = time.time() - started
    echo(format_summary(summary, trainer.sparsity_report(), out))
    return summary


def format_record(r: EpochRecord) -> str:
    guard = f"  guard {r.guard_robust_acc:.1%}" + (f" FIRED ({r.guard_action})" if r.guard_fired else "") \
        if r.guard_robust_acc == r.guard_robust_acc else ""
    return (f"round {r.round} {r.phase:<8} epoch {r.epoch:>3}  sparsity {r.sparsity:6.2%}  lr {r.lr:.4f}  "
            f"loss {r.train_loss:.3f}  train {r.train_acc:6.1%}  val clean {r.val_clean_acc:6.1%}  "
            f"robust {r.val_robust_acc:6.1%}  "
            + (f"certified {r.val_certified_acc:6.1%}  " if _known(r.val_certified_acc) else "")
            + f"auc {r.robust_auc:6.1%}  {r.epoch_seconds:5.1f}s  "
            f"{r.examples_per_second:6.0f} ex/s{guard}")


def _known(value: Any) -> bool:
    return isinstance(value, float) and value == value  # not NaN


def format_summary(summary: dict[str, Any], layers, out: Path) -> str:
    lines = [f"status {summary['status']} after {summary['epochs_trained']} epochs "
             f"({summary['train_seconds']:.1f}s training)"]
    lines.append(f"final ticket: sparsity {summary['final_sparsity']:.2%}, val clean {summary['final_val_clean_acc']:.1%}, "
                 f"val robust {summary['final_val_robust_acc']:.1%}, robust_auc {summary['robust_auc']:.1%}")
    if _known(summary.get("test_clean_acc")):  # each with its 95% Wilson interval and image count
        auto = (f", AutoAttack {accuracy_text(summary, 'test_autoattack_acc')}"
                if _known(summary.get("test_autoattack_acc")) else "")
        certified = (f", certified {accuracy_text(summary, 'test_certified_acc')} ({summary['certify_method']})"
                     if _known(summary.get("test_certified_acc")) else "")
        lines.append(f"test split: clean {accuracy_text(summary, 'test_clean_acc')}, "
                     f"robust {accuracy_text(summary, 'test_robust_acc')}{auto}{certified}")
    if summary.get("double_win_split"):
        split = summary["double_win_split"]
        for regime in ("standard", "adversarial"):
            if f"{regime}_{split}_clean_acc" in summary:
                lines.append(
                    f"{regime} fine-tuning ({split}): SA {summary[f'{regime}_{split}_clean_acc']:.1%} "
                    f"(dense {summary[f'dense_{regime}_{split}_clean_acc']:.1%}), RA {summary[f'{regime}_{split}_robust_acc']:.1%} "
                    f"(dense {summary[f'dense_{regime}_{split}_robust_acc']:.1%})")
        lines.append(f"double win: {'yes' if summary['double_win'] else 'no'} "
                     f"(margin {100 * summary['double_win_test_margin' if split == 'test' else 'double_win_margin']:+.1f} points)")
    lines += boosting_lines(pd.DataFrame([summary]))
    lines.append("per-layer sparsity:")
    lines += [f"  {layer.name:<40} {layer.remaining:>9}/{layer.weights:<9} {layer.sparsity:7.2%}" for layer in layers]
    lines.append(f"results: {layout.epochs_dir(out)}/*.parquet, {layout.trials_table(out)}, "
                 f"tensorboard --logdir {layout.tensorboard_dir(out)}")
    return "\n".join(lines)
