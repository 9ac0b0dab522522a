"""PGD-10 adversarial training throughput of ticketsearch's trainer against a reference loop.

The reference is written the way the seed papers' code does it: a Dataset of PIL images with
per-image torchvision transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor) in a
DataLoader, torchattacks' PGD, and masks through torch.nn.utils.prune (forward pre-hooks computing
weight_orig * mask on every forward pass), reading the loss back after every batch. ticketsearch's
loop (ticketsearch.core.loops.train_epoch): uint8 tensors augmented a batch at a time, channels-last
memory format, masks multiplied in place once per optimiser step, one read-back per epoch. Same model
(ResNet-20 by default, same init, same 80% global-magnitude mask), same data, same attack, fp32.

Each variant runs in its own process (so peak memory is its own) and is timed over one epoch after a
warm-up batch; the best of --repeats epochs counts. Prints both throughputs, the ratio and the peak
resident memory of each process. Target (issue 2): ratio >= 2 on CPU.

    python3 -m uv run python benchmarks/adv_train_throughput.py --examples 512
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import numpy as np
import torch


def build(arch: str, width: float, sparsity: float, seed: int):
    from ticketsearch.core.models import create_model
    from ticketsearch.core.pruning import Mask, magnitude_prune, prunable_weights

    torch.manual_seed(seed)
    model = create_model(arch, width=width, num_classes=10, in_channels=3,
                         mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
    weights = prunable_weights(model)
    mask = magnitude_prune(weights, Mask.ones(weights), sparsity, "global")
    return model, weights, mask


def data(examples: int, seed: int):
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, size=(examples, 32, 32, 3), dtype=np.uint8)  # CIFAR layout, HWC
    labels = generator.integers(0, 10, size=examples)
    return images, labels


def run_reference(args, queue) -> None:
    import torchattacks
    import torchvision.transforms as T
    from PIL import Image
    from torch.nn.utils import prune

    torch.set_num_threads(args.threads)
    model, weights, mask = build(args.arch, args.width, args.sparsity, args.seed)
    modules = dict(model.named_modules())
    for name in weights:
        prune.custom_from_mask(modules[name.rsplit(".", 1)[0]], "weight", mask.tensors[name].clone())
    images, labels = data(args.examples, args.seed)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])

    class PILDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i])), int(labels[i])

    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.ref_workers, drop_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    attack = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)

    def epoch(limit=None):
        total_loss, correct, seen = 0.0, 0, 0
        for index, (x, y) in enumerate(loader):
            if limit is not None and index >= limit:
                break
            x_adv = attack(x, y)
            model.train()
            out = model(x_adv)
            loss = torch.nn.functional.cross_entropy(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        return total_loss / seen, correct / seen, seen

    epoch(limit=1)  # warm-up
    queue.put(_time_epochs(epoch, args.repeats, lambda: _still_masked_reference(model, weights, mask)))


def _still_masked_reference(model, weights, mask) -> bool:
    modules = dict(model.named_modules())
    return all(bool((modules[n.rsplit(".", 1)[0]].weight[mask.tensors[n] == 0] == 0).all()) for n in weights)


def run_ticketsearch(args, queue) -> None:
    from ticketsearch.core.loops import Augmentation, train_epoch
    from ticketsearch.core.pruning import MaskApplier
    import torchattacks

    torch.set_num_threads(args.threads)
    model, weights, mask = build(args.arch, args.width, args.sparsity, args.seed)
    model = model.to(memory_format=torch.channels_last)
    mask = type(mask)({n: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                       for n, t in mask.tensors.items()})
    apply = MaskApplier(weights, mask)
    apply()
    images, labels = data(args.examples, args.seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(labels).long()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    attack = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
    shuffle = torch.Generator().manual_seed(args.seed)
    augment = torch.Generator().manual_seed(args.seed + 1)

    def epoch(limit=None):
        count = args.batch_size if limit else x_all.shape[0]
        result = train_epoch(model, optimizer, x_all[:count], y_all[:count], batch_size=args.batch_size,
                             attack=attack, after_step=apply, lr_for_step=lambda step: 0.05, first_step=0,
                             shuffle=shuffle, augmentation=Augmentation(4, True), augment_generator=augment)
        return result.loss, result.accuracy, result.examples

    epoch(limit=1)  # warm-up
    queue.put(_time_epochs(epoch, args.repeats, lambda: all(bool((w[mask.tensors[n] == 0] == 0).all())
                                                          for n, w in weights.items())))


def _time_epochs(epoch, repeats, still_masked) -> dict:
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        loss, accuracy, seen = epoch()
        seconds = time.perf_counter() - start
        if best is None or seconds < best["seconds"]:
            best = {"seconds": seconds, "examples": seen, "loss": loss, "accuracy": accuracy}
    best["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best["masks_exact"] = still_masked()
    return best


def measure(target, args) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--ref-workers", type=int, default=0, help="reference DataLoader workers")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    reference = measure(run_reference, args)
    ours = measure(run_ticketsearch, args)
    rate = lambda r: r["examples"] / r["seconds"]
    report = {
        "setup": f"{args.arch} width {args.width}, PGD-10 eps 8/255, {args.examples} CIFAR-shaped examples, "
                 f"batch {args.batch_size}, sparsity {args.sparsity}, fp32, {args.threads} threads, torch {torch.__version__}",
        "reference_examples_per_s": round(rate(reference), 1),
        "ticketsearch_examples_per_s": round(rate(ours), 1),
        "throughput_ratio": round(rate(ours) / rate(reference), 2),
        "reference_peak_rss_mib": round(reference["peak_rss_mib"]),
        "ticketsearch_peak_rss_mib": round(ours["peak_rss_mib"]),
        "reference_train_loss_acc": [round(reference["loss"], 4), round(reference["accuracy"], 4)],
        "ticketsearch_train_loss_acc": [round(ours["loss"], 4), round(ours["accuracy"], 4)],
        "masks_exact": [reference["masks_exact"], ours["masks_exact"]],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
