"""Pre-trained dense weights as one `ImageClassifier` state dict, and fitting them to a model.

Accepted forms, all read with `torch.load(weights_only=True)`:
- a state dict of an `ImageClassifier` (keys `normalize.*`, `body.*`), as ticketsearch writes;
- a ticketsearch trial checkpoint (`checkpoint.pt` of `ticketsearch train`): its finished ticket's
  weights, or its current weights while no ticket is finished;
- a ticket directory of a previous search (`tickets/<trial>/`): its `trained.pt`;
- a torchvision ResNet state dict (keys `conv1.weight` ... `fc.weight`, as torchvision publishes),
  given ImageNet's normalisation; a `{"state_dict": ...}` wrapper and DataParallel's `module.`
  prefix are unwrapped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ticketsearch import layout
from ticketsearch.core.checkpoint import STATE_FORMAT, load_tensors
from ticketsearch.core.models.torchvision_resnet import IMAGENET_MEAN, IMAGENET_STD
from ticketsearch.errors import UserError

StateDict = dict[str, Tensor]


def load_weights_file(path: str | Path, field: str) -> StateDict:
    """The ImageClassifier state dict held by `path` (a file or a ticket directory), on the CPU."""
    path = Path(path).expanduser()
    if path.is_dir():
        trained = layout.ticket_weights(path)
        if not trained.is_file():
            raise UserError(f"{field}: {path} is a directory but not a ticket (no {trained.name})")
        path = trained
    if not path.exists():
        raise UserError(f"{field}: {path} does not exist; give a state-dict file, a checkpoint.pt or a ticket directory")
    loaded = load_tensors(path)
    if isinstance(loaded, dict) and loaded.get("format") == STATE_FORMAT:
        ticket = loaded.get("ticket")
        loaded = ticket["weights"] if ticket else loaded["model"]
    elif isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise UserError(f"{field}: {path} holds no state dict (a mapping of parameter names to tensors)")
    return to_classifier_layout({k.removeprefix("module."): v for k, v in loaded.items()})


def to_classifier_layout(state: StateDict) -> StateDict:
    """torchvision's ResNet keys -> ImageClassifier keys (other layouts pass through unchanged)."""
    if any(k.startswith(("body.", "normalize.")) for k in state) or "conv1.weight" not in state:
        return dict(state)
    out = {f"body.{k}".replace("body.fc.", "body.classifier."): v for k, v in state.items()}
    out["normalize.mean"] = torch.tensor(IMAGENET_MEAN).view(1, -1, 1, 1)
    out["normalize.std"] = torch.tensor(IMAGENET_STD).view(1, -1, 1, 1)
    return out


def torchvision_weights(arch: str, name: str, field: str) -> StateDict:
    """torchvision's published weights `name` for `arch` (downloaded to torch's hub cache once)."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except ValueError:
        raise UserError(f"{field}: torchvision publishes no weights for model.arch {arch!r}; use resnet18 or resnet50") from None
    known = [w.name for w in enum]
    if name not in known:
        raise UserError(f"{field}: unknown weights {name!r} for {arch}; known: {', '.join(known)}")
    try:
        state = enum[name].get_state_dict(progress=False)
    except Exception as error:  # a download failure has many types (URLError, OSError, ...)
        reason = " ".join(str(error).split())[:120]
        raise UserError(f"{field}: could not download {arch} {name} ({reason}); offline, download it "
                        f"elsewhere and give it as transfer.pretrained.file") from None
    return to_classifier_layout(dict(state))


def file_digest(path: str | Path) -> str:
    """sha256 of a weights file (of trained.pt for a ticket directory): names the weights in caches."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = layout.ticket_weights(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def classifier_keys(model: nn.Module) -> tuple[str, str]:
    """The state-dict names of the model's classifier weight and bias."""
    names = {id(p): n for n, p in model.named_parameters()}
    return names[id(model.classifier.weight)], names[id(model.classifier.bias)]


def state_shape(state: StateDict) -> tuple[int, int]:
    """(input channels, classes) of a state dict in ImageClassifier layout."""
    if "normalize.mean" not in state:
        raise UserError("pre-trained weights: no normalize.mean; not a ticketsearch or torchvision ResNet state dict")
    classifier = [k for k in state if k.endswith("classifier.weight")]
    if not classifier:
        raise UserError("pre-trained weights: no classifier.weight; not a ticketsearch or torchvision ResNet state dict")
    return int(state["normalize.mean"].shape[1]), int(state[classifier[-1]].shape[0])


def fit_weights(model: nn.Module, state: StateDict, source: str, description: str) -> None:
    """Load `state` into `model` exactly, or raise one line saying what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
             if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        problems = [f"{label}: {', '.join(items[:2])}" + (f" (+{len(items) - 2})" if len(items) > 2 else "")
                    for label, items in (("missing", missing), ("unexpected", unexpected), ("shapes", wrong)) if items]
        raise UserError(f"{source}: does not fit {description} ({'; '.join(problems)})")
    model.load_state_dict(state)


def cpu_copy(state: dict[str, Any]) -> StateDict:
    return {k: v.detach().to("cpu").clone() for k, v in state.items()}
