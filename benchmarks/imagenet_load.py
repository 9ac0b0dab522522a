"""Peak memory and time of reading downsampled ImageNet, against the obvious loader, in the same run.

Writes a full-size downsampled ImageNet of random images in the real file format (image-net.org's
train_data_batch_1..10 and val_data pickles, 1,281,167 + 50,000 images; Python 3's default pickle
protocol of 2017) and reads it in fresh processes two ways:
- ticketsearch's loader (`load_raw("imagenet32", root)`): one result tensor filled file by file;
- the reference: every file read, then `np.concatenate` and one `torch.from_numpy`, as most
  published Imagenet32 loaders do.
Peak memory is each process's peak resident size minus its size after the imports, as a multiple of
the images' size (1.0 would be no overhead at all). The files stay in the page cache between the two
reads, so read times compare the parsing, not the disk.

    python3 -m uv run python benchmarks/imagenet_load.py              # 32 px: 4.1 GB of files
    python3 -m uv run python benchmarks/imagenet_load.py --size 16 --root /tmp/imagenet-bench
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN_IMAGES, TEST_IMAGES = 1_281_167, 50_000


def write(root: Path, size: int) -> None:
    folder = root / f"imagenet{size}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    row = 3 * size * size
    parts = np.array_split(np.arange(TRAIN_IMAGES), 10)
    files = [(f"train_data_batch_{i}", len(p)) for i, p in enumerate(parts, start=1)] + [("val_data", TEST_IMAGES)]
    for name, n in files:
        if (folder / name).is_file():
            continue
        batch = {"data": rng.integers(0, 256, (n, row), dtype=np.uint8),
                 "labels": (rng.integers(0, 1000, n) + 1).tolist(), "mean": np.zeros(row)}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=3)
    (folder / "map_clsloc.txt").write_text("".join(f"n{k:08d} {k} c{k}\n" for k in range(1, 1001)))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(how: str, root: str, size: int, queue) -> None:
    import torch

    from ticketsearch.core.data import load_raw

    baseline = rss_mib()
    start = time.perf_counter()
    if how == "ticketsearch":
        raw = load_raw(f"imagenet{size}", root)
        images = raw.train_x.nbytes + raw.test_x.nbytes
    else:
        folder = Path(root) / f"imagenet{size}"
        images = 0
        for names in ([f"train_data_batch_{i}" for i in range(1, 11)], ["val_data"]):
            parts = []
            for name in names:
                with open(folder / name, "rb") as f:
                    parts.append(pickle.load(f, encoding="latin1")["data"])
            x = torch.from_numpy(np.concatenate(parts).reshape(-1, 3, size, size))
            del parts
            images += x.nbytes
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    queue.put({"seconds": seconds, "peak_mib": peak - baseline, "images_mib": images / 2**20})


def run(how: str, root: Path, size: int) -> dict:
    ctx = mp.get_context("spawn")  # a fresh process: its peak is this loader's alone
    queue = ctx.Queue()
    process = ctx.Process(target=measure, args=(how, str(root), size, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, choices=(16, 32, 64), default=32)
    parser.add_argument("--root", type=Path, default=None, help="where to write the files (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = args.root or Path(temporary)
        start = time.perf_counter()
        write(root, args.size)
        print(f"imagenet{args.size}: files under {root} ({time.perf_counter() - start:.0f} s to write)")
        results = {how: run(how, root, args.size) for how in ("reference", "ticketsearch")}
    for how, r in results.items():
        print(f"{how:>12}: {r['seconds']:6.1f} s, peak {r['peak_mib']:7.0f} MiB = "
              f"{r['peak_mib'] / r['images_mib']:.2f}x the images ({r['images_mib']:.0f} MiB)")
    ours, reference = results["ticketsearch"], results["reference"]
    print(f"peak memory ticketsearch/reference: {ours['peak_mib'] / reference['peak_mib']:.2f}; "
          f"read time ticketsearch/reference: {ours['seconds'] / reference['seconds']:.2f}")


if __name__ == "__main__":
    main()
