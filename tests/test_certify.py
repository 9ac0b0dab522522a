"""Certified bounds (core.certify): sound on trained networks, exact where a MILP can check, trainable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.certified_training import (
    certified_training_loss,
    ramp,
    recording_batch_statistics,
    schedule,
    smoothed,
)
from ticketsearch.core.certify import METHODS, certified_accuracy, input_box, margin_lower_bounds, margin_matrix
from ticketsearch.core.interval_bounds import batch_norm_statistics, interval_bounds, leaf_layers
from ticketsearch.core.linear_bounds import _forward_boxes
from ticketsearch.core.data import prepare_data
from ticketsearch.core.models import MODELS, create_model
from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights
from ticketsearch.errors import UserError
from ticketsearch.spec import AttackConfig

FEED_FORWARD = ("small_cnn", "vgg16_bn", "cnn_4layer", "cnn_7layer")  # CROWN bounds these


@pytest.fixture(scope="module")
def digits():
    data = prepare_data("digits", "~/data", val_split=200, fraction=1.0)
    return data.train_x.float() / 255, data.train_y, data.test_x.float() / 255, data.test_y, data.info


def build(arch: str, info, width: float = 0.25) -> nn.Module:
    kwargs = {"depth": 16} if arch == "wide_resnet" else {}
    if arch in ("resnet18", "resnet50"):
        width = 1.0
    return create_model(arch, width=width, num_classes=10, in_channels=1, mean=info.mean, std=info.std, **kwargs)


def train(model, x, y, epochs, loss=None, lr=1e-2, after_step=lambda: None):
    """Adam on 64-example batches; `loss(model, x, y, step)` defaults to cross-entropy."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            batch = order[i : i + 64]
            value = loss(model, x[batch], y[batch], step) if loss else F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            after_step()
            step += 1
    return model.eval()


def margins(model, x, y):
    with torch.no_grad():
        return (margin_matrix(y, 10) @ model(x).unsqueeze(-1)).squeeze(-1)


def pgd(model, x, y, eps, steps=20):
    attack = build_attack(model, AttackConfig(kind="pgd", eps=eps, alpha=eps / 4, steps=steps), 10, "attack.eval")
    return attack(x, y).detach()


def assert_sound(model, x, y, eps, methods, samples=500):
    """No margin of random points in the ball (half of them at its corners) or of PGD's adversarial
    examples falls below any method's certified lower bound."""
    torch.manual_seed(1)
    noise = torch.rand(samples, *x.shape) * 2 - 1
    noise[: samples // 2] = noise[: samples // 2].sign()  # corners: where a ReLU net's extremes lie
    points = (x + eps * noise).clamp(0, 1).flatten(0, 1)
    labels = y.repeat(samples)
    seen = torch.cat([margins(model, points, labels).view(samples, *y.shape, 9),
                      margins(model, pgd(model, x, y, eps), y).unsqueeze(0)]).amin(0)  # fmt: skip
    for method in methods:
        with torch.no_grad():
            bound = margin_lower_bounds(model, x, y, eps, method)
        assert bound.shape == (len(y), 9)
        assert bool((bound <= seen + 1e-4).all()), f"{method}: {float((bound - seen).max()):.4g} above a seen margin"


# ------------------------------------------------------------------------------- every registered model


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_registered_model_is_bounded_and_exact_at_eps_0(arch, digits):
    # A bound rule that does not mirror its module's forward shows here: at eps 0 the box is a point
    # and every bound must equal the margin itself. Random batch-norm statistics make BN no identity.
    *_, info = digits
    torch.manual_seed(0)
    model = build(arch, info).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 4, 9])
    # Full CROWN costs a backward pass per layer with a row per neuron: only the two small nets here.
    methods = METHODS if arch in ("small_cnn", "cnn_4layer") else ("ibp", "crown-ibp") if arch in FEED_FORWARD else ("ibp",)
    for method in methods:
        with torch.no_grad():
            bound = margin_lower_bounds(model, x, y, 0.0, method)
        torch.testing.assert_close(bound, margins(model, x, y), rtol=1e-4, atol=1e-4)
    if arch not in FEED_FORWARD:
        with pytest.raises(UserError, match=r"^certify: CROWN .*; method='ibp' supports it$") as info:
            margin_lower_bounds(model, x, y, 0.01, "crown")
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- soundness, trained nets


