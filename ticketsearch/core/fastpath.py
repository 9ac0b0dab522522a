"""The speed settings of one trial, resolved once from its config and its device.

A `FastPath` says how the training and evaluation loops run the model: under bf16 autocast or in
fp32, in which memory format, and whether through `torch.compile`. Any trainer resolves one with
`resolve_fastpath(config.train.precision, config.train.compile, device)` and hands it to
`loops.train_epoch` / `loops.evaluate` (keyword `fastpath`) and compiles its model with
`fastpath.forward_module(model)`.

Why these defaults (measured figures in BENCHMARKS.md):
- bf16 autocast on CUDA (`precision: auto`): tensor cores run bf16 at many times their fp32 rate,
  and bf16 keeps fp32's exponent range, so no loss scaling is needed. Autocast casts inside the
  convolutions and matmuls only: images, perturbations and their gradients stay fp32, so the
  attack's projection onto the eps-ball is exact (bf16 images are not: 8.47/255 seen for 8/255,
  PITFALLS.md). fp32 on CPU: a CPU with AVX2 but neither AVX512-BF16 nor AMX has no bf16 units,
  and oneDNN emulates bf16 there about 10x slower than fp32 (ResNet-20 PGD-10 step, BENCHMARKS.md).
- channels-last everywhere: oneDNN and cuDNN both pick faster convolution kernels for NHWC.
- batch norms folded into convs for the eval-mode attack passes: one pass over the activations fewer
  per conv-BN pair, forward and backward (ResNet-20 PGD-10 step 1.2-1.3x on CPU).
- cuDNN autotuning on CUDA: the shapes of a trial never change, so the one-off search pays.
- `torch.compile` off unless asked: each trial pays 15-35 s of compiling (CPU), which short search
  trials never earn back. Meant for GPUs, where small models are bound by kernel launches (still to
  be measured); on CPU, ResNet-20 PGD-10 training ran 1.42x the reference loop compiled against
  1.26x eager once warm. Compiled attack passes freeze the parameters (core/attacks.py) and do not
  fold batch norms.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch
from torch import nn

from ticketsearch.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class FastPath:
    device_type: str = "cpu"  # "cpu" or "cuda": the autocast device type
    autocast_dtype: torch.dtype | None = None  # torch.bfloat16, or None for plain fp32
    memory_format: torch.memory_format = torch.channels_last
    compile: bool = False

    @property
    def fold_batchnorm(self) -> bool:
        """Attack passes with each batch norm folded into its conv (core/batchnorm_folding.py). Not when
        compiled: the folding swaps module forwards per attack, which would re-trigger compilation."""
        return not self.compile

    def autocast(self) -> ContextManager:
        """The context the forward passes (attack and training) run in; backward runs outside it."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def forward_module(self, model: nn.Module) -> nn.Module:
        """The module to call for forward passes: `model` itself, or a compiled wrapper sharing its
        parameters (train/eval mode and in-place mask updates reach it; state dicts stay `model`'s)."""
        if not self.compile:
            return model
        # dynamic=False: a trial has few batch shapes (train, last eval batch, guard); each compiles once.
        return torch.compile(model, dynamic=False)

    def describe(self) -> str:
        dtype = "bf16 autocast" if self.autocast_dtype is not None else "fp32"
        layout = "channels-last" if self.memory_format == torch.channels_last else "contiguous"
        extras = (", compiled" if self.compile else "") + (", BN folded in attacks" if self.fold_batchnorm else "")
        return f"{self.device_type} {dtype}, {layout}{extras}"


def resolve_fastpath(precision: str, compile: bool, device: str | torch.device) -> FastPath:
    """The fast path for `train.precision` and `train.compile` on `device`.

    `auto` is bf16 autocast on CUDA devices that support bf16 (compute capability 8.0 and later) and
    fp32 elsewhere; `bf16` insists and fails on a GPU without bf16; `fp32` never autocasts.
    Turns cuDNN autotuning on for a CUDA device (a process-wide setting).
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise UserError(f"train.precision: unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    bf16_ok = not cuda or torch.cuda.is_bf16_supported(including_emulation=False)
    if precision == "bf16" and not bf16_ok:
        raise UserError(f"train.precision: bf16 asked for but {torch.cuda.get_device_name(device)} has no bf16 "
                        "support; use fp32 or auto")
    use_bf16 = precision == "bf16" or (precision == "auto" and cuda and bf16_ok)
    if cuda:
        torch.backends.cudnn.benchmark = True
    return FastPath(device_type=device.type, autocast_dtype=torch.bfloat16 if use_bf16 else None,
                    memory_format=torch.channels_last, compile=compile)
