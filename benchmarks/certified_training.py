"""Certified training on digits: clean, PGD-20 and certified test accuracy of IBP-trained dense networks
and their 50% tickets.

Each network of --networks (ARCH:WIDTH:LR) is trained twice by `ticketsearch.single_trial.run_one_trial`
from searches/digits-certified.yaml, with the fields fixed the way `ticketsearch train --set` fixes
them (model.arch, model.width, train.lr, train.seed, prune.rounds): with `prune.rounds: 0` (the dense
network: 10 epochs of IBP, Gowal et al. 2018, at eps 0.1, clean for the first tenth, eps ramped over
the next half) and with `prune.rounds: 1` (that same dense round, then global magnitude pruning of
50% of the weights outside the classifier, rewound to the initialisation and trained again with IBP
for 10 epochs: the ticket). Everything else is the spec's (batch 64, SGD momentum 0.9, no weight
decay, constant lr). The trials run with `trainer.test_eval: false`, which changes no training: the
trial's own test figures (CROWN on 300 images, which costs minutes on small_cnn) are replaced by
this script's. The final networks are loaded from the trials' ticket directories (`load_ticket`).

On the test split (the 360 held-out digits, `load_task(config.data)`, images as float in [0, 1]) and
in eval mode, each network gets clean accuracy, PGD-20 robust accuracy (the spec's attack.eval: eps
0.1, step 0.02, built by `build_attack` as `evaluate_test_split` builds it, under seed 0; an example
is robust only when it is clean-correct too) and certified accuracy at eps 0.1 by IBP, CROWN-IBP and
CROWN (`core.certify.certified_accuracy`). Clean, PGD-20, IBP and CROWN-IBP use the first --examples
test images (0: all); CROWN, which runs a backward pass per unstable neuron and is slow on small_cnn,
the first --certify-examples of them, on which IBP, clean and PGD-20 are measured again. The table
gives the images each figure rests on and the seconds each took.

Certified accuracy bounds robust accuracy from below and PGD-20 from above, so on the same images
certified <= PGD-20 <= clean must hold for IBP, CROWN-IBP and CROWN (and CROWN >= IBP: `crown` takes
the larger of both bounds); the script asserts it.

    python3 -m uv run python benchmarks/certified_training.py
    python3 -m uv run python benchmarks/certified_training.py --networks cnn_4layer:0.5:0.05 --certify-examples 0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.certify import certified_accuracy
from ticketsearch.core.data.augment import to_float
from ticketsearch.pretrial import check_before_trials
from ticketsearch.results.tickets import load_ticket
from ticketsearch.single_trial import run_one_trial
from ticketsearch.spec import TrialConfig, load_spec
from ticketsearch.trainers.engine import load_task

SPEC = "searches/digits-certified.yaml"
NETWORKS = ["cnn_4layer:0.5:0.05", "cnn_7layer:0.25:0.05", "cnn_7layer:0.25:0.2", "small_cnn:0.5:0.05",
            "small_cnn:0.5:0.2"]  # fmt: skip
TOLERANCE = 1e-9  # the accuracies are counts over the same images: exact


def network(text: str) -> tuple[str, float, float]:
    """ARCH:WIDTH:LR -> (arch, width, lr)."""
    try:
        arch, width, lr = text.split(":")
        return arch, float(width), float(lr)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ARCH:WIDTH:LR, e.g. small_cnn:0.5:0.2") from None


def trial_config(spec_path: str, arch: str, width: float, lr: float, seed: int, rounds: int) -> TrialConfig:
    """The spec's default trial with these fields fixed, as `ticketsearch train --set PATH=VALUE` does."""
    spec = load_spec(spec_path, {"model.arch": arch, "model.width": width, "train.lr": lr, "train.seed": seed,
                                 "prune.rounds": rounds, "trainer.test_eval": False})  # fmt: skip
    check_before_trials(spec)
    return spec.default_trial


def train(config: TrialConfig, out: Path, threads: int) -> tuple[torch.nn.Module, float, dict, float]:
    """(final network, its sparsity, the trial's summary, seconds) of one trial, its printing silenced."""
    start = time.perf_counter()
    summary = run_one_trial(config, out=out, device="cpu", threads=threads, echo=lambda line: None)
    model, mask, _ = load_ticket(summary["ticket_dir"])
    return model.eval(), mask.sparsity(), summary, time.perf_counter() - start


