"""Measurement errors fixed (issue 23): TRADES and MART passes counted as they run, MART's attack started
as its reference code starts it, no target reached on a mean of fewer epochs than the target's, and the
cost of finding a ticket shared only among the tickets pruned from it."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ticketsearch.core.attacks import SMALL_START_STD, build_attack, small_gaussian_start
from ticketsearch.core.models import create_model
from ticketsearch.core.training_objectives import objective_for
from ticketsearch.records import best_dense, convergence, reach, smoothed
from ticketsearch.results.trials_table import amortize
from ticketsearch.spec import AttackConfig
from ticketsearch.trainers.engine import passes_per_example

from tiny import curve


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("small_cnn", width=0.25, num_classes=10, in_channels=1, mean=(0.5,), std=(0.25,))


def _images(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


# ------------------------------------------------------------------------------------------- passes


@pytest.mark.filterwarnings("ignore:Full backward hook")  # the training passes' inputs need no gradient
@pytest.mark.parametrize("kind", ["pgd", "trades", "mart"])
def test_passes_per_example_are_the_backward_passes_one_training_step_runs(kind):
    # A pass is a forward and a backward of one example: count the model's backward passes over one
    # training step of each regime (attack steps plus the update's), and the forwards that have none.
    net = _net()
    forwards, backwards = [], []
    net.register_forward_hook(lambda module, args, output: forwards.append(1))
    net.register_full_backward_hook(lambda module, grad_in, grad_out: backwards.append(1))
    config = AttackConfig(kind=kind, eps=0.1, steps=3)
    attack = build_attack(net, config, 10, "attack.train")
    x, y = _images()
    loss, _ = objective_for(attack)(net, attack, x, y, 1.0)
    loss.backward()
    assert passes_per_example(config) == len(backwards) == {"pgd": 4, "trades": 5, "mart": 5}[kind]
    # TRADES' attack also runs a clean forward for its KL target, not followed by a backward (not counted).
    assert len(forwards) - len(backwards) == (1 if kind == "trades" else 0)


def test_trades_and_mart_pay_for_their_clean_pass():
    assert passes_per_example(AttackConfig(kind="trades", eps=8 / 255, steps=10)) == 12
    assert passes_per_example(AttackConfig(kind="mart", eps=8 / 255, steps=10)) == 12
    assert passes_per_example(AttackConfig(kind="pgd", eps=8 / 255, steps=10)) == 11


# ------------------------------------------------------------------------------------------- MART's start


def test_mart_starts_at_x_plus_a_thousandth_of_gaussian_noise_not_uniform_in_the_ball():
    x, y = _images(64)
    torch.manual_seed(0)
    start = small_gaussian_start(x)
    assert (start - x).std().item() == pytest.approx(SMALL_START_STD, rel=0.1)
    # One step of a negligible size: what comes back is the start (clamped). From a uniform start in the
    # eps-ball (the PGD start it used before) pixels would move by up to eps = 0.3.
    net = _net().eval()
    attack = build_attack(net, AttackConfig(kind="mart", eps=0.3, alpha=1e-6, steps=1), 10, "attack.train")
    torch.manual_seed(0)
    moved = (attack(x, y) - x).abs().max().item()
    assert moved <= 6 * SMALL_START_STD + 1e-6
    uniform = build_attack(net, AttackConfig(kind="pgd", eps=0.3, alpha=1e-6, steps=1), 10, "attack.eval")
    assert (uniform(x, y) - x).abs().max().item() > 0.2  # what the test tells apart
    # Deterministic under the generator's state, as the trial's random stream runs it.
    full = build_attack(net, AttackConfig(kind="mart", eps=0.1, steps=3), 10, "attack.train")
    torch.manual_seed(5)
    first = full(x, y)
    torch.manual_seed(5)
    assert torch.equal(first, full(x, y))
    assert (first - x).abs().max().item() <= 0.1 + 1e-6 and 0 <= first.min() and first.max() <= 1


# ------------------------------------------------------------------------------------------- smoothing


def test_a_lucky_first_epoch_does_not_reach_a_three_epoch_target():
    # The target is the reference's final 3-epoch mean, 0.5. The ticket's first epoch alone reads 0.6;
    # its first 3-epoch mean to reach 0.5 ends at epoch 6. The old rule (a mean of up to 3 epochs)
    # counted epoch 1 as reached.
    reference = curve(0.5, 0.5, 0.5, 0.5, 0.5, 0.5)
    ticket = curve(0.6, 0.2, 0.2, 0.6, 0.6, 0.6)
    out = convergence(ticket, reference, [])
    assert out["target_robust_acc"] == pytest.approx(0.5)
    assert out["ticket_epochs_to_target"] == 6 and out["ticket_passes_to_target"] == 600
    assert out["dense_epochs_to_target"] == 3  # the reference's own first 3-epoch mean
    # A ticket stopped after 2 epochs has no 3-epoch mean: it never reached the target.
    assert not convergence(ticket[:2], reference, [])["reached_target"]
    assert smoothed(ticket) == pytest.approx([1 / 3, 1 / 3, 7 / 15, 0.6])  # full windows only


def test_a_reference_shorter_than_the_window_sets_a_target_over_its_whole_length():
    # Two dense epochs: the target is their mean, 0.5, and a curve is judged on 2-epoch means.
    reference = curve(0.4, 0.6)
    out = convergence(curve(0.6, 0.5), reference, [])
    assert out["target_robust_acc"] == pytest.approx(0.5)
    assert (out["ticket_epochs_to_target"], out["dense_epochs_to_target"]) == (2, 2)
    assert math.isnan(reach(curve(0.9), 0.5, window=2)["epochs"])


def test_the_best_target_is_the_best_full_window_mean():
    # One epoch at 0.9 is not the reference's best 3-epoch mean (0.5).
    reference = curve(0.9, 0.1, 0.1, 0.5, 0.5, 0.5)
    out = convergence(curve(0.5, 0.5, 0.5), reference, [], target="best")
    assert out["target_robust_acc"] == pytest.approx(0.5) and out["ticket_epochs_to_target"] == 3
    dense = best_dense(curve(0.5, 0.5, 0.5), {0.1: reference}, [], target="best")
    assert dense["best_dense_target_robust_acc"] == pytest.approx(0.5)
    assert dense["best_dense_epochs_to_target"] == 6


# ------------------------------------------------------------------------------------------- amortised cost


def test_the_finding_cost_is_shared_only_among_trials_pruned_from_a_finished_finding_round():
    # Four trials of one finding round (one-shot: the ticket is round 1): one completed, one stopped by
    # ASHA during its ticket round (it shared the round), one that errored and one stopped before the
    # round ended (no ticket: no share). Another finding round's trial does not count either.
    measured = {"dense_passes_to_target": 600.0, "find_passes": 300.0, "ticket_passes_to_target": 200.0}
    unmeasured = dict.fromkeys(measured, math.nan)
    rows = [
        {"trial_id": "done", "status": "completed", "final_round": 1, **measured},
        {"trial_id": "asha", "status": "early-stopped", "final_round": 1, **unmeasured},
        {"trial_id": "error", "status": "error", "final_round": 0, **unmeasured},
        {"trial_id": "early", "status": "early-stopped", "final_round": 0, **unmeasured},
    ]
    frame = pd.DataFrame([{**row, "find_level": "dense-a", "config.prune.rounds": 1} for row in rows]
                         + [{"trial_id": "other", "status": "completed", "final_round": 1, **measured,
                             "find_level": "dense-b", "config.prune.rounds": 1}])
    amortized = amortize(frame).set_index("trial_id")["speedup_amortized"]
    assert amortized["done"] == pytest.approx(600 / (300 / 2 + 200))  # shared by 2, not by 4
    assert amortized["other"] == pytest.approx(600 / (300 + 200))
    assert amortized[["asha", "error", "early"]].isna().all()
    # A ticket of round 2 (two IMP rounds) shares only once its path reaches round 2.
    two = frame.assign(**{"config.prune.rounds": 2})
    assert amortize(two)["speedup_amortized"].isna().all()
