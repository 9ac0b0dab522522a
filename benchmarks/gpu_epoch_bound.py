"""Seconds per adversarial-training epoch on a GPU against the bound set by its bf16 throughput.

PGD-10 or FGSM-RS adversarial training of PreAct ResNet-18 on CIFAR-10-sized data (50,000 uint8
images 32x32x3 resident on the GPU, pad-4 crop and flip on the GPU) through ticketsearch's own loop
(`loops.train_epoch` with the fast path: bf16 autocast, channels-last, cuDNN autotuning; masks of
an 80% sparse ticket applied after each step). The lower bound is FLOPs / peak: an attack step and
the training step are each one forward and one backward pass, the backward counted as twice the
forward (the issue's convention; an input-only backward is closer to one forward, so the bound is
if anything generous), so PGD-10 costs 11 x 3 forward FLOPs per example and FGSM-RS 2 x 3. Forward
FLOPs are counted with torch.utils.flop_counter (about 1.11 GFLOP for PreAct ResNet-18 at 32x32).

--trials N runs N processes on the one GPU at once (fractional-GPU trials of a search) and reports
each one's epoch and the fraction of the bound achieved by all of them together. Target (issue 7):
at least 35% of the bound, alone and 4-way shared. Also prints peak GPU memory per trial.

    python3 -m uv run python benchmarks/gpu_epoch_bound.py --attack pgd10
    python3 -m uv run python benchmarks/gpu_epoch_bound.py --attack fgsm-rs --trials 4
    # a smoke run of the script itself on a CPU: tiny and meaningless as a figure
    python3 -m uv run python benchmarks/gpu_epoch_bound.py --device cpu --arch resnet20 --width 0.25 \
        --examples 256 --batch-size 128 --peak-tflops 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue as queue_module
import time

import torch

# Dense bf16 tensor-core peaks from the vendor data sheets, TFLOP/s (no sparsity).
PEAK_BF16_TFLOPS = {"H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def peak_for(name: str) -> float | None:
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key]
    return None


def forward_flops(model, device, memory_format) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def worker(args, rank: int, barrier, queue) -> None:
    from ticketsearch.core.attacks import build_attack
    from ticketsearch.core.fastpath import resolve_fastpath
    from ticketsearch.core.loops import Augmentation, train_epoch
    from ticketsearch.core.models import create_model
    from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights
    from ticketsearch.spec import AttackConfig

    device = torch.device(args.device)
    fastpath = resolve_fastpath(args.precision, args.compile, device)
    torch.manual_seed(rank)
    model = create_model(args.arch, width=args.width, num_classes=10, in_channels=3,
                         mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
    model = model.to(device, memory_format=fastpath.memory_format)
    flops = forward_flops(model, device, fastpath.memory_format)
    weights = prunable_weights(model)
    apply = MaskApplier(weights, magnitude_prune(weights, Mask.ones(weights), args.sparsity, "global"))
    apply()
    forward = fastpath.forward_module(model)
    regime = (AttackConfig(kind="pgd", eps=8 / 255, alpha=2 / 255, steps=10) if args.attack == "pgd10"
              else AttackConfig(kind="fgsm", eps=8 / 255, alpha=10 / 255))
    attack = build_attack(forward, regime, 10, "attack.train", fold_batchnorm=fastpath.fold_batchnorm)
    generator = torch.Generator(device=device).manual_seed(rank)
    x = torch.randint(0, 256, (args.examples, 3, 32, 32), dtype=torch.uint8, device=device, generator=generator)
    y = torch.randint(0, 10, (args.examples,), device=device, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)

    def epoch(count: int):
        return train_epoch(forward, optimizer, x[:count], y[:count], batch_size=args.batch_size, attack=attack,
                           after_step=apply, lr_for_step=lambda step: 0.05, first_step=0,
                           shuffle=torch.Generator().manual_seed(rank), augmentation=Augmentation(4, True),
                           augment_generator=generator, fastpath=fastpath)

    epoch(min(args.examples, 4 * args.batch_size))  # warm-up: cuDNN autotuning, compilation
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    barrier.wait()  # all trials start their timed epoch together
    start = time.perf_counter()
    result = epoch(args.examples)  # ends with the epoch's one read-back, so the GPU has finished
    seconds = time.perf_counter() - start
    cuda = device.type == "cuda"
    peak = round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None
    reserved = round(torch.cuda.max_memory_reserved(device) / 2**20) if cuda else None
    queue.put({"rank": rank, "seconds": seconds, "examples": result.examples, "forward_flops": flops,
               "peak_allocated_mib": peak, "peak_reserved_mib": reserved,
               "fastpath": fastpath.describe(), "loss": result.loss})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="preact_resnet18")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--attack", choices=["pgd10", "fgsm-rs"], default="pgd10")
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--trials", type=int, default=1, help="processes sharing the device at once")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--peak-tflops", type=float, help="device bf16 peak (default: from the device name)")
    args = parser.parse_args()

    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    peak = args.peak_tflops or peak_for(name)
    if peak is None:
        raise SystemExit(f"--peak-tflops: no known bf16 peak for {name!r}; give it")
    context = mp.get_context("spawn")
    barrier, queue = context.Barrier(args.trials), context.Queue()
    processes = [context.Process(target=worker, args=(args, rank, barrier, queue)) for rank in range(args.trials)]
    for process in processes:
        process.start()
    results = []
    while len(results) < len(processes):  # a worker that dies must not leave us waiting for ever
        try:
            results.append(queue.get(timeout=5))
        except queue_module.Empty:
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if failed:
                raise SystemExit(f"a trial process failed (exit codes {failed}); see its traceback above")
    results.sort(key=lambda r: r["rank"])
    for process in processes:
        process.join()
    passes = 11 if args.attack == "pgd10" else 2  # attack steps + the training step
    per_example = passes * 3 * results[0]["forward_flops"]
    bound_one = args.examples * per_example / (peak * 1e12)
    wall_all = max(r["seconds"] for r in results)
    print(json.dumps({
        "device": name, "torch": torch.__version__, "peak_bf16_tflops": peak,
        "setup": f"{args.arch} width {args.width}, {args.attack}, {args.examples} examples, batch {args.batch_size}, "
                 f"sparsity {args.sparsity}, {results[0]['fastpath']}, {args.trials} trial(s) sharing the device",
        "forward_gflop_per_example": round(results[0]["forward_flops"] / 1e9, 3),
        "bound_seconds_per_epoch_one_trial": round(bound_one, 2),
        "seconds_per_epoch": [round(r["seconds"], 2) for r in results],
        "fraction_of_bound_per_trial": [round(bound_one / r["seconds"], 3) for r in results],
        "fraction_of_bound_all_trials": round(args.trials * bound_one / wall_all, 3),
        "peak_allocated_mib": [r["peak_allocated_mib"] for r in results],
        "peak_reserved_mib": [r["peak_reserved_mib"] for r in results],
    }, indent=2))


if __name__ == "__main__":
    main()
