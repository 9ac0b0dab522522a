"""Deterministic stratified index splits: the validation hold-out and data-limited training subsets,
and the stratified order in which the validation and test splits are stored.

Per-class counts are proportional to the class sizes and rounded by the largest-remainder (Hamilton)
method, so the total is exact and every class count is within 1 of its exact proportional share.
Within a class, examples are taken in the order of one seeded permutation of all indices: the
first k of each class are chosen, so a larger total contains a smaller one whenever no class count
shrinks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ticketsearch.errors import UserError


def proportional_counts(class_sizes: list[int], total: int) -> list[int]:
    """Split `total` over classes in proportion to `class_sizes` (largest remainder, integers).

    Ties between equal remainders go to the lower class index, so the result is deterministic.
    """
    n = sum(class_sizes)
    counts = [total * size // n for size in class_sizes]
    remainders = [total * size % n for size in class_sizes]
    order = sorted(range(len(class_sizes)), key=lambda c: (-remainders[c], c))
    for c in order[: total - sum(counts)]:
        counts[c] += 1
    return counts


def _take_per_class(labels: Tensor, counts: list[int], seed: int) -> Tensor:
    """The first counts[i] examples of class i in one seeded permutation of all indices, sorted."""
    classes = torch.unique(labels).tolist()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    permuted_labels = labels[perm]
    chosen = [perm[permuted_labels == c][:k] for c, k in zip(classes, counts)]
    return torch.sort(torch.cat(chosen)).values


def _class_sizes(labels: Tensor) -> tuple[list[int], list[int]]:
    classes, sizes = torch.unique(labels.cpu(), return_counts=True)
    return classes.tolist(), sizes.tolist()


def stratified_split(labels: Tensor, held_out: int | float, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices into (keep, held) with `held_out` examples (a count, or a fraction in (0, 1)).

    Both index tensors are sorted int64 and together cover every index exactly once.
    """
    labels = labels.cpu()
    n = len(labels)
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)):
        raise UserError(
            f"data.val_split: expected a count or a fraction in (0, 1), got {held_out!r}"
        )
    if isinstance(held_out, float):
        if not 0.0 < held_out < 1.0:
            raise UserError(f"data.val_split: a fraction must lie in (0, 1), got {held_out}")
        count = round(held_out * n)
    else:
        count = held_out
    if not 1 <= count < n:
        raise UserError(
            f"data.val_split: {held_out} gives {count} of {n} training examples; "
            f"it must hold out at least 1 and fewer than {n}"
        )
    _, sizes = _class_sizes(labels)
    held = _take_per_class(labels, proportional_counts(sizes, count), seed)
    keep_mask = torch.ones(n, dtype=torch.bool)
    keep_mask[held] = False
    return keep_mask.nonzero().squeeze(1), held


def _smallest_fraction_keeping_all_classes(sizes: list[int]) -> str:
    """The smallest fraction giving every class >= 1, printed so it rounds back to its count."""
    n = sum(sizes)
    total = next(t for t in range(len(sizes), n + 1) if min(proportional_counts(sizes, t)) >= 1)
    for digits in range(2, 17):
        text = f"{total / n:.{digits}g}"
        if round(float(text) * n) == total:
            return text
    return repr(total / n)


def stratified_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Sorted indices of a stratified `fraction` in (0, 1] of the examples: round(fraction * N).

    Raises a UserError naming data.fraction when a class would get no example.
    """
    labels = labels.cpu()
    n = len(labels)
    is_number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not is_number or not 0 < fraction <= 1:
        raise UserError(f"data.fraction: expected a fraction in (0, 1], got {fraction!r}")
    if fraction == 1:
        return torch.arange(n)
    classes, sizes = _class_sizes(labels)
    counts = proportional_counts(sizes, round(fraction * n))
    empty = [(size, c) for c, size, k in zip(classes, sizes, counts) if k == 0]
    if empty:
        size, c = min(empty)  # the smallest class left empty is the one that limits the fraction
        raise UserError(
            f"data.fraction: {fraction} of {n} training examples leaves class {c} "
            f"({size} examples) with none; "
            f"use data.fraction >= {_smallest_fraction_keeping_all_classes(sizes)}"
        )
    return _take_per_class(labels, counts, seed)


def stratified_order(labels: Tensor, seed: int) -> Tensor:
    """A seeded permutation of indices in which every prefix is as balanced as the classes allow.

    Round robin over the classes of one seeded shuffle: round r holds the r-th example of every class
    that still has one, classes in a seeded order. The first n examples therefore hold floor(n/k) or
    floor(n/k) + 1 of each of k classes (until the smaller classes run out), so a trainer that
    evaluates the first n of a split evaluates a stratified subset, the same one for every trial.
    """
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=generator)
    shuffled = labels[perm]
    classes, inverse = torch.unique(shuffled, return_inverse=True)
    class_rank = torch.randperm(len(classes), generator=generator)[inverse]
    # Rank of each example within its class, in the shuffled order.
    grouped = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse, minlength=len(classes))
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    within = torch.empty_like(grouped)
    within[grouped] = torch.arange(len(labels)) - starts
    return perm[torch.argsort(within * len(classes) + class_rank, stable=True)]
