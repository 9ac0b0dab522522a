import pytest
import torch

from ticketsearch.core.models import create_model
from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights, random_mask_like
from ticketsearch.errors import UserError


def model(arch="resnet20", width=0.5):
    torch.manual_seed(0)
    return create_model(arch, width=width, num_classes=10, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_iterative_pruning_reaches_exact_sparsity_and_masks_only_shrink(scope):
    net = model()
    weights = prunable_weights(net)
    mask = Mask.ones(weights)
    total = mask.total()
    for round_ in range(1, 6):
        previous = {n: t.clone() for n, t in mask.tensors.items()}
        alive = mask.remaining()
        mask = magnitude_prune(weights, mask, 0.2, scope)
        if scope == "global":
            assert mask.remaining() == alive - round(0.2 * alive)
        for name, tensor in mask.tensors.items():
            assert not bool((tensor > previous[name]).any()), "a pruned weight came back"
        MaskApplier(weights, mask)()
        # 1-(1-p)^R up to rounding: at most one weight per layer per round off
        assert mask.sparsity() == pytest.approx(1 - 0.8**round_, abs=len(weights) * round_ / total + 1e-9)
    if scope == "layerwise":
        for layer in mask.report():
            assert layer.sparsity == pytest.approx(1 - 0.8**5, abs=5 / layer.weights + 1e-9)


def test_global_pruning_removes_the_smallest_magnitudes():
    net = model()
    weights = prunable_weights(net)
    mask = magnitude_prune(weights, Mask.ones(weights), 0.5, "global")
    kept = torch.cat([w.detach().abs().flatten()[m.flatten().bool()] for w, m in zip(weights.values(), mask.tensors.values())])
    pruned = torch.cat([w.detach().abs().flatten()[~m.flatten().bool()] for w, m in zip(weights.values(), mask.tensors.values())])
    assert kept.min() >= pruned.max()


def test_exclusions_are_untouched():
    net = model()
    all_weights = prunable_weights(net)
    weights = prunable_weights(net, ("first_conv", "classifier"))
    first_conv, classifier = next(iter(all_weights)), list(all_weights)[-1]
    assert first_conv not in weights and classifier not in weights
    assert isinstance(net.classifier, torch.nn.Linear) and net.classifier.weight is all_weights[classifier]
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    MaskApplier(weights, magnitude_prune(weights, Mask.ones(weights), 0.9, "global"))()
    after = dict(net.named_parameters())
    assert torch.equal(before[first_conv], after[first_conv]) and torch.equal(before[classifier], after[classifier])
    with pytest.raises(UserError, match="prune.exclude"):
        prunable_weights(net, ("no_such_layer*",))


def test_pruned_weights_stay_exactly_zero_through_momentum_and_weight_decay():
    net = model().to(memory_format=torch.channels_last)
    weights = prunable_weights(net)
    mask = magnitude_prune(weights, Mask.ones(weights), 0.7, "global")
    apply = MaskApplier(weights, mask)
    apply()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.rand(8, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (8,))
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        apply()
    for name, w in weights.items():
        assert bool((w[mask.tensors[name] == 0] == 0).all())
        assert bool((w[mask.tensors[name] == 1] != 0).any())


def test_mask_refuses_non_binary_values_and_round_trips():
    with pytest.raises(ValueError):
        Mask({"w": torch.tensor([0.0, 0.5, 1.0])})
    net = model()
    weights = prunable_weights(net)
    mask = magnitude_prune(weights, Mask.ones(weights), 0.3, "global")
    state = mask.state_dict()
    assert all(t.dtype == torch.bool for t in state.values())
    again = Mask.from_state_dict(state, weights)
    assert all(torch.equal(again.tensors[n].bool(), mask.tensors[n].bool()) for n in weights)
    with pytest.raises(UserError, match="mask"):
        Mask.from_state_dict(state, prunable_weights(model(width=1.0)))


def test_random_mask_keeps_per_layer_counts():
    net = model()
    weights = prunable_weights(net)
    mask = magnitude_prune(weights, Mask.ones(weights), 0.6, "global")
    control = random_mask_like(mask, torch.Generator().manual_seed(0))
    for a, b in zip(mask.report(), control.report()):
        assert a.remaining == b.remaining
    assert any(not torch.equal(mask.tensors[n], control.tensors[n]) for n in weights)
