"""Peak memory of one trial for each bundled model, at the quick-start and the CIFAR settings.

Each (model, setting) runs in its own process: it puts the data set on the device, builds the model,
optimiser and an 80% mask, then runs one PGD training step at the training batch size and one
evaluation batch (clean pass plus PGD passes) at the evaluation batch size, and reports its peak.
A PGD attack frees each step's graph before the next, so peak memory does not depend on the number
of attack steps: one step measures what PGD-10 or PGD-20 needs, in a tenth of the time.

- CUDA: `torch.cuda.max_memory_allocated` (tensors) and `max_memory_reserved` (what the caching
  allocator holds: what a fractional-GPU neighbour cannot use), data set included.
- CPU: peak resident set size (`ru_maxrss`) minus the resident size after `import torch` and
  ticketsearch, i.e. what the trial adds to a process (data set, model, activations, allocator).

Settings: quick-start = digits 8x8x1, the quick-start's widths (0.5 default, 1.0 the largest it
searches), train batch 64, eval batch 300 (searches/quickstart.yaml); CIFAR = 32x32x3, width 1,
train batch 128, eval batch 500 (the spec defaults), 50,000 training images resident.

    python3 -m uv run python benchmarks/peak_memory.py                      # every model, both settings
    python3 -m uv run python benchmarks/peak_memory.py --archs resnet20 small_cnn --settings cifar
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource

import torch

SETTINGS = {
    # name: (channels, size, widths, train batch, eval batch, resident training images)
    "quickstart": (1, 8, (0.5, 1.0), 64, 300, 1_297),
    "cifar": (3, 32, (1.0,), 128, 500, 50_000),
}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(arch: str, setting: str, width: float, device_name: str, precision: str, queue) -> None:
    from ticketsearch.core.attacks import build_attack
    from ticketsearch.core.fastpath import resolve_fastpath
    from ticketsearch.core.loops import Augmentation, evaluate, train_epoch
    from ticketsearch.core.models import count_parameters, create_model
    from ticketsearch.core.pruning import Mask, MaskApplier, magnitude_prune, prunable_weights
    from ticketsearch.errors import UserError
    from ticketsearch.spec import AttackConfig

    # Modules a trial loads on first use, imported before the baseline so that their memory is not
    # counted as the trial's: torchattacks (with scipy) when an attack is built, and torch._dynamo
    # (with sympy, ~150 MiB) when the first optimiser is created.
    import torchattacks  # noqa: F401
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

    channels, size, _, train_batch, eval_batch, resident = SETTINGS[setting]
    device = torch.device(device_name)
    torch.set_num_threads(2)
    base = rss_mib()
    fastpath = resolve_fastpath(precision, False, device)
    try:
        model = create_model(arch, width=width, num_classes=10, in_channels=channels,
                             mean=(0.5,) * channels, std=(0.25,) * channels)
    except UserError as exc:
        queue.put({"arch": arch, "setting": setting, "width": width, "error": str(exc)})
        return
    model = model.to(device, memory_format=fastpath.memory_format)
    weights = prunable_weights(model)
    apply = MaskApplier(weights, magnitude_prune(weights, Mask.ones(weights), 0.8, "global"))
    x = torch.randint(0, 256, (resident, channels, size, size), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (resident,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    attack = build_attack(model, AttackConfig(kind="pgd", eps=8 / 255, alpha=2 / 255, steps=1), 10, "attack",
                          fold_batchnorm=fastpath.fold_batchnorm)
    try:
        train_epoch(model, optimizer, x[:train_batch], y[:train_batch], batch_size=train_batch, attack=attack,
                    after_step=apply, lr_for_step=lambda step: 0.01, first_step=0,
                    shuffle=torch.Generator().manual_seed(0), augmentation=Augmentation(4 if size == 32 else 0, size == 32),
                    augment_generator=torch.Generator(device).manual_seed(1), fastpath=fastpath)
        evaluate(model, x[:eval_batch], y[:eval_batch], attack, batch_size=eval_batch, fastpath=fastpath)
    except RuntimeError as exc:  # a model that does not fit 8x8 inputs, or out of memory
        queue.put({"arch": arch, "setting": setting, "width": width, "error": str(exc).splitlines()[0][:120]})
        return
    row = {"arch": arch, "setting": setting, "width": width, "parameters": count_parameters(model),
           "fastpath": fastpath.describe(),
           "cpu_peak_rss_added_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)}
    if device.type == "cuda":
        row["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        row["cuda_peak_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20)
    queue.put(row)


def main() -> None:
    from ticketsearch.core.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="*", help="default: every registered model")
    parser.add_argument("--settings", nargs="*", choices=sorted(SETTINGS), default=sorted(SETTINGS, reverse=True))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = parser.parse_args()

    context = mp.get_context("spawn")
    for arch in args.archs or sorted(MODELS.names()):
        for setting in args.settings:
            for width in SETTINGS[setting][2]:
                queue = context.Queue()
                process = context.Process(target=measure, args=(arch, setting, width, args.device, args.precision, queue))
                process.start()
                row = queue.get()
                process.join()
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
