"""Unstructured magnitude pruning with masks applied in place (Frankle & Carbin 2019, open_lth).

A `Mask` holds one 0/1 tensor per prunable weight (conv and linear kernels, less the excluded layers).
Pruning removes `ratio` of the weights that are still alive, by smallest score, in one of three scopes:

- `global`: one threshold on raw |w| across all prunable layers (Frankle & Carbin 2019's rule for
  their deeper networks; open_lth's default). Layers with many small weights lose the most, and at
  high sparsity a large layer can be emptied (ResNet-20 one-shot at 98% from its initialisation
  loses its whole classifier).
- `global_normalized`: one threshold on |w| divided by the mean |w| of the weight's layer, the rule
  of the boosting-ticket code (Li et al. 2020), which marks the normalisation as important for
  exactly that reason.
- `layerwise`: `ratio` of every layer (Frankle & Carbin 2019's rule for their small networks).

A prune that would leave a layer without a single weight is refused (a `UserError` naming the layer
and the sparsity) unless `allow_empty_layers`: the network would then predict without that layer's
input, a broken ticket rather than a sparse one. Masks are applied in place after every optimiser step
rather than through forward hooks (torch.nn.utils.prune), so a forward pass costs nothing extra and
pruned weights stay exactly zero whatever momentum or weight decay do.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ticketsearch.errors import UserError

SYMBOLIC_EXCLUSIONS = ("first_conv", "classifier")


def prunable_weights(model: nn.Module, exclude: tuple[str, ...] = ()) -> dict[str, nn.Parameter]:
    """Conv and linear weights by parameter name, in module order, less the excluded layers.

    `exclude` holds fnmatch patterns on module names plus `first_conv` (the first Conv2d) and
    `classifier` (the last Linear), which name those layers whatever an architecture calls them.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [name for name, m in layers if isinstance(m, nn.Conv2d)]
    linears = [name for name, m in layers if isinstance(m, nn.Linear)]
    excluded: set[str] = set()
    for pattern in exclude:
        if pattern == "first_conv":
            excluded.update(convs[:1])
        elif pattern == "classifier":
            excluded.update(linears[-1:])
        else:
            matches = [name for name, _ in layers if fnmatch.fnmatchcase(name, pattern)]
            if not matches:
                raise UserError(
                    f"prune.exclude: {pattern!r} matches no conv or linear layer; use first_conv, classifier "
                    f"or a pattern over names such as {', '.join(name for name, _ in layers[:3])}"
                )
            excluded.update(matches)
    return {f"{name}.weight": m.weight for name, m in layers if name not in excluded}


class Mask:
    """0/1 tensors by parameter name. Refuses any other value, so a mask is always a mask."""

    def __init__(self, tensors: dict[str, Tensor]):
        for name, tensor in tensors.items():
            if not bool(((tensor == 0) | (tensor == 1)).all()):
                raise ValueError(f"mask for {name} holds values other than 0 and 1")
        self.tensors = tensors

    @classmethod
    def ones(cls, weights: dict[str, nn.Parameter]) -> "Mask":
        return cls({name: torch.ones_like(w, memory_format=torch.preserve_format) for name, w in weights.items()})

    def remaining(self) -> int:
        return int(sum(int(t.sum().item()) for t in self.tensors.values()))

    def total(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def sparsity(self) -> float:
        total = self.total()
        return 1 - self.remaining() / total if total else 0.0

    def report(self) -> list["LayerSparsity"]:
        return [
            LayerSparsity(name, t.numel(), int(t.sum().item()), 1 - t.sum().item() / t.numel())
            for name, t in self.tensors.items()
        ]

    def state_dict(self) -> dict[str, Tensor]:
        """Bool tensors on the CPU: 1 byte a weight, loadable with weights_only=True."""
        return {name: t.detach().to("cpu", dtype=torch.bool) for name, t in self.tensors.items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], weights: dict[str, nn.Parameter]) -> "Mask":
        if set(state) != set(weights):
            raise UserError(
                f"mask names do not match the model's prunable layers "
                f"(extra: {sorted(set(state) - set(weights))[:3]}, missing: {sorted(set(weights) - set(state))[:3]})"
            )
        tensors = {}
        for name, w in weights.items():
            if state[name].shape != w.shape:
                raise UserError(f"mask for {name} has shape {tuple(state[name].shape)}, the model's is {tuple(w.shape)}")
            tensors[name] = state[name].to(w.device, w.dtype).contiguous(memory_format=_format_of(w))
        return cls(tensors)