@pytest.fixture(scope="module")
def small_cnn(digits):
    x, y, *_, info = digits
    return train(build("small_cnn", info), x, y, epochs=2)


def test_sound_on_a_trained_conv_net_with_max_pooling_and_batch_norm(small_cnn, digits):
    *_, tx, ty, _ = digits
    assert_sound(small_cnn, tx[:6], ty[:6], 0.02, METHODS)


def test_sound_on_a_trained_residual_net(digits):
    x, y, tx, ty, info = digits
    model = train(build("resnet20", info), x[:600], y[:600], epochs=1)
    assert_sound(model, tx[:6], ty[:6], 0.01, ("ibp",))


def test_pruned_weights_are_zero_in_the_bounds_and_bounds_stay_sound(digits):
    x, y, tx, ty, info = digits
    model = train(build("cnn_4layer", info, width=0.5), x, y, epochs=2)
    weights = prunable_weights(model)
    mask = magnitude_prune(weights, Mask.ones(weights), 0.8, "global")
    apply = MaskApplier(weights, mask)
    apply()
    model = train(model.train(), x, y, epochs=1, lr=1e-3, after_step=apply)
    assert mask.sparsity() == pytest.approx(0.8, abs=1e-3)
    assert all(bool((w[m == 0] == 0).all()) for w, m in zip(apply.params, apply.masks))
    assert_sound(model, tx[:6], ty[:6], 0.02, METHODS)
    # A weight that is zero for the network is zero for the bounds: putting the pruned weights back
    # changes both the margins and the bounds.
    with torch.no_grad():
        bound = margin_lower_bounds(model, tx[:6], ty[:6], 0.02, "crown")
        apply.params[0].add_((1 - apply.masks[0]) * 0.1)
        assert not torch.allclose(margin_lower_bounds(model, tx[:6], ty[:6], 0.02, "crown"), bound)


# -------------------------------------------------------------------------- exactness against a MILP


def exact_min_margin(model: nn.Sequential, x: torch.Tensor, y: int, j: int, eps: float) -> float:
    """min over the clipped ball of logit_y - logit_j for flatten-linear-relu-linear, by scipy's MILP.

    Variables: x (d), h (k hidden), a (k binary). With l <= W x + b <= u (exact interval bounds of
    one affine layer): h >= W x + b, h >= 0, h <= W x + b - l (1 - a), h <= u a.
    """
    _, first, _, last = model
    w, b = first.weight.detach().double().numpy(), first.bias.detach().double().numpy()
    lo_x = (x.flatten() - eps).clamp(0, 1).double().numpy()
    hi_x = (x.flatten() + eps).clamp(0, 1).double().numpy()
    centre, radius = w @ (lo_x + hi_x) / 2 + b, np.abs(w) @ (hi_x - lo_x) / 2
    l, u = centre - radius, centre + radius
    d, k = w.shape[1], w.shape[0]
    eye, zeros = np.eye(k), np.zeros((k, k))
    rows = np.block([
        [-w, eye, zeros],            # h - W x >= b
        [-w, eye, -np.diag(l)],      # h - W x - l a <= b - l
        [np.zeros((k, d)), eye, -np.diag(u)],  # h - u a <= 0
    ])  # fmt: skip
    lower = np.concatenate([b, np.full(k, -np.inf), np.full(k, -np.inf)])
    upper = np.concatenate([np.full(k, np.inf), b - l, np.zeros(k)])
    c_out = (last.weight[y] - last.weight[j]).detach().double().numpy()
    cost = np.concatenate([np.zeros(d), c_out, np.zeros(k)])
    bounds = Bounds(np.concatenate([lo_x, np.zeros(k), np.zeros(k)]),
                    np.concatenate([hi_x, np.maximum(u, 0), np.ones(k)]))  # fmt: skip
    integrality = np.concatenate([np.zeros(d + k), np.ones(k)])
    result = milp(cost, constraints=LinearConstraint(rows, lower, upper), integrality=integrality, bounds=bounds)
    assert result.success, result.message
    return float(result.fun + (last.bias[y] - last.bias[j]).item())


