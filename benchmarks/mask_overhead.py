"""The cost of masks: a sparse trainer's epoch against the same dense epoch, in one process.

Both run `loops.train_epoch` on the same model, data and attack; the sparse one re-applies an 80%
global-magnitude mask after every optimiser step (`MaskApplier`, one fused `_foreach_mul_`), the
dense one calls a no-op. Epochs alternate (dense, sparse, dense, ...) so a change in machine load
hits both, and the median over --repeats pairs of the per-pair ratios counts, by wall time and by
process CPU time. Natural training is the worst case (the cheapest step around the same mask
update); PGD-10 is what a search runs. Target (issue 7): at most 3% overhead.

    python3 -m uv run python benchmarks/mask_overhead.py --attack natural
    python3 -m uv run python benchmarks/mask_overhead.py --attack pgd10 --examples 256
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.fastpath import resolve_fastpath
from ticketsearch.core.loops import Augmentation, train_epoch
from ticketsearch.core.models import create_model
from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights
from ticketsearch.spec import AttackConfig


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--attack", choices=["natural", "pgd10"], default="natural")
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    # The dense epochs let the pruned weights regrow from exactly zero, which produces denormal floats
    # that x86 handles slowly: without this, the dense PGD-10 epochs ran 11% slower than the sparse
    # ones (sparse/dense 0.89). Training a dense or a sparse model alone showed no such difference.
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    fastpath = resolve_fastpath("auto", False, device)
    torch.manual_seed(0)
    model = create_model(args.arch, width=args.width, num_classes=10, in_channels=3,
                         mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
    model = model.to(device, memory_format=fastpath.memory_format)
    weights = prunable_weights(model)
    sparse = MaskApplier(weights, magnitude_prune(weights, Mask.ones(weights), args.sparsity, "global"))
    regime = AttackConfig(kind="pgd", eps=8 / 255, alpha=2 / 255, steps=10) if args.attack == "pgd10" \
        else AttackConfig(kind="natural")
    attack = build_attack(model, regime, 10, "attack.train", fold_batchnorm=fastpath.fold_batchnorm)
    x = torch.randint(0, 256, (args.examples, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (args.examples,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def epoch(after_step) -> tuple[float, float]:
        start, cpu = time.perf_counter(), cpu_seconds()
        train_epoch(model, optimizer, x, y, batch_size=args.batch_size, attack=attack, after_step=after_step,
                    lr_for_step=lambda step: 0.01, first_step=0, shuffle=torch.Generator().manual_seed(0),
                    augmentation=Augmentation(4, True), augment_generator=torch.Generator(device).manual_seed(1),
                    fastpath=fastpath)
        return time.perf_counter() - start, cpu_seconds() - cpu

    epoch(sparse)  # warm-up: allocator, oneDNN/cuDNN kernel choice
    wall, cpu = [], []
    for _ in range(args.repeats):
        dense_wall, dense_cpu = epoch(lambda: None)
        sparse_wall, sparse_cpu = epoch(sparse)
        wall.append(sparse_wall / dense_wall)
        cpu.append(sparse_cpu / dense_cpu)
    exact = all(bool((w[sparse.masks[i] == 0] == 0).all()) for i, w in enumerate(sparse.params))
    print(json.dumps({
        "setup": f"{args.arch} width {args.width}, {args.attack}, {args.examples} examples, batch {args.batch_size}, "
                 f"sparsity {args.sparsity}, {fastpath.describe()}, {args.threads} threads, torch {torch.__version__}",
        "sparse_over_dense_wall_median": round(statistics.median(wall), 4),
        "sparse_over_dense_cpu_median": round(statistics.median(cpu), 4),
        "wall_ratios": [round(r, 3) for r in wall],
        "cpu_ratios": [round(r, 3) for r in cpu],
        "masks_exact": exact,
    }, indent=2))


if __name__ == "__main__":
    main()