def _format_of(tensor: Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    weights: int
    remaining: int
    sparsity: float


class MaskApplier:
    """Multiplies the masked weights by their masks in one fused call after each optimiser step."""

    def __init__(self, weights: dict[str, nn.Parameter], mask: Mask):
        self.params = [weights[name] for name in mask.tensors]
        self.masks = [mask.tensors[name] for name in mask.tensors]

    @torch.no_grad()
    def __call__(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)


SCOPES = ("global", "global_normalized", "layerwise")


def magnitude_prune(weights: dict[str, nn.Parameter], mask: Mask, ratio: float, scope: str, *,
                    allow_empty_layers: bool = False) -> Mask:
    """A new mask that also removes `ratio` of the surviving weights with the smallest scores.

    Exactly round(ratio * surviving) weights go (globally or per layer); masks only shrink. Ties are
    broken by a stable sort, so the result is deterministic. A layer left with no weight raises a
    UserError unless `allow_empty_layers`.
    """
    if not 0 <= ratio < 1:
        raise UserError(f"prune.ratio: must be in [0, 1), got {ratio}")
    if scope not in SCOPES:
        raise UserError(f"prune.scope: unknown scope {scope!r}; known: {', '.join(SCOPES)}")
    names = list(mask.tensors)
    alive = [mask.tensors[n].bool() for n in names]
    magnitudes = [weights[n].detach().abs() for n in names]
    if scope == "global_normalized":
        # Each layer's |w| over its mean |w| among the surviving weights (a layer already empty keeps
        # raw scores: it has nothing left to lose).
        magnitudes = [m / m[a].mean() if a.any() else m for m, a in zip(magnitudes, alive)]
    # Already-pruned weights score +inf so they are never counted among the smallest survivors.
    scores = [torch.where(a, m, torch.inf).flatten() for a, m in zip(alive, magnitudes)]
    if scope == "layerwise":
        pieces = [_prune_smallest(s, mask.tensors[n].flatten(), ratio) for n, s in zip(names, scores)]
    else:
        flat = _prune_smallest(torch.cat(scores), torch.cat([mask.tensors[n].flatten() for n in names]), ratio)
        pieces = flat.split([s.numel() for s in scores])
    pruned = Mask({
        n: p.view(mask.tensors[n].shape).contiguous(memory_format=_format_of(weights[n]))
        for n, p in zip(names, pieces)
    })
    if not allow_empty_layers:
        _refuse_emptied_layers(mask, pruned, scope)
    return pruned


def _refuse_emptied_layers(before: Mask, after: Mask, scope: str) -> None:
    for layer in after.report():
        if layer.remaining == 0 and before.tensors[layer.name].any():
            raise UserError(
                f"prune: pruning to sparsity {after.sparsity():.2%} ({scope}) removes every weight of "
                f"{layer.name}; use prune.scope: global_normalized or layerwise, a smaller ratio, "
                f"prune.exclude, or prune.allow_empty_layers: true"
            )


def _prune_smallest(scores: Tensor, flat_mask: Tensor, ratio: float) -> Tensor:
    alive = int(flat_mask.sum().item())
    count = round(ratio * alive)
    new = flat_mask.clone()
    if count:
        order = torch.argsort(scores, stable=True)
        new[order[:count]] = 0
    return new


def random_mask_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A random mask with the same number of surviving weights in every layer (the random-pruning control)."""
    tensors = {}
    for name, tensor in mask.tensors.items():
        keep = int(tensor.sum().item())
        order = torch.randperm(tensor.numel(), generator=generator)
        flat = torch.zeros(tensor.numel(), dtype=tensor.dtype)
        flat[order[:keep]] = 1
        tensors[name] = flat.view(tensor.shape).to(tensor.device).contiguous(memory_format=_format_of(tensor))
    return Mask(tensors)
