"""Spec: YAML -> validated, frozen `TrialConfig`s, with the search space as dotted paths.

`load_spec(path, overrides)` reads a spec, applies `--set path=value` overrides, finds the
distributions, and checks that every edge of the space (both bounds of a range, every choice) gives a
valid trial, so a bad space fails before any trial starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ValidationError

from ticketsearch.errors import UserError
from ticketsearch.spec.distributions import Distribution, find_distributions, set_path
from ticketsearch.spec.sections import AttackConfig, TrialConfig
from ticketsearch.spec.yaml_io import load_yaml_file, load_yaml_text

__all__ = ["AttackConfig", "Distribution", "Spec", "TrialConfig", "load_spec", "parse_overrides", "validate_trial"]


@dataclass(frozen=True)
class Spec:
    """A search spec: the raw tree (overrides applied), its space, and its default trial."""

    source: str
    tree: Mapping[str, Any]
    space: Mapping[str, Distribution]
    default_trial: TrialConfig

    def trial(self, values: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> TrialConfig:
        """The trial with the given space paths fixed and every other distribution at its default;
        `fixed` then sets any path (a confirmation trial's seed, search/confirm.py)."""
        tree = dict(self.tree)
        for path, distribution in self.space.items():
            tree = set_path(tree, path, values.get(path, distribution.default))
        for path, value in (fixed or {}).items():
            tree = set_path(tree, path, value)
        return validate_trial(tree, self.source)

    @property
    def name(self) -> str:
        return self.default_trial.name

    def content_hash(self) -> str:
        """Names the search: the spec tree itself (distributions included), not one trial."""
        import hashlib
        import json

        text = json.dumps(self.tree, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_overrides(assignments: list[str] | None) -> dict[str, Any]:
    """`["train.lr=0.05", "attack.train.eps=8/255"]` -> {path: value}, values read as spec YAML."""
    parsed: dict[str, Any] = {}
    for assignment in assignments or []:
        path, sep, text = assignment.partition("=")
        if not sep or not path.strip():
            raise UserError(f"--set {assignment!r}: expected path=value, e.g. --set train.lr=0.05")
        parsed[path.strip()] = load_yaml_text(text, f"--set {path.strip()}")
    return parsed


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Spec:
    source = str(path)
    tree = load_yaml_file(path)
    return spec_from_tree(tree, source, overrides)


def spec_from_tree(tree: Any, source: str, overrides: Mapping[str, Any] | None = None) -> Spec:
    if not isinstance(tree, dict):
        raise UserError(f"{source}: a spec is a mapping of sections (data, model, train, ...), got {type(tree).__name__}")
    for path, value in (overrides or {}).items():
        tree = set_path(tree, path, value)
    space = find_distributions(tree)
    spec = Spec(source=source, tree=tree, space=space, default_trial=_trial_at(tree, space, {}, source))
    for path, distribution in space.items():
        for edge in distribution.extremes():
            _trial_at(tree, space, {path: edge}, f"{source} (with {path}={edge!r})")
    return spec


def _trial_at(tree: dict, space: Mapping[str, Distribution], values: dict, source: str) -> TrialConfig:
    for path, distribution in space.items():
        tree = set_path(tree, path, values.get(path, distribution.default))
    return validate_trial(tree, source)


def validate_trial(tree: Mapping[str, Any], source: str = "spec") -> TrialConfig:
    try:
        config = TrialConfig.model_validate(tree)
    except ValidationError as exc:
        raise UserError(f"{source}: {describe_validation_error(exc, TrialConfig)}") from None
    _check_booleans(config, tree, source)
    return config


def _check_booleans(model: BaseModel, given: Any, source: str, prefix: str = "") -> None:
    """Refuse a boolean field written as anything but `true`/`false`.

    pydantic's lax mode reads "yes", "on", "1" and 1 as true; YAML 1.1 readers would too, but the spec
    loader reads them as strings, and here they are refused rather than guessed at (`on` is also a
    word of `attack.guard.enabled`, where it is no boolean). A single-key shorthand
    (`train: {pgd: {random_start: ...}}`) holds the model's own fields one level down. The converse, a
    boolean where a number belongs, is refused by the number types (spec/fields.py).
    """
    if not isinstance(given, Mapping):
        return
    fields = type(model).model_fields
    if len(given) == 1 and not set(given) & set(fields):
        ((_, options),) = given.items()
        _check_booleans(model, options, source, prefix)
        return
    for key, value in given.items():
        if key not in fields:
            continue
        path, current = f"{prefix}{key}", getattr(model, key)
        if isinstance(current, bool) and not isinstance(value, bool):
            raise UserError(f"{source}: {path}: {value!r} is not a boolean; write true or false "
                            "(YAML 1.1's yes/no/on/off are not booleans in a spec)")
        if isinstance(current, BaseModel):
            _check_booleans(current, value, source, f"{path}.")


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """The first error as one line: `path: what was wrong (what is accepted)`."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    path = ".".join(loc) or "spec"
    if error["type"] == "extra_forbidden":
        known = _known_fields(model, loc[:-1])
        return f"{path}: unknown key; known keys here: {', '.join(known)}"
    message = error["msg"]
    if error["type"] == "missing":
        return f"{path}: required but missing"
    if error["type"] == "value_error":
        # A section's own check says `field: what was wrong`; name the field by its whole path.
        message = message.removeprefix("Value error, ")
        field, sep, rest = message.partition(": ")
        if sep and field.replace("_", "").replace(".", "").isalnum() and field.islower():
            return f"{field if path == 'spec' else f'{path}.{field}'}: {rest}"
    given = error.get("input")
    spelled = str(given).lower() if isinstance(given, bool) else repr(given)  # as the spec writes it: true, false
    shown = f", got {spelled}" if not isinstance(given, (dict, list)) else ""
    return f"{path}: {message[0].lower()}{message[1:]}{shown}"


def _known_fields(model: type[BaseModel], loc: list[str]) -> list[str]:
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            break
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))
