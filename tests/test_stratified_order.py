import pytest
import torch

from ticketsearch.core.data import prepare_data
from ticketsearch.core.data.splits import stratified_order


def _labels(sizes: list[int]) -> torch.Tensor:
    labels = torch.cat([torch.full((size,), c) for c, size in enumerate(sizes)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize("sizes", [[30, 30, 30], [50, 7, 23, 40], [1, 100]])
def test_every_prefix_is_as_balanced_as_the_classes_allow(sizes):
    labels = _labels(sizes)
    order = stratified_order(labels, seed=5)
    assert torch.equal(torch.sort(order).values, torch.arange(len(labels)))  # a permutation
    for n in range(1, len(labels) + 1):
        counts = torch.bincount(labels[order[:n]], minlength=len(sizes))
        open_classes = [c for c, size in enumerate(sizes) if counts[c] < size]  # not yet exhausted
        if open_classes:
            # Every class still holding examples is within one of the largest count so far.
            assert int(counts.max()) - min(int(counts[c]) for c in open_classes) <= 1, (n, counts)
    assert torch.equal(order, stratified_order(labels, seed=5))
    assert not torch.equal(order, stratified_order(labels, seed=6))


def test_validation_and_test_prefixes_are_stratified_and_fixed_by_the_split_seed():
    data = prepare_data("digits", "~/data", val_split=300, fraction=1.0, split_seed=0)
    for labels in (data.val_y, data.test_y):
        for n in (10, 57, 100, 250):
            counts = torch.bincount(labels[:n], minlength=10)
            assert int(counts.max() - counts.min()) <= 1, (n, counts)
    again = prepare_data("digits", "~/data", val_split=300, fraction=0.5, split_seed=0)
    assert torch.equal(data.val_x, again.val_x) and torch.equal(data.test_x, again.test_x)
    other = prepare_data("digits", "~/data", val_split=300, fraction=1.0, split_seed=1)
    assert not torch.equal(data.val_x[:100], other.val_x[:100])
    # The test split is the same set of images whatever the seed; only its order changes.
    assert torch.equal(torch.sort(data.test_y).values, torch.sort(other.test_y).values)
