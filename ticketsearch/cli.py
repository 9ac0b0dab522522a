"""The `ticketsearch` command: argument parsing and printing only.

Bad input (a `UserError`) prints one line naming what was wrong and exits with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

from ticketsearch.errors import UserError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    warnings.filterwarnings("ignore", message=".*unreadable.*")  # printed once, as one line each
    try:
        args = parser.parse_args(argv)  # inside: an option's own check raises a UserError (`_count`)
        return args.handler(args)
    except UserError as error:
        print(f"ticketsearch: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("ticketsearch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ticketsearch validate x | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketsearch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a spec and print the trial it resolves to")
    validate.add_argument("spec", help="search spec (YAML)")
    _add_set(validate)
    validate.set_defaults(handler=_validate)

    train = commands.add_parser("train", help="run one trial of a spec (distributions at their defaults or --set)")
    train.add_argument("spec", help="search spec (YAML)")
    _add_set(train)
    train.add_argument("--out", help="output directory (default: runs/<name>-<config hash>)")
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    train.add_argument("--threads", type=_count("--threads"), help="torch CPU threads (default: torch's)")
    train.add_argument("--resume", action="store_true", help="continue the trial saved in --out")
    train.set_defaults(handler=_train)

    run = commands.add_parser("run", help="run a search spec as Ray Tune trials (embedded Ray or a cluster)")
    run.add_argument("spec", help="search spec (YAML)")
    _add_set(run)
    run.add_argument("--address", help="join a running Ray cluster: auto or HOST:PORT (default: start Ray here)")
    run.add_argument("--out", help="output directory (default: runs/<name>-<spec hash>)")
    run.add_argument("--resume", action="store_true", help="continue the interrupted search in --out")
    run.add_argument("--num-cpus", type=_count("--num-cpus"), help="CPUs of the embedded Ray (default: all)")
    run.add_argument("--storage", metavar="URI",
                     help="where checkpoints go: a path every node mounts (NFS) or an s3:// or gs:// URI "
                          "(default: <out>/ray; --resume finds the search's own)")
    run.set_defaults(handler=_run)

    data = commands.add_parser("data", help="download and check the data sets of a spec on this machine (node set-up)")
    data.add_argument("spec", help="search spec (YAML)")
    _add_set(data)
    data.set_defaults(handler=_data)

    results = commands.add_parser("results", help="the leaderboard of a search, from its Parquet files")
    results.add_argument("out", help="output directory of `ticketsearch run` or `train`")
    results.add_argument("--top", type=int, default=10, help="how many trials (default 10; 0 = all)")
    results.add_argument("--sort", help="column to rank by (default: the objective, in its mode)")
    results.add_argument("--format", choices=("table", "csv", "json"), default="table")
    results.set_defaults(handler=_results)

    report = commands.add_parser("report", help="a Markdown report with PNG plots of a search")
    report.add_argument("out", help="output directory of `ticketsearch run` or `train`")
    report.add_argument("--top", type=int, default=3, help="tickets shown in the curves and speed-up plots")
    report.set_defaults(handler=_report)
    return parser


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", action="append", default=[], metavar="PATH=VALUE",
        help="fix a spec field, e.g. --set train.lr=0.05 --set attack.train.eps=8/255 (repeatable)",
    )


def _count(option: str):
    """An argparse type for a count of threads or CPUs: a whole number of at least 1. Without it `train`
    would ignore --threads 0 and fail with a traceback on a negative count, and `run` would start Ray
    with no CPU for any trial."""

    def read(text: str) -> int:
        if not text.isdecimal() or int(text) < 1:
            raise UserError(f"{option}: {text!r} is not a count; accepted: a whole number of at least 1, or leave it "
                            "out for the default")
        return int(text)

    return read


def _validate(args: argparse.Namespace) -> int:
    import yaml

    from ticketsearch.pretrial import check_before_trials
    from ticketsearch.spec import load_spec, parse_overrides

    spec = load_spec(args.spec, parse_overrides(args.set))
    check_before_trials(spec)
    print(f"spec {spec.source}: valid (name {spec.name}, spec hash {spec.content_hash()})")
    if spec.space:
        print("search space:")
        for path, d in spec.space.items():
            print(f"  {path}: {d.kind} {list(d.args)} (default {d.default!r})")
    print(f"trial at the defaults (config hash {spec.default_trial.content_hash()}):")
    print(yaml.safe_dump(spec.default_trial.to_dict(), sort_keys=False).rstrip())
    return 0


def _train(args: argparse.Namespace) -> int:
    from ticketsearch.pretrial import check_before_trials
    from ticketsearch.single_trial import run_one_trial
    from ticketsearch.spec import load_spec, parse_overrides

    spec = load_spec(args.spec, parse_overrides(args.set))
    check_before_trials(spec)
    run_one_trial(spec.default_trial, out=args.out, device=args.device, threads=args.threads,
                  resume=args.resume, echo=print)
    return 0


def _run(args: argparse.Namespace) -> int:
    from ticketsearch.search.driver import run_search
    from ticketsearch.spec import load_spec, parse_overrides

    spec = load_spec(args.spec, parse_overrides(args.set))
    summary = run_search(spec, out=args.out, address=args.address, resume=args.resume, num_cpus=args.num_cpus,
                         storage=args.storage, echo=print)
    return 1 if summary["failed"] else 0  # the summary's last line said why


def _data(args: argparse.Namespace) -> int:
    from ticketsearch.search.preflight import prepare_data_sets
    from ticketsearch.spec import load_spec, parse_overrides

    for line in prepare_data_sets(load_spec(args.spec, parse_overrides(args.set))):
        print(line)
    return 0


def _results(args: argparse.Namespace) -> int:
    from ticketsearch.results.confirmation import confirmation_lines
    from ticketsearch.results.leaderboard import leaderboard
    from ticketsearch.results.store import load

    results = load(args.out)
    _note_partial(results)
    table = leaderboard(results, top=args.top or None, sort=args.sort)
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    elif args.format == "json":
        print(table.to_json(orient="records", indent=2))
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        for line in confirmation_lines(results.trials):  # the figures to quote (search.confirm)
            print(line)
    return 0


def _report(args: argparse.Namespace) -> int:
    from ticketsearch.results.report import write_report
    from ticketsearch.results.store import load

    _note_partial(load(args.out))
    print(f"report: {write_report(Path(args.out), top=args.top)}")
    return 0


def _note_partial(results) -> None:
    for problem in results.problems:
        print(f"ticketsearch: warning: {problem}", file=sys.stderr)
    if not results.finished:
        print(f"ticketsearch: note: {results.state_note()}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
