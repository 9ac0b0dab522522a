"""Complete verification on digits: how many test images IBP, CROWN-IBP and CROWN certify against how
many are robust exactly, by a MILP, and against PGD-20.

cnn_4layer at --width is IBP-trained on digits at --eps (Gowal et al. 2018; Adam, clean for the first
tenth of the steps, eps ramped over the next six tenths: tests/test_certify_exact.py's `digits_cnn`). On the first
--images test images (eval mode) each bound method (`core.certify.margin_lower_bounds`) certifies an
image when it is classified correctly and all nine margin bounds are positive. The exact count
solves, per margin, the MILP of Tjeng et al. 2019 ("Evaluating Robustness of Neural Networks with
Mixed Integer Programming"; `MarginMILP` in tests/test_certify_exact.py, where the test checks it
against the network) with scipy's HiGHS: an image is verified when it is classified correctly and
every margin's exact minimum over the clipped eps-ball is positive (HiGHS's proven lower bound > 0).
A margin whose CROWN bound is already positive needs no MILP (the exact minimum is above it), and an
image stops at its first margin whose minimum is <= 0 (a real counterexample). A MILP that reaches
--time-limit undecided counts as not verified, and the table says how many did. PGD-20 (eps/4 steps,
random start, seed 0; robust when correct on both) is an upper reference: no attack beats the exact
minimum, so IBP <= CROWN <= exact <= PGD-20 <= clean, which the script asserts.

Measured at the defaults (2 CPU cores, AMD EPYC, 112 s wall, 104 s of it in 50 MILPs, the slowest 15 s,
none timed out), of 100 images: IBP 37, CROWN-IBP 39, CROWN 45, exact 57, PGD-20 66, clean 91. CROWN
leaves 12 robust images uncertified, and PGD-20 misses 9 adversarial examples the MILP finds.

    python3 -m uv run python benchmarks/complete_verification.py
    python3 -m uv run python benchmarks/complete_verification.py --width 0.25 --images 360 --time-limit 60
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the MILP lives beside its test

from test_certify_exact import MarginMILP, affine_stretches, digits_cnn  # noqa: E402

from ticketsearch.core.attacks import build_attack  # noqa: E402
from ticketsearch.core.certify import METHODS, margin_lower_bounds  # noqa: E402
from ticketsearch.spec import AttackConfig  # noqa: E402


def bound_certified(model, x, y, eps, method) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(per image: certified by `method`, the (N, 9) margin bounds, seconds)."""
    start = time.perf_counter()
    with torch.no_grad():
        bounds = margin_lower_bounds(model, x, y, eps, method)
        certified = (model(x).argmax(1) == y) & (bounds > 0).all(1)
    return certified, bounds, time.perf_counter() - start


def pgd_robust(model, x, y, eps) -> tuple[torch.Tensor, float]:
    """(per image: correct on the clean image and on its PGD-20 adversarial example, seconds)."""
    start = time.perf_counter()
    attack = build_attack(model, AttackConfig(kind="pgd", eps=eps, alpha=eps / 4, steps=20), 10, "attack.eval")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        adversarial = attack(x, y).detach()
    with torch.no_grad():
        robust = (model(x).argmax(1) == y) & (model(adversarial).argmax(1) == y)
    return robust, time.perf_counter() - start


@contextlib.contextmanager
def quiet_c_stdout() -> Iterator[None]:
    """Send C-level stdout to /dev/null: scipy 1.17's HiGHS prints a debugging line
    ("HighsMipSolverData::transformNewIntegerFeasibleSolution ...") on some solves."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def exact_verified(model, x, y, eps, crown: torch.Tensor, time_limit: float) -> tuple[torch.Tensor, dict]:
    """(per image: verified by the MILP; MILPs solved, timed out, the slowest's and all their seconds).

    Each refutation is checked on the network itself: its float32 margin at the MILP's point (in the
    box) is at most the MILP's minimum + 1e-3, so it is a real adversarial example.
    """
    start = time.perf_counter()
    stretches = affine_stretches(model, tuple(x.shape[1:]))
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)  # in float32, as core.certify's box
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    verified = torch.zeros(len(y), dtype=torch.bool)
    solved = timed_out = 0
    slowest = 0.0
    for i, label in enumerate(y.tolist()):
        if not correct[i]:
            continue
        problem = MarginMILP(stretches, lo[i].flatten().double().numpy(), hi[i].flatten().double().numpy())
        others = [j for j in range(10) if j != label]
        # Hardest margins first (lowest CROWN bound): a counterexample, if any, is likeliest there.
        order = [k for k in torch.argsort(crown[i]).tolist() if crown[i, k] <= 0]
        verified[i] = True
        for k in order:
            solve_start = time.perf_counter()
            with quiet_c_stdout():
                solution = problem.minimise(label, others[k], time_limit)
            slowest = max(slowest, time.perf_counter() - solve_start)
            solved += 1
            if solution.dual > 0:
                continue
            verified[i] = False
            if solution.minimum > 0:  # neither proven nor refuted within the time limit
                timed_out += 1
            else:
                point = torch.from_numpy(solution.point).float().view(x[i].shape)
                point = torch.maximum(torch.minimum(point, hi[i]), lo[i]).unsqueeze(0)
                with torch.no_grad():
                    logits = model(point)[0]
                margin = float(logits[label] - logits[others[k]])
                assert margin <= solution.minimum + 1e-3, (i, others[k], margin, solution.minimum)
            break
    return verified, {"solved": solved, "timed_out": timed_out, "slowest": slowest,
                      "seconds": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.5, help="cnn_4layer width multiplier")
    parser.add_argument("--images", type=int, default=100, help="first test images (360 in all)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf radius, pixel units (training's too)")
    parser.add_argument("--epochs", type=int, default=10, help="IBP training epochs")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per MILP")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, test_x, test_y = digits_cnn(args.width, args.epochs, args.seed, eps=args.eps)
    train_s = time.perf_counter() - started
    x, y = test_x[: args.images], test_y[: args.images]
    n = len(y)
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())
    rows, bounds = [], {}
    for method in METHODS:
        certified, bounds[method], seconds = bound_certified(model, x, y, args.eps, method)
        rows.append((method, int(certified.sum()), f"{seconds:.2f}"))
    verified, milp = exact_verified(model, x, y, args.eps, bounds["crown"], args.time_limit)
    exact = int(verified.sum())
    rows.append((f"exact MILP ({milp['solved']} MILPs, slowest {milp['slowest']:.1f} s, {milp['timed_out']} timed out)",
                 exact, f"{milp['seconds']:.1f}"))  # fmt: skip
    robust, pgd_s = pgd_robust(model, x, y, args.eps)
    rows.append(("PGD-20 (upper reference)", int(robust.sum()), f"{pgd_s:.2f}"))
    rows.append(("clean", clean, "-"))
    counts = {name: count for name, count, _ in rows}
    assert counts["ibp"] <= counts["crown"] <= exact <= int(robust.sum()) <= clean, counts
    wall = time.perf_counter() - started

    print(f"cnn_4layer w{args.width:g} IBP-trained {args.epochs} epochs (seed {args.seed}, {train_s:.0f} s) on digits; "
          f"first {n} test images, eps {args.eps:g}; time limit {args.time_limit:g} s a MILP; {args.threads} CPU "
          f"threads, torch {torch.__version__}; wall {wall:.0f} s")  # fmt: skip
    print()
    print("| method | certified / N | seconds |")
    print("| --- | --- | --- |")
    for name, count, seconds in rows:
        print(f"| {name} | {count} / {n} | {seconds} |")


if __name__ == "__main__":
    main()
