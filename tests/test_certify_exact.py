"""Complete verification of a conv net by a MILP: every bound method stays below the exact minimum margin.

test_certify.py checks the bounds against an exact MILP on flatten-linear-relu-linear, where IBP's hidden
bounds are already exact. Here the net is cnn_4layer (two convs, an upsampling pool and a hidden layer:
three ReLU layers), IBP-trained so the bounds are neither trivially exact nor vacuous, and the exact
minimum of each margin over the clipped L-inf ball comes from the mixed-integer encoding of Tjeng et
al. 2019 ("Evaluating Robustness of Neural Networks with Mixed Integer Programming"), solved by scipy's
`milp` (HiGHS). benchmarks/complete_verification.py counts images certified this way.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from ticketsearch.core.certified_training import certified_training_loss, schedule
from ticketsearch.core.certify import METHODS, margin_lower_bounds, margin_matrix
from ticketsearch.core.data import prepare_data
from ticketsearch.core.interval_bounds import leaf_layers
from ticketsearch.core.models import create_model

# Pre-activation bounds are computed in float64 and widened by this much (activation units) before they
# become big-M constants: a bound a rounding error too tight would cut real inputs off the MILP.
SLACK = 1e-6

# ------------------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class Affine:
    """One affine stretch of the network as a dense map on flattened activations: out = weight @ in + bias."""

    weight: np.ndarray  # (out, in), float64
    bias: np.ndarray  # (out,), float64


def affine_stretches(model: nn.Module, input_shape: tuple[int, ...]) -> list[Affine]:
    """The network as affine maps with a ReLU between each two: [A_1, ..., A_L], logits =
    A_L relu(... relu(A_1 x)). Every leaf layer but ReLU (normalisation, conv, pooling, flatten,
    linear) is affine, so a run of them is its own Jacobian times the input plus its value at 0;
    jacrev computes the Jacobian exactly, in float64 so that the MILP's data carry no float32 error."""
    layers = [layer for _, layer in leaf_layers(copy.deepcopy(model).double().eval())]
    runs: list[list[nn.Module]] = [[]]
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            runs.append([])
        else:
            runs[-1].append(layer)
    stretches, shape = [], input_shape
    for run in runs:
        stretch = nn.Sequential(*run)

        def flat(v: torch.Tensor, stretch=stretch, shape=shape) -> torch.Tensor:
            return stretch(v.view(1, *shape)).flatten()

        zero = torch.zeros(math.prod(shape), dtype=torch.float64)
        with torch.no_grad():
            shape = tuple(stretch(zero.view(1, *shape)).shape[1:])  # the next stretch's input
            stretches.append(Affine(torch.func.jacrev(flat)(zero).numpy(), flat(zero).numpy()))
    return stretches


