"""What every spec section is built from: the frozen base model, its number types and the single-key shorthand.

A number is read strictly. `1e-3` and `8/255` are numbers (spec/yaml_io.py); `true` and `false` are
not, though pydantic's lax mode would read `width: true` as 1.0 (`Float` and `Int` refuse them); and
`.inf`, `-.inf` and `.nan` are refused by every float field of every section (`Section`), bounded or
not: `lr: .inf` passes `gt=0`. An integer field still takes a whole float (`epochs: 2.0`, what a
`quniform` distribution samples) and a float field an integer (`lr: 1`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

from ticketsearch.spec.yaml_io import parse_number


class Section(BaseModel):
    """A spec section, or a part of one: unknown keys refused, frozen once read, numbers finite."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def read_number(value: Any) -> Any:
    """A number field's input: `8/255` and `1e-3` written as text become floats; a boolean is refused."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_boolean", "input should be a number, not a boolean")
    return parse_number(value)


Float = Annotated[float, BeforeValidator(read_number)]
Int = Annotated[int, BeforeValidator(read_number)]


def single_key_form(field: str) -> Any:
    """`{name: {options}}` or `name` -> `{field: name, **options}`; full form passes through."""

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return {field: value}
        if isinstance(value, dict) and len(value) == 1 and field not in value:
            ((name, options),) = value.items()
            if options is None or isinstance(options, dict):
                return {field: name, **(options or {})}
        return value

    return convert
