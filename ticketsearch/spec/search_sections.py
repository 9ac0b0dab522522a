"""What a search ranks trials by and how it runs them: the objective and search sections."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from ticketsearch.spec.fields import Float, Int, Section, single_key_form


class Objective(Section):
    metric: str
    mode: Literal["max", "min"] = "max"


def objective_list(value: Any) -> Any:
    """`[{metric, mode}, ...]` (several objectives) -> the first as metric/mode, the rest as `more`."""
    if isinstance(value, (list, tuple)) and value:
        first, *rest = value
        if isinstance(first, dict):
            return {**first, "more": list(rest)}
    return value


class ObjectiveSection(Section):
    """What the search ranks trials by: one metric with its mode, or a list of them.

    With a list, Optuna searches the Pareto front of all of them (multi-objective TPE); ASHA, which
    takes one metric, judges trials by the first; `results` and `report` show the front.
    """

    metric: str = "robust_auc"
    mode: Literal["max", "min"] = "max"
    more: tuple[Objective, ...] = ()

    @property
    def all(self) -> tuple[Objective, ...]:
        return (Objective(metric=self.metric, mode=self.mode), *self.more)


class SchedulerSection(Section):
    kind: Literal["asha", "fifo"]
    # ASHA's clock is the trial's ticket epochs (search/space.py); both are refused past the most epochs
    # a ticket trains, where ASHA would judge no trial (pretrial.py).
    grace_period: Int = Field(2, ge=1)
    reduction_factor: Float = Field(3, gt=1)
    max_t: Int | None = Field(None, ge=1)  # default: the most epochs a trial's ticket trains


class ConfirmSection(Section):
    top: Int = Field(3, ge=1)
    seeds: Int = Field(2, ge=1)


class SearchSection(Section):
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    num_samples: Int = Field(8, ge=1)
    max_concurrent: Int = Field(2, ge=1)
    scheduler: Annotated[SchedulerSection, BeforeValidator(single_key_form("kind"))] = SchedulerSection(
        kind="fifo"
    )
    seed: Int = 0
    max_failures: Int = Field(2, ge=0)  # retries of a trial that fails (a lost node, an error)
    # Stop the search once this many trials in a row ended in the same error (a bug or bad input every
    # config shares would otherwise fail every remaining trial); 0 never stops.
    stop_after_same_errors: Int = Field(3, ge=0)
    # Per trial, at the end of a search; while it runs, checkpoints stay until no experiment snapshot
    # can name them (search/checkpoint_retention.py).
    keep_checkpoints: Int = Field(2, ge=1)
    keep_tickets: Int = Field(3, ge=0)  # ticket files written for the best trials (by objective)
    # Trials share the levels they have in common (trainers/levels.py): a dense round, an IMP path, the
    # dense reference, trained once. false: every trial trains its whole path itself (independent
    # repeats, or a measure of what sharing saves).
    share_levels: bool = True
    # After the search, its `top` best completed configurations trained again with `seeds` fresh seeds
    # (search/confirm.py): the figures a reader may quote come from these, not from the search's pick.
    confirm: ConfirmSection | None = None