def pre_activation_bounds(stretches: list[Affine], lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Interval bounds (l, u) of each ReLU's input for inputs in [lo, hi], by interval arithmetic on the
    dense maps, widened by SLACK. They only set the big-M constants: looser bounds make the solve
    slower, never its minimum wrong. Written here rather than taken from core.certify so that the
    check does not trust the code it checks."""
    bounds = []
    for stretch in stretches[:-1]:
        centre = stretch.weight @ (lo + hi) / 2 + stretch.bias
        radius = np.abs(stretch.weight) @ (hi - lo) / 2
        l, u = centre - radius - SLACK, centre + radius + SLACK
        bounds.append((l, u))
        lo, hi = np.maximum(l, 0), np.maximum(u, 0)
    return bounds


# ------------------------------------------------------------------------------------------ the MILP


@dataclass(frozen=True)
class Exact:
    """One margin's MILP: `minimum` its optimal value (logit units), `dual` the solver's proven lower
    bound on it (equal up to the MIP gap), `point` the minimising input (flattened, float64), `status`
    scipy's (0 optimal, 1 time limit)."""

    minimum: float
    dual: float
    point: np.ndarray | None
    status: int


class MarginMILP:
    """min over the box [lo, hi] of c^T logits, c = e_y - e_j, as a mixed-integer linear program
    (Tjeng et al. 2019, section 3). Each ReLU h = max(z, 0) with l <= z <= u is encoded exactly by a
    binary a (1: active) and

        h >= z,  h >= 0,  h <= z - l (1 - a),  h <= u a:

    a = 1 leaves h = z (so z = h >= 0), a = 0 leaves h = 0 (so z <= h = 0). Stable neurons need no
    choice: l >= 0 fixes a = 1 and u <= 0 fixes a = 0 (HiGHS's presolve then drops the binary), with
    min(l, 0) and max(u, 0) in place of l and u so the constraints stay valid. The constraints do not
    depend on (y, j): one is built per image and solved once per margin.

    Variables, in order: x (the flattened input), then per ReLU layer its outputs h and binaries a.
    """

    def __init__(self, stretches: list[Affine], lo: np.ndarray, hi: np.ndarray):
        relus = pre_activation_bounds(stretches, lo, hi)
        layers = len(relus)
        grid = [[None] * (1 + 2 * layers) for _ in range(3 * layers)]  # block rows x column groups
        lower, upper, var_lo, var_hi, integral = [], [], [lo], [hi], [np.zeros(len(lo))]
        for k, (stretch, (l, u)) in enumerate(zip(stretches, relus)):
            n, w, b = len(l), sp.csr_matrix(stretch.weight), stretch.bias
            l_neg, u_pos = np.minimum(l, 0), np.maximum(u, 0)
            v, h, a = (0 if k == 0 else 2 * k - 1), 2 * k + 1, 2 * k + 2  # input, h and a column groups
            eye, inf = sp.identity(n), np.full(n, np.inf)
            grid[3 * k][v], grid[3 * k][h] = -w, eye  # h - W v >= b: h >= z
            grid[3 * k + 1][v], grid[3 * k + 1][h], grid[3 * k + 1][a] = -w, eye, -sp.diags(l_neg)  # h <= z - l (1 - a)
            grid[3 * k + 2][h], grid[3 * k + 2][a] = eye, -sp.diags(u_pos)  # h <= u a
            lower += [b, -inf, -inf]
            upper += [inf, b - l_neg, np.zeros(n)]
            var_lo += [np.zeros(n), (l >= 0).astype(float)]  # h >= 0; a = 1 where l >= 0
            var_hi += [u_pos, (u > 0).astype(float)]  # a = 0 where u <= 0
            integral += [np.zeros(n), np.ones(n)]
        self.constraints = LinearConstraint(sp.bmat(grid, format="csr"), np.concatenate(lower), np.concatenate(upper))
        self.bounds = Bounds(np.concatenate(var_lo), np.concatenate(var_hi))
        self.integrality = np.concatenate(integral)
        self.last = stretches[-1]
        self.input_size = len(lo)
        start = len(self.integrality) - 2 * len(relus[-1][0])  # the last ReLU layer's h
        self.h_last = slice(start, start + len(relus[-1][0]))

    def minimise(self, y: int, j: int, time_limit: float | None = None) -> Exact:
        """The exact minimum of logit_y - logit_j over the box, given `time_limit` seconds.

        mip_rel_gap 1e-7: HiGHS's default 1e-4 lets it stop at a point up to 1e-4 (relative) above the
        minimum; the proven lower bound (`dual`) is what a certificate may rest on either way.
        """
        cost = np.zeros(len(self.integrality))
        cost[self.h_last] = self.last.weight[y] - self.last.weight[j]
        offset = float(self.last.bias[y] - self.last.bias[j])
        options = {"mip_rel_gap": 1e-7} | ({"time_limit": time_limit} if time_limit else {})
        result = milp(cost, constraints=self.constraints, integrality=self.integrality, bounds=self.bounds,
                      options=options)  # fmt: skip
        dual = getattr(result, "mip_dual_bound", None)
        dual = -np.inf if dual is None else dual
        if result.x is None:  # time limit before any feasible point
            return Exact(np.inf, dual + offset, None, result.status)
        return Exact(result.fun + offset, dual + offset, result.x[: self.input_size], result.status)


# ------------------------------------------------------------------------------------------ the test

EPS = 0.1  # pixel units: the eps the net is trained for
WIDTH = 0.25  # 4 and 8 channels, 25 hidden units: 121 ReLUs, 25-45 of them unstable at eps 0.1
IMAGES = 3  # 27 MILPs: about 12 s on one CPU thread


def ibp_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, eps: float = EPS) -> nn.Module:
    """IBP certified training (Gowal et al. 2018) as test_certify's `ibp_trained`: Adam at lr 3e-3 on
    64-example batches, clean for the first tenth of the steps, eps ramped over the next six tenths
    (`schedule`), the last three tenths at `eps`. Returns it in eval mode."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * -(-len(x) // 64)
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            batch = order[i : i + 64]
            mix = schedule(step, eps=eps, warmup=steps / 10, ramp_steps=6 * steps / 10, method="ibp")
            loss = certified_training_loss(model, x[batch], y[batch], mix)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    return model.eval()


def digits_cnn(width: float, epochs: int, seed: int = 0, eps: float = EPS) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(cnn_4layer IBP-trained at `eps` on digits' training split, test images in [0, 1], test labels)."""
    data = prepare_data("digits", "~/data", val_split=200, fraction=1.0)
    torch.manual_seed(seed)
    model = create_model("cnn_4layer", width=width, num_classes=10, in_channels=1, mean=data.info.mean,
                         std=data.info.std)  # fmt: skip
    model = ibp_train(model, data.train_x.float() / 255, data.train_y, epochs, eps)
    return model, data.test_x.float() / 255, data.test_y


def margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (margin_matrix(y, 10) @ model(x).unsqueeze(-1)).squeeze(-1)


@pytest.fixture(scope="module")
def trained():
    model, x, y = digits_cnn(WIDTH, epochs=10)
    return model, x[:IMAGES], y[:IMAGES]


def test_every_bound_is_below_the_exact_minimum_and_the_network_attains_it(trained):
    model, x, y = trained
    with torch.no_grad():
        bounds = {method: margin_lower_bounds(model, x, y, EPS, method) for method in METHODS}
    # The box the bounds cover, in float32 as core.certify computes it; the MILP takes it exactly.
    lo, hi = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    stretches = affine_stretches(model, tuple(x.shape[1:]))
    exact, attained = torch.empty(len(y), 9), torch.empty(len(y), 9)
    for i, label in enumerate(y.tolist()):
        problem = MarginMILP(stretches, lo[i].flatten().double().numpy(), hi[i].flatten().double().numpy())
        for k, j in enumerate(j for j in range(10) if j != label):
            solution = problem.minimise(label, j)
            assert solution.status == 0, f"image {i}, class {j}: MILP status {solution.status}"
            point = torch.from_numpy(solution.point).view(x[i].shape)
            # The minimiser is a real input: in the box up to HiGHS's feasibility tolerance (1e-7).
            assert bool((point >= lo[i].double() - 1e-6).all() and (point <= hi[i].double() + 1e-6).all())
            point = torch.maximum(torch.minimum(point.float(), hi[i]), lo[i])
            exact[i, k] = solution.minimum
            attained[i, k] = margins(model, point.unsqueeze(0), y[i : i + 1])[0, k]
    # The MILP's minimum is the network's own margin (float32) at the MILP's point: the encoding is the
    # network, not a relaxation of it.
    torch.testing.assert_close(attained, exact, atol=1e-3, rtol=0)
    for method, bound in bounds.items():
        assert bool((bound <= exact + 1e-4).all()), f"{method}: {float((bound - exact).max()):.4g} above the exact minimum"
        assert bool((bound <= attained + 1e-4).all()), f"{method}: above the margin at the MILP's point"
    assert bool((bounds["ibp"] <= bounds["crown"]).all())  # "crown" takes the larger of both
    # The check has teeth: a wrong bound, CROWN's for a ball half as wide, is above the exact minimum
    # (by about 2 logits on this net), and every method leaves a gap to the minimum somewhere (the
    # MILP's minimum is no bound method in disguise).
    with torch.no_grad():
        too_narrow = margin_lower_bounds(model, x, y, EPS / 2, "crown")
    assert float((too_narrow - exact).max()) > 0.1
    assert all(float((exact - bound).max()) > 1e-2 for bound in bounds.values())
