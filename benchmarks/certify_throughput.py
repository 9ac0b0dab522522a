"""Certification throughput: examples certified per second by IBP, CROWN-IBP and CROWN, against PGD-20.

For each model, the same examples are certified by each method (`core.certify.certified_accuracy`)
and attacked by PGD-20 (eps, step eps/4, random start; what an empirical robust accuracy costs); the
ratio is a method's examples per second over PGD-20's. Methods and PGD alternate over --repeats
rounds so a change in machine load hits all of them, and the median of each counts.

Images are the digits test split (8x8, 1 channel), the models trained on digits for --train-epochs
of plain cross-entropy first (CROWN's cost grows with the neurons IBP leaves unstable, which depends
on the weights); or, with --size 32, random CIFAR-shaped images and freshly initialised models.
Full CROWN on a 32x32 small_cnn needs a backward pass with a row for each of its second-layer neurons
(32,768 at width 0.5) per example: leave it out there (--methods ibp crown-ibp).

    python3 -m uv run python benchmarks/certify_throughput.py
    python3 -m uv run python benchmarks/certify_throughput.py --size 32 --arch cnn_4layer
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.certify import METHODS, certified_accuracy
from ticketsearch.core.data import prepare_data
from ticketsearch.core.models import create_model
from ticketsearch.spec import AttackConfig


def images(size: int, count: int) -> tuple[torch.Tensor, ...]:
    """(training images, labels, test images, labels, mean, std); images in [0, 1]."""
    if size == 8:
        data = prepare_data("digits", "~/data", val_split=200, fraction=1.0)
        return (data.train_x.float() / 255, data.train_y, data.test_x[:count].float() / 255, data.test_y[:count],
                data.info.mean, data.info.std)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(count, 3, size, size, generator=generator)
    y = torch.randint(0, 10, (count,), generator=generator)
    return x[:0], y[:0], x, y, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            optimizer.step()


def timed(run, device: torch.device) -> float:
    start = time.perf_counter()
    run()
    if device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["small_cnn", "cnn_4layer"])
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--size", type=int, choices=[8, 32], default=8)
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64, help="examples per bound computation")
    parser.add_argument("--eps", type=float, default=0.03)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-epochs", type=int, default=2, help="on digits (--size 8) only")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train_x, train_y, x, y, mean, std = images(args.size, args.examples)
    train_x, train_y, x, y = (t.to(device) for t in (train_x, train_y, x, y))
    results = {}
    for arch in args.arch:
        torch.manual_seed(0)
        model = create_model(arch, width=args.width, num_classes=10, in_channels=x.shape[1], mean=mean,
                             std=std).to(device)  # fmt: skip
        train(model, train_x, train_y, args.train_epochs if args.size == 8 else 0)
        model.eval()
        pgd = build_attack(model, AttackConfig(kind="pgd", eps=args.eps, alpha=args.eps / 4, steps=20), 10, "attack.eval")
        runs = {"pgd20": lambda: [pgd(x[i : i + args.batch_size], y[i : i + args.batch_size])
                                  for i in range(0, len(x), args.batch_size)]}  # fmt: skip
        for method in args.methods:
            runs[method] = lambda method=method: certified_accuracy(model, x, y, args.eps, method, args.batch_size)
        for run in runs.values():  # warm-up: allocator, kernel choice, lazy imports
            run()
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                seconds[name].append(timed(run, device))
        rate = {name: len(x) / statistics.median(s) for name, s in seconds.items()}
        results[arch] = {
            "examples_per_second": {name: round(r, 1) for name, r in rate.items()},
            "over_pgd20": {m: round(rate[m] / rate["pgd20"], 2) for m in args.methods},
            "certified_accuracy": {m: certified_accuracy(model, x, y, args.eps, m, args.batch_size)
                                   for m in args.methods},  # fmt: skip
        }
    print(json.dumps({
        "setup": f"width {args.width}, {args.size}x{args.size} images, trained {args.train_epochs if args.size == 8 else 0} epochs, {args.examples} examples, batch "
                 f"{args.batch_size}, eps {args.eps}, {args.threads} threads, {args.device}, torch {torch.__version__}",
        **results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