def attacked(model: torch.nn.Module, config: TrialConfig, x: torch.Tensor, y: torch.Tensor,
             num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per example: clean-correct, and PGD-20-robust (clean-correct too), as `evaluate_test_split` counts
    them (attack.eval built by `build_attack`, eval mode, seed 0, train.eval_batch_size a batch)."""
    attack = build_attack(model, config.attack.eval, num_classes, "attack.eval")
    batch = config.train.eval_batch_size
    clean, robust = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for i in range(0, len(x), batch):
            xb, yb = x[i : i + batch], y[i : i + batch]
            with torch.no_grad():
                ok = model(xb).argmax(1) == yb
            adversarial = attack(xb, yb)
            with torch.no_grad():
                clean.append(ok)
                robust.append(ok & (model(adversarial).argmax(1) == yb))
    return torch.cat(clean), torch.cat(robust)


def timed(run):
    start = time.perf_counter()
    value = run()
    return value, time.perf_counter() - start


def measure(model: torch.nn.Module, config: TrialConfig, x: torch.Tensor, y: torch.Tensor, num_classes: int,
            crown_examples: int, batch_size: int) -> dict:  # fmt: skip
    eps = config.certify.eps
    (clean, robust), pgd_s = timed(lambda: attacked(model, config, x, y, num_classes))
    m = crown_examples
    row = {"n": len(x), "m": m, "clean": int(clean.sum()) / len(x), "pgd": int(robust.sum()) / len(x),
           "clean_m": int(clean[:m].sum()) / m, "pgd_m": int(robust[:m].sum()) / m, "pgd_s": pgd_s}
    for method, key in (("ibp", "ibp"), ("crown-ibp", "crown_ibp")):
        row[key], row[f"{key}_s"] = timed(lambda: certified_accuracy(model, x, y, eps, method, batch_size=batch_size))
    row["ibp_m"] = certified_accuracy(model, x[:m], y[:m], eps, "ibp", batch_size=batch_size)
    row["crown"], row["crown_s"] = timed(lambda: certified_accuracy(model, x[:m], y[:m], eps, "crown",
                                                                    batch_size=batch_size))
    for certified, pgd, clean_acc, what in ((row["ibp"], row["pgd"], row["clean"], "IBP"),
                                            (row["crown_ibp"], row["pgd"], row["clean"], "CROWN-IBP"),
                                            (row["crown"], row["pgd_m"], row["clean_m"], "CROWN")):  # fmt: skip
        assert certified <= pgd + TOLERANCE and pgd <= clean_acc + TOLERANCE, (
            f"{what}: certified {certified:.4f} <= PGD-20 {pgd:.4f} <= clean {clean_acc:.4f} fails")
    assert row["ibp_m"] <= row["crown"] + TOLERANCE, f"CROWN {row['crown']:.4f} < IBP {row['ibp_m']:.4f}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", type=network, default=[network(n) for n in NETWORKS],
                        metavar="ARCH:WIDTH:LR", help=f"default: {' '.join(NETWORKS)}")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of every trial")
    parser.add_argument("--examples", type=int, default=0,
                        help="first test images for clean, PGD-20, IBP and CROWN-IBP (0: all 360)")
    parser.add_argument("--certify-examples", type=int, default=200,
                        help="first of those for CROWN (0: all of them)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per bound computation")
    parser.add_argument("--spec", default=SPEC)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", help="where the trials go (default: a temporary directory, removed after)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="certified-training-") as temporary:
        out = Path(args.out or temporary)
        data = None
        rows = []
        for arch, width, lr in args.networks:
            for rounds, kind in ((0, "dense"), (1, "ticket")):
                config = trial_config(args.spec, arch, width, lr, args.seed, rounds)
                if data is None:  # the trials' own test split (the data section is the same for all)
                    data = load_task(config.data)
                    n = args.examples or len(data.test_x)
                    x, y = to_float(data.test_x[:n]), data.test_y[:n]
                    m = min(args.certify_examples or n, n)
                model, sparsity, summary, train_s = train(config, out / f"{arch}-w{width:g}-lr{lr:g}-{kind}",
                                                          args.threads)  # fmt: skip
                row = measure(model, config, x, y, data.info.num_classes, m, args.batch_size)
                row.update(arch=arch, width=width, lr=lr, kind=kind, sparsity=sparsity, train_s=train_s,
                           status=summary["status"])  # fmt: skip
                rows.append(row)
    wall = time.perf_counter() - started

    def pct(v: float) -> str:
        return f"{100 * v:.1f}%"

    print(f"digits test split, IBP training at eps 0.1 ({args.spec}, 10 epochs a round, seed {args.seed}), "
          f"certified at eps 0.1; {args.threads} CPU threads, torch {torch.__version__}, wall {wall:.0f} s")
    print()
    print("| network | lr | kind | sparsity | clean | PGD-20 | IBP | CROWN-IBP | images | CROWN | CROWN images "
          "| IBP / PGD-20 / clean on CROWN's images | seconds: train / PGD-20 / IBP / CROWN-IBP / CROWN |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['arch']} w{r['width']:g} | {r['lr']:g} | {r['kind']}{'' if r['status'] == 'completed' else ' (' + r['status'] + ')'} "
              f"| {pct(r['sparsity'])} | {pct(r['clean'])} | {pct(r['pgd'])} | {pct(r['ibp'])} | {pct(r['crown_ibp'])} "
              f"| {r['n']} | **{pct(r['crown'])}** | {r['m']} | {pct(r['ibp_m'])} / {pct(r['pgd_m'])} / {pct(r['clean_m'])} "
              f"| {r['train_s']:.0f} / {r['pgd_s']:.1f} / {r['ibp_s']:.2f} / {r['crown_ibp_s']:.1f} "
              f"/ {r['crown_s']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