def test_crown_is_below_the_exact_minimum_and_ibp_below_crown(digits):
    x, y, tx, ty, _ = digits
    torch.manual_seed(0)
    model = train(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)), x, y, epochs=5)
    eps, count = 0.03, 4
    with torch.no_grad():
        ibp = margin_lower_bounds(model, tx[:count], ty[:count], eps, "ibp")
        crown = margin_lower_bounds(model, tx[:count], ty[:count], eps, "crown")
    others = [[j for j in range(10) if j != int(label)] for label in ty[:count]]
    exact = torch.tensor([[exact_min_margin(model, tx[i], int(ty[i]), j, eps) for j in others[i]] for i in range(count)],
                         dtype=crown.dtype)  # fmt: skip
    assert bool((crown <= exact + 1e-4).all())
    # CROWN's backward bound alone (crown-ibp: the same pass; one affine layer makes IBP's hidden
    # bounds exact), before "crown" takes the larger of it and IBP's.
    with torch.no_grad():
        relaxed = margin_lower_bounds(model, tx[:count], ty[:count], eps, "crown-ibp")
    assert bool((ibp <= relaxed + 1e-5).all()) and torch.equal(crown, torch.maximum(relaxed, ibp))
    # The MILP is the true minimum: no sampled point goes below it.
    sampled = (tx[:count] + eps * torch.randn(256, count, 1, 8, 8).sign()).clamp(0, 1)
    seen = margins(model, sampled.flatten(0, 1), ty[:count].repeat(256)).view(256, count, 9).amin(0)
    assert bool((exact <= seen + 1e-4).all())
    # CROWN is useful: it closes most of IBP's gap to the exact minimum on this net.
    assert float((exact - crown).mean()) < 0.5 * float((exact - ibp).mean())


# ---------------------------------------------------------------------------------- certified training


