"""Spec -> Ray Tune: the param_space, the search algorithm, the scheduler, the objective.

The param_space is flat: one entry per distribution, keyed by its dotted spec path
(`train.lr`), so a trial's config is exactly the values the search chose.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, Searcher

from ticketsearch.errors import UserError
from ticketsearch.pretrial import total_ticket_epochs
from ticketsearch.spec import Distribution, Spec
from ticketsearch.records import TICKET_EPOCH, objective_columns

OBJECTIVE = "objective"  # the key every result carries the spec's objective under


def tune_domain(distribution: Distribution) -> Any:
    kind, args = distribution.kind, distribution.args
    if kind == "loguniform":
        return tune.loguniform(args[0], args[1])
    if kind == "uniform":
        return tune.uniform(args[0], args[1])
    if kind == "quniform":
        return tune.quniform(args[0], args[1], args[2])
    if kind == "randint":
        return tune.randint(int(args[0]), int(args[1]))
    if kind == "choice":
        return tune.choice(list(args))
    return tune.grid_search(list(args))


def param_space(spec: Spec) -> dict[str, Any]:
    return {path: tune_domain(d) for path, d in spec.space.items()}


def check_search(spec: Spec) -> None:
    """What only a search needs of a spec (the objective is checked with every trial config:
    `ticketsearch.spec.objectives`)."""
    search = spec.default_trial.search
    grids = [p for p, d in spec.space.items() if d.kind == "grid"]
    if search.algorithm == "optuna" and grids:
        raise UserError(f"{grids[0]}: grid is not an Optuna distribution; use choice, or search.algorithm: grid")
    if search.algorithm == "grid" and any(d.kind != "grid" for d in spec.space.values()) and not grids:
        raise UserError("search.algorithm: grid needs at least one {grid: [...]} in the spec")


def make_searcher(spec: Spec) -> Searcher | BasicVariantGenerator:
    search, objective = spec.default_trial.search, spec.default_trial.objective
    if search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        columns = objective_columns(objective)
        if len(columns) > 1:  # multi-objective TPE: Optuna keeps the Pareto front of all of them
            return OptunaSearch(metric=[key for key, _, _ in columns], mode=[mode for _, _, mode in columns],
                                sampler=optuna.samplers.TPESampler(seed=search.seed))
        return OptunaSearch(metric=OBJECTIVE, mode=objective.mode,
                            sampler=optuna.samplers.TPESampler(seed=search.seed))
    # random and grid: Tune's variant generator; grid entries are crossed, the rest sampled. It
    # limits concurrency itself (TuneConfig's max_concurrent_trials applies to Searchers only).
    return BasicVariantGenerator(random_state=search.seed, max_concurrent=search.max_concurrent)


def tune_objective(spec: Spec) -> tuple[str | None, str | None]:
    """(metric, mode) for Tune's TuneConfig: the objective, or none when there are several (the searcher
    holds them all, and ASHA the first: a metric given to Tune would replace the searcher's)."""
    objective = spec.default_trial.objective
    return (None, None) if objective.more else (OBJECTIVE, objective.mode)


def make_scheduler(spec: Spec):
    scheduler, objective = spec.default_trial.search.scheduler, spec.default_trial.objective
    if scheduler.kind == "fifo":
        return FIFOScheduler()
    # With several objectives ASHA judges by the first, told here since Tune is told none.
    judged = {"metric": OBJECTIVE, "mode": objective.mode} if objective.more else {}
    return ASHAScheduler(
        **judged,
        # ASHA's clock counts the epochs of the trial's ticket only (records.TICKET_EPOCH): every rung
        # compares tickets with tickets at the same epoch of their training, never a ticket with a dense
        # round where the pruning ratio has had no effect yet, and shared levels cost no time on it.
        time_attr=TICKET_EPOCH,
        max_t=scheduler.max_t or total_ticket_epochs(spec),
        grace_period=scheduler.grace_period,
        reduction_factor=scheduler.reduction_factor,
    )
