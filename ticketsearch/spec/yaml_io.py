"""Reading spec YAML safely, with numbers that researchers write the way they write them.

PyYAML follows YAML 1.1: `1e-3` and `8/255` load as strings and `yes`/`on` as booleans. This loader
(a SafeLoader: nothing in a spec is ever executed) reads unquoted `1e-3` as a float, unquoted `8/255`
as the float 8/255 computed by division of two literals (no `eval`), and only `true`/`false` as
booleans. Quoting a value keeps it a string.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ticketsearch.errors import UserError

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_FRACTION_RE = re.compile(rf"^({_NUMBER})/({_NUMBER})$")
_EXPONENT_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?\d+$")
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


def parse_number(value: Any) -> Any:
    """`"8/255"` -> 0.0313..., `"1e-3"` -> 0.001; anything else is returned unchanged."""
    if isinstance(value, str):
        text = value.strip()
        fraction = _FRACTION_RE.match(text)
        if fraction:
            denominator = float(fraction.group(2))
            if denominator == 0:
                raise ValueError(f"{value!r} divides by zero")
            return float(fraction.group(1)) / denominator
        if _EXPONENT_RE.match(text):
            return float(text)
    return value


class SpecLoader(yaml.SafeLoader):
    """SafeLoader with YAML-1.2-style booleans, exponent floats and `a/b` fractions."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_RE, list("tTfF"))
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_RE, list("-+.0123456789"))
SpecLoader.add_implicit_resolver("tag:ticketsearch:fraction", _FRACTION_RE, list("-+.0123456789"))
SpecLoader.add_constructor(
    "tag:ticketsearch:fraction", lambda loader, node: parse_number(loader.construct_scalar(node))
)


def load_yaml_text(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=SpecLoader)
    except (yaml.YAMLError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise UserError(f"{source}: not valid YAML: {reason}") from None


def load_yaml_file(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the spec ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:  # a binary file, or text in another encoding
        raise UserError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                        "a spec is a YAML file in UTF-8") from None
    return load_yaml_text(text, str(path))
