"""One training epoch and one evaluation pass, with at most one host read-back each.

Data arrive as uint8 tensors already on the model's device; batches are cut by index, converted to
float [0, 1] and augmented on the device (no DataLoader, no per-image PIL transforms). Running sums
stay on the device and are read once at the end, so a GPU never waits on the host inside an epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ticketsearch.core.attacks import Perturb
from ticketsearch.core.data.augment import augment_batch, to_float
from ticketsearch.core.fastpath import FastPath
from ticketsearch.core.training_objectives import objective_for


@dataclass(frozen=True)
class EpochResult:
    loss: float  # mean training objective (cross-entropy unless trades or mart) over the batches
    accuracy: float  # on the (adversarial) training batches
    examples: int
    steps: int
    seconds: float  # wall time of the epoch, attack passes included
    last_lr: float


@dataclass(frozen=True)
class Augmentation:
    crop_padding: int
    flip: bool

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip


def batches_per_epoch(examples: int, batch_size: int) -> int:
    # The last partial batch is dropped when there is at least one full batch: a batch of one or two
    # images gives batch norm meaningless statistics.
    return max(1, examples // batch_size)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int,
    attack: Perturb,
    after_step: Callable[[], None],
    lr_for_step: Callable[[int], float],
    first_step: int,
    shuffle: torch.Generator,
    augmentation: Augmentation,
    augment_generator: torch.Generator | None,
    fastpath: FastPath | None = None,
    round_steps: int | None = None,
) -> EpochResult:
    """Train one epoch under the regime `attack` was built from; `after_step` re-applies the masks
    after each update.

    The loss is the regime's training objective (core/training_objectives.py: cross-entropy on
    attack(images) unless the regime is trades or mart), and the attack generates the training
    examples in the regime's batch-norm mode.
    The `fastpath` (default: fp32, channels-last) gives the memory format, and the attack's passes and
    the training forward pass run under its autocast (backward outside it, as autocast wants). Nothing
    in a step reads a tensor back to the host: the loss and accuracy sums stay on the device.
    `round_steps`: the optimiser steps of the whole round (`first_step` counts from its start), so an
    objective with a schedule (certified training's eps ramp) knows the round's progress; without it,
    progress is 1 (the end of every schedule).
    """
    start = time.perf_counter()
    fastpath = fastpath or FastPath(device_type=images.device.type)
    device = images.device
    order = torch.randperm(images.shape[0], generator=shuffle).to(device)
    steps = batches_per_epoch(images.shape[0], batch_size)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    lr = optimizer.param_groups[0]["lr"]
    objective = objective_for(attack)
    for index in range(steps):
        batch = order[index * batch_size : (index + 1) * batch_size]
        x = to_float(images[batch]).contiguous(memory_format=fastpath.memory_format)
        if augmentation.active:
            x = augment_batch(x, crop_padding=augmentation.crop_padding, flip=augmentation.flip, generator=augment_generator)
        y = labels[batch]
        # x and x_adv stay fp32 under autocast (only conv/matmul inputs are cast), so eps holds exactly;
        # autocast computes cross-entropy, softmax and KL in fp32.
        with fastpath.autocast():
            progress = (first_step + index) / round_steps if round_steps else 1.0
            loss, logits = objective(model, attack, x, y, progress)
        lr = lr_for_step(first_step + index)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        after_step()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(dim=1) == y).sum()
        seen += y.shape[0]
    totals = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()  # the one read-back
    return EpochResult(
        loss=totals[0] / seen,
        accuracy=totals[1] / seen,
        examples=seen,
        steps=steps,
        seconds=time.perf_counter() - start,
        last_lr=lr,
    )


@dataclass(frozen=True)
class Accuracy:
    clean: float
    robust: float
    examples: int


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attack: Perturb,
    *,
    batch_size: int,
    fastpath: FastPath | None = None,
) -> Accuracy:
    """Clean and robust accuracy in eval mode (under the fast path's autocast when it has one).

    An example counts as robust only when it is classified correctly both clean and under attack
    (as AutoAttack counts), so robust accuracy never exceeds clean accuracy.
    """
    model.eval()
    device = images.device
    fastpath = fastpath or FastPath(device_type=device.type)
    clean_correct = torch.zeros((), device=device, dtype=torch.long)
    robust_correct = torch.zeros((), device=device, dtype=torch.long)
    for start in range(0, images.shape[0], batch_size):
        x = to_float(images[start : start + batch_size]).contiguous(memory_format=fastpath.memory_format)
        y = labels[start : start + batch_size]
        with fastpath.autocast():
            with torch.no_grad():
                clean_ok = model(x).argmax(dim=1) == y
            x_adv = attack(x, y)
            with torch.no_grad():
                robust_ok = clean_ok & (model(x_adv).argmax(dim=1) == y)
        clean_correct += clean_ok.sum()
        robust_correct += robust_ok.sum()
    count = images.shape[0]
    clean, robust = torch.stack([clean_correct, robust_correct]).tolist()
    return Accuracy(clean=clean / count, robust=robust / count, examples=count)