@pytest.fixture(scope="module")
def ibp_trained(digits):
    """cnn_4layer trained with Gowal et al.'s IBP loss and schedule at eps 0.1 on digits."""
    x, y, *_, info = digits
    model = build("cnn_4layer", info, width=0.5)
    steps_per_epoch = -(-len(x) // 64)

    def loss(model, xb, yb, step):
        mix = schedule(step, eps=0.1, warmup=steps_per_epoch, ramp_steps=8 * steps_per_epoch, method="ibp")
        return certified_training_loss(model, xb, yb, mix)

    return train(model, x, y, epochs=14, loss=loss, lr=3e-3)


def test_ibp_training_certifies_well_above_chance_and_crown_certifies_more(ibp_trained, digits):
    *_, tx, ty, _ = digits
    ibp = certified_accuracy(ibp_trained, tx, ty, 0.1, "ibp")
    crown = certified_accuracy(ibp_trained, tx, ty, 0.1, "crown")
    assert ibp > 0.5, ibp  # chance is 0.1
    assert crown >= ibp
    with torch.no_grad():  # CROWN's own relaxation tightens some margins beyond IBP's
        gain = margin_lower_bounds(ibp_trained, tx[:100], ty[:100], 0.1, "crown") - margin_lower_bounds(
            ibp_trained, tx[:100], ty[:100], 0.1, "ibp")
    assert float(gain.max()) > 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_certified_below_pgd_robust_below_clean_accuracy(ibp_trained, digits, method):
    *_, tx, ty, _ = digits
    x, y = tx[:200], ty[:200]
    adversarial = pgd(ibp_trained, x, y, 0.1)
    with torch.no_grad():
        clean = float((ibp_trained(x).argmax(1) == y).float().mean())
        robust = float((ibp_trained(adversarial).argmax(1) == y).float().mean())
    certified = certified_accuracy(ibp_trained, x, y, 0.1, method, batch_size=64)
    assert 0 < certified <= robust <= clean


def test_training_loss_mixes_and_is_differentiable(digits):
    x, y, *_, info = digits
    model = build("cnn_7layer", info, width=0.125).train()
    clean = certified_training_loss(model, x[:32], y[:32], schedule(0, eps=0.1, warmup=10, ramp_steps=10))
    torch.testing.assert_close(clean, F.cross_entropy(model(x[:32]), y[:32]))
    for method in ("ibp", "crown-ibp"):
        mix = schedule(15, eps=0.1, warmup=10, ramp_steps=10, method=method)
        assert mix.eps == pytest.approx(0.1 * smoothed(0.5)) and mix.kappa == pytest.approx(0.75 if method == "ibp" else 0.5)
        assert mix.beta == pytest.approx(0 if method == "ibp" else 0.5)
        model.zero_grad()
        loss = certified_training_loss(model, x[:32], y[:32], mix)
        loss.backward()
        assert loss > clean
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_ramp():
    assert [ramp(s, 2, 4, 1.0, 0.5) for s in (0, 2, 4, 6, 9)] == [1.0, 1.0, 0.75, 0.5, 0.5]
    assert ramp(3, 3, 0, 0.0, 1.0) == 1.0


def test_smoothed_eps_ramp_starts_slowly_and_ends_linearly_at_one():
    values = [smoothed(t / 100) for t in range(101)]
    assert values[0] == 0 and values[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert smoothed(0.1) < 0.1 / 10  # polynomial start: small eps grows slowly
    slopes = [b - a for a, b in zip(values[30:], values[31:])]  # linear after the midpoint 0.25
    assert max(slopes) == pytest.approx(min(slopes), rel=1e-6)
    assert schedule(100, eps=0.1, warmup=10, ramp_steps=50).eps == pytest.approx(0.1)  # it ends at eps


def test_training_bounds_use_the_clean_batchs_batch_norm_statistics(digits):
    # At eps 0 the bounds are exact, so they equal the margins of the network as the clean pass ran
    # it: in training mode, with the batch's statistics, not the running ones.
    x, y, *_, info = digits
    model = build("cnn_7layer", info, width=0.125)
    train(model, x[:256], y[:256], epochs=1)  # running statistics that differ from any one batch's
    model.train()
    with recording_batch_statistics(model) as statistics:
        clean = model(x[:64])
    assert len(statistics) == sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    labels = y[:64]
    spec = margin_matrix(labels, 10)
    exact = (spec @ clean.unsqueeze(-1)).squeeze(-1)
    with batch_norm_statistics(statistics):
        ibp = margin_lower_bounds(model, x[:64], labels, 0.0, "ibp")
    torch.testing.assert_close(ibp, exact, atol=1e-4, rtol=1e-4)
    model.eval()  # without them, the running statistics: the network as evaluated
    with torch.no_grad():
        evaluated = (spec @ model(x[:64]).unsqueeze(-1)).squeeze(-1)
        assert (evaluated - exact).abs().max() > 1e-2  # the two modes do differ on this net
        torch.testing.assert_close(margin_lower_bounds(model, x[:64], labels, 0.0, "ibp"), evaluated,
                                   atol=1e-4, rtol=1e-4)
    # The gradient of the robust loss reaches the statistics' inputs, as batch norm's own does.
    model.train()
    loss = certified_training_loss(model, x[:64], labels, schedule(1, eps=0.05, warmup=0, ramp_steps=1))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_linear_layer_after_a_pool_is_bounded_as_one_affine_map(digits):
    # cnn_7layer on 8x8 images upsamples its 4x4 map 16-fold before the hidden layer: bounding the
    # hidden layer through the pool keeps the copies' correlation, so its bounds are much tighter than
    # the pool's box pushed through the linear layer, and sound (no sampled point below them).
    x, y, *_, info = digits
    model = build("cnn_7layer", info, width=0.125).eval()
    layers = leaf_layers(model)
    hidden = next(i for i, (_, layer) in enumerate(layers) if isinstance(layer, nn.Linear))
    assert isinstance(layers[hidden - 2][1], nn.AdaptiveAvgPool2d)
    with torch.no_grad():
        boxes = _forward_boxes(layers[: hidden + 1], input_box(x[:16], 0.05), crown_intermediate=False)
        merged = boxes[-1]
        naive = interval_bounds(layers[hidden][1], boxes[-2])
        assert bool((merged[0] >= naive[0] - 1e-5).all() and (merged[1] <= naive[1] + 1e-5).all())
        assert float((merged[1] - merged[0]).mean()) < 0.5 * float((naive[1] - naive[0]).mean())
        prefix = nn.Sequential(*[layer for _, layer in layers[: hidden + 1]])
        for _ in range(20):
            point = (x[:16] + 0.05 * torch.rand_like(x[:16]).mul(2).sub(1)).clamp(0, 1)
            value = prefix(point)
            assert bool((value >= merged[0] - 1e-4).all() and (value <= merged[1] + 1e-4).all())
