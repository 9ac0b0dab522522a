"""The Ray Tune trainable: a thin adapter that drives the core trainer one epoch per report.

Every epoch it reports the epoch record (plus the trial's status and objective) with a checkpoint of
the trial state, so a restarted trial (lost node, retried failure, resumed search) continues from its
last finished epoch; the level it was training keeps its own progress under `levels_dir`. Epochs of
levels other trials trained are reported without one. The trainer itself knows nothing of Ray.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Mapping

import ray
import torch
from ray import tune

from ticketsearch.core.checkpoint import load_state, save_state
from ticketsearch import layout
from ticketsearch.search.confirm import trial_config
from ticketsearch.spec import Spec
from ticketsearch.trainers import create_trainer
from ticketsearch.records import TICKET_EPOCH, objective_columns, objective_value

STATE_FILE = "state.pt"


def run_trial(values: Mapping[str, Any], *, spec: Spec, levels_dir: str | None = None) -> None:
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no "Checkpoint created" line per epoch
    # The spec was parsed and checked on the driver (every edge of its space) and arrives as it is; the
    # trial's values are the searcher's, resolved into its config once, here.
    config = trial_config(spec, values)
    # Ray sets OMP_NUM_THREADS=1 in trials: follow the CPUs the trial was given instead.
    torch.set_num_threads(max(1, int(config.resources.cpu)))
    device = "cuda" if config.resources.gpu > 0 and torch.cuda.is_available() else "cpu"
    if device == "cuda" and config.resources.gpu < 1:
        # Ray's GPU fraction is bookkeeping only: cap this process's share of the GPU's memory so a
        # trial that outgrows it fails with its own out-of-memory error instead of starving the trials
        # it shares the GPU with.
        torch.cuda.set_per_process_memory_fraction(config.resources.gpu)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(Path(directory) / STATE_FILE, config.content_hash())
    if levels_dir is not None:
        levels_dir = str(layout.trial_levels(levels_dir, tune.get_context().get_trial_id(), config.search.share_levels))
    trainer = create_trainer(config, device=device, state=state, levels_dir=levels_dir)
    objectives = objective_columns(config.objective)
    # Tune reports the node's IP; the Ray node id also tells apart nodes that share a host.
    node_id = ray.get_runtime_context().get_node_id()
    for record in trainer:
        metrics = {**record.as_dict(), "status": trainer.status, "config_hash": config.content_hash(),
                   "node_id": node_id, TICKET_EPOCH: trainer.ticket_epoch}
        summary = trainer.summary() if trainer.done else None
        if summary is not None:
            metrics.update({f"summary/{k}": v for k, v in summary.items()})
        metrics.update({key: objective_value(metric, trainer.records, summary) for key, metric, _ in objectives})
        if record.reused and not trainer.done:
            # An epoch of a level another trial trained changes no state worth saving: a trial restarted
            # from its last checkpoint reads the level again and reports the same records.
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as directory:
            save_state(trainer.state_dict(), Path(directory) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
