"""Search-space leaves: a spec value written as `{loguniform: [0.005, 0.1]}` is a distribution.

The list is fixed (Ray Tune's and Optuna's common ground); anything else is a plain value. A
distribution may state the value that `ticketsearch train` and `validate` use when no `--set` fixes
it, as `{loguniform: [0.005, 0.1], default: 0.05}`; without one the default is the first choice, the
midpoint of a uniform range, the geometric midpoint of a log-uniform range, or the lower bound of an
integer range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ticketsearch.errors import UserError
from ticketsearch.spec.yaml_io import parse_number

KINDS = ("loguniform", "uniform", "quniform", "randint", "choice", "grid")


@dataclass(frozen=True)
class Distribution:
    """One searchable leaf. `randint` is [low, high) like Ray Tune's; the float ranges are [low, high]."""

    path: str
    kind: str
    args: tuple
    default: Any

    def extremes(self) -> list[Any]:
        """Values at the edges of the space: every one must make a valid trial."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        low, high = self.args[0], self.args[1]
        return [low, high - 1] if self.kind == "randint" else [low, high]


def is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and len(set(value) & set(KINDS)) == 1 and set(value) <= {*KINDS, "default"}


def parse_distribution(path: str, value: dict) -> Distribution:
    (kind,) = set(value) & set(KINDS)
    raw_args = value[kind]
    if not isinstance(raw_args, list) or not raw_args:
        raise UserError(f"{path}: {kind} takes a non-empty list, got {raw_args!r}")
    if kind in ("choice", "grid"):
        args = tuple(raw_args)
    else:
        args = tuple(parse_number(a) for a in raw_args)
        _check_range(path, kind, args)
    if "default" not in value:
        return Distribution(path=path, kind=kind, args=args, default=_implicit_default(kind, args))
    default = value["default"] if kind in ("choice", "grid") else parse_number(value["default"])
    _check_default(path, kind, args, default)
    return Distribution(path=path, kind=kind, args=args, default=default)


def _check_range(path: str, kind: str, args: tuple) -> None:
    expected = {"loguniform": 2, "uniform": 2, "randint": 2, "quniform": 3}[kind]
    form = "[low, high, q]" if kind == "quniform" else "[low, high]"
    # Finite: an infinite bound would make the implicit default and every sample infinite (or NaN).
    if len(args) != expected or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
                                        for a in args):
        raise UserError(f"{path}: {kind} takes {form} finite numbers, got {list(args)!r}")
    low, high = args[0], args[1]
    if not low < high:
        raise UserError(f"{path}: {kind} bounds must satisfy low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{path}: loguniform needs low > 0, got {low}")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise UserError(f"{path}: randint takes integer bounds, got [{low}, {high}]")
    if kind == "quniform" and args[2] <= 0:
        raise UserError(f"{path}: quniform needs q > 0, got {args[2]}")


def _check_default(path: str, kind: str, args: tuple, default: Any) -> None:
    """A stated default must be a value the search itself could sample: `train` and `validate` run it."""
    if kind in ("choice", "grid"):
        # == alone would take true for 1: a boolean matches only a boolean
        if not any(default == a and isinstance(default, bool) == isinstance(a, bool) for a in args):
            raise UserError(f"{path}: default {default!r} is not one of the {kind} values {list(args)!r}")
        return
    low, high = args[0], args[1]
    is_number = isinstance(default, (int, float)) and not isinstance(default, bool)
    if kind == "randint":
        inside = is_number and float(default).is_integer() and low <= default < high
        accepted = f"an integer in [{low}, {high}) (randint excludes the upper bound)"
    else:
        inside = is_number and low <= default <= high
        accepted = f"a number in [{low}, {high}]"
    if not inside:
        raise UserError(f"{path}: default {default!r} is outside the {kind} range; accepted: {accepted}")


def _implicit_default(kind: str, args: tuple) -> Any:
    if kind in ("choice", "grid"):
        return args[0]
    low, high = args[0], args[1]
    if kind == "randint":
        return int(low)
    if kind == "loguniform":
        return math.sqrt(low * high)
    middle = (low + high) / 2
    if kind == "quniform":
        return round(middle / args[2]) * args[2]
    return middle


def find_distributions(tree: Any, prefix: str = "") -> dict[str, Distribution]:
    """Every distribution leaf of a nested dict, by dotted path."""
    found: dict[str, Distribution] = {}
    if isinstance(tree, dict):
        if prefix and is_distribution(tree):
            return {prefix: parse_distribution(prefix, tree)}
        for key, value in tree.items():
            found.update(find_distributions(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def set_path(tree: dict, path: str, value: Any) -> dict:
    """A copy of `tree` with the dotted `path` set to `value` (missing sections are created)."""
    head, _, rest = path.partition(".")
    out = dict(tree)
    if rest:
        child = out.get(head)
        out[head] = set_path(child if isinstance(child, dict) else {}, rest, value)
    else:
        out[head] = value
    return out
