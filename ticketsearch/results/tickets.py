"""A ticket as files: its mask, its rewind weights, its trained weights, and a manifest.

`<dir>/mask.pt` (bool tensors by parameter name), `rewind.pt` (the state dict the ticket was rewound
to: the initialisation or epoch k of round 0), `trained.pt` (the state dict at the end of the ticket's
round), `manifest.json` (model, width, depth, data set, sparsity, metrics, the trial config). The
.pt files load with `torch.load(weights_only=True)`; `load_ticket` rebuilds the trained model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketsearch import layout
from ticketsearch.core.checkpoint import load_tensors
from ticketsearch.core.data import task_info
from ticketsearch.core.models import create_model
from ticketsearch.core.pruning import Mask, MaskApplier
from ticketsearch.errors import UserError
from ticketsearch.spec import TrialConfig, validate_trial


def write_ticket(directory: str | Path, state: dict[str, Any], config: TrialConfig, metrics: dict[str, Any]) -> Path:
    """Write the ticket held by a finished trial's state (`IMPTrainer.state_dict()`)."""
    if not state.get("ticket"):
        raise ValueError("the trial state holds no finished ticket")
    directory = Path(directory)
    temporary = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    ticket = state["ticket"]
    rewind = state["rewind"] if state.get("rewind") is not None else state["init"]
    torch.save(_cpu(ticket["mask"]), layout.ticket_mask(temporary))
    torch.save(_cpu(rewind), layout.ticket_weights(temporary, "rewind"))
    torch.save(_cpu(ticket["weights"]), layout.ticket_weights(temporary))
    mask = Mask({k: v for k, v in ticket["mask"].items()})
    manifest = {
        "model": config.model.model_dump(mode="json"),
        "dataset": config.data.dataset,
        "in_channels": int(rewind["normalize.mean"].shape[1]),
        "sparsity": mask.sparsity(),
        "prunable_weights": mask.total(),
        "rewind_epoch": config.prune.rewind,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))},
        "config": config.to_dict(),
    }
    layout.ticket_manifest(temporary).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(temporary, directory)  # a reader sees the whole ticket or none
    return directory


def load_ticket(directory: str | Path, weights: str = "trained") -> tuple[nn.Module, Mask, dict[str, Any]]:
    """(model with the ticket's `trained` or `rewind` weights and its mask applied, mask, manifest)."""
    directory = Path(directory)
    manifest_path = layout.ticket_manifest(directory)
    if not manifest_path.is_file():
        raise UserError(f"{directory}: not a ticket (no {manifest_path.name}); expected "
                        f"{', '.join(path.name for path in layout.ticket_files(directory))}")
    manifest = json.loads(manifest_path.read_text())
    config = validate_trial(manifest["config"], str(manifest_path))
    info = task_info(config.data.dataset, config.data.classes)
    # A transferred ticket keeps its pre-trained network's input channels (e.g. RGB ImageNet weights
    # on grey digits), recorded in the manifest; an IMP ticket has its data set's.
    channels = manifest.get("in_channels", info.channels)
    model = create_model(config.model.arch, width=config.model.width, depth=config.model.depth,
                         num_classes=info.num_classes, in_channels=channels, mean=(0.0,) * channels,
                         std=(1.0,) * channels, input_size=config.model.input_size)
    weights_path = layout.ticket_weights(directory, weights)
    state = load_tensors(weights_path)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"{weights_path}: does not fit {config.model.arch} width "
                        f"{config.model.width:g} ({str(error).splitlines()[0]})") from None
    # The mask names the weights it prunes (the IMP and transfer trainers prune different sets).
    mask_state = load_tensors(layout.ticket_mask(directory))
    parameters = dict(model.named_parameters())
    unknown = sorted(set(mask_state) - set(parameters))
    if unknown:
        raise UserError(f"{layout.ticket_mask(directory)}: masks {unknown[0]}, which {config.model.arch} has not")
    masked = {name: parameters[name] for name in mask_state}
    mask = Mask.from_state_dict(mask_state, masked)
    MaskApplier(masked, mask)()
    return model, mask, manifest


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
