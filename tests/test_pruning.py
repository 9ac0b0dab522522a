import pytest
import torch

from ticketsearch.core.models import create_model
from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights, random_mask_like
from ticketsearch.errors import UserError


def model(arch="resnet20", width=0.5):
    torch.manual_seed(0)
    return create_model(arch, width=width, num_classes=10, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.mark.parametrize("scope", ["global", "global_normalized", "layerwise"])
def test_iterative_pruning_reaches_exact_sparsity_and_masks_only_shrink(scope):
    net = model()
    weights = prunable_weights(net)
    mask = Mask.ones(weights)
    total = mask.total()
    for round_ in range(1, 6):
        previous = {n: t.clone() for n, t in mask.tensors.items()}
        alive = mask.remaining()
        mask = magnitude_prune(weights, mask, 0.2, scope)
        if scope != "layerwise":
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


def test_raw_global_pruning_of_resnet20_at_98_percent_empties_its_classifier_and_is_refused():
    net = model(width=1.0)  # at initialisation, as a one-shot prune at the boosting-ticket sweep's edge
    weights = prunable_weights(net)
    with pytest.raises(UserError) as refused:
        magnitude_prune(weights, Mask.ones(weights), 0.98, "global")
    assert str(refused.value) == (
        "prune: pruning to sparsity 98.00% (global) removes every weight of body.classifier.weight; use "
        "prune.scope: global_normalized or layerwise, a smaller ratio, prune.exclude, or prune.allow_empty_layers: true")
    emptied = magnitude_prune(weights, Mask.ones(weights), 0.98, "global", allow_empty_layers=True)
    assert {layer.name: layer.remaining for layer in emptied.report()}["body.classifier.weight"] == 0
    assert magnitude_prune(weights, Mask.ones(weights), 0.98, "layerwise").remaining() > 0


def test_global_normalized_pruning_ignores_each_layer_s_scale():
    """Raw global pruning empties a layer whose weights are smaller than the others'; dividing by each
    layer's mean |w| keeps every layer near the target (all convs here share one init law)."""
    net = model(width=1.0)
    weights = prunable_weights(net, exclude=("classifier",))  # a uniform init law, unlike the convs
    largest = max(weights, key=lambda name: weights[name].numel())
    with torch.no_grad():
        weights[largest].mul_(0.05)  # as a layer that training shrank, or an init of another scale
    with pytest.raises(UserError, match=f"removes every weight of {largest}"):
        magnitude_prune(weights, Mask.ones(weights), 0.9, "global")
    mask = magnitude_prune(weights, Mask.ones(weights), 0.98, "global_normalized")
    assert mask.sparsity() == pytest.approx(0.98, abs=1e-4)
    for layer in mask.report():
        # |w| / mean |w| has the same law in every layer, so each sits at the target up to sampling
        # noise (the smallest layer, the first conv, has 432 weights).
        assert layer.sparsity == pytest.approx(0.98, abs=0.015), layer


def test_a_layer_already_empty_is_not_refused_again():
    net = model()
    weights = prunable_weights(net)
    first = next(iter(weights))
    tensors = {n: torch.ones_like(w) for n, w in weights.items()}
    tensors[first] = torch.zeros_like(weights[first])
    pruned = magnitude_prune(weights, Mask(tensors), 0.2, "global_normalized")
    assert pruned.remaining() == Mask(tensors).remaining() - round(0.2 * Mask(tensors).remaining())


def test_unknown_scope_lists_the_known_ones():
    weights = prunable_weights(model())
    with pytest.raises(UserError, match="^prune.scope: unknown scope 'local'; known: global, global_normalized, layerwise$"):
        magnitude_prune(weights, Mask.ones(weights), 0.2, "local")
