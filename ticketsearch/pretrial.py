"""Every check that can be made before a trial starts: the same for `validate`, `train` and `run`.

Each trial config at the edges of the search space is checked by its trainer (registered names, the
objective metric, a model built on the meta device, a transfer trial's files), ASHA's settings against
the epochs a ticket trains, and the sizes that depend on a data set on disk against it. A failure is a
one-line UserError.
"""

from __future__ import annotations

from ticketsearch.errors import UserError
from ticketsearch.spec import Spec, TrialConfig
from ticketsearch.spec.data_sizes import check_data_sizes
from ticketsearch.spec.sections import DataSection


def check_before_trials(spec: Spec) -> None:
    from ticketsearch.trainers import check_config  # imports torch and the models

    check_config(spec.default_trial)
    for path, distribution in spec.space.items():
        for edge in distribution.extremes():
            try:
                check_config(spec.trial({path: edge}))
            except UserError as error:
                raise UserError(f"{spec.source} (with {path}={edge!r}): {error}") from None
    # `train` runs one trial under no scheduler, yet refuses what `run` refuses: a spec that `validate`
    # and `train` pass is one that `run` accepts.
    check_scheduler(spec)
    check_data_sizes(spec, data_sections)


def check_scheduler(spec: Spec) -> None:
    """Refuse ASHA settings past the epochs a ticket trains, ASHA's clock (search/space.py): with
    grace_period there, no rung would ever judge a trial (ASHA a no-op, or a plain cut at max_t); with
    max_t there, rungs would sit at epochs no ticket reaches."""
    scheduler = spec.default_trial.search.scheduler
    if scheduler.kind != "asha":
        return
    epochs = total_ticket_epochs(spec)
    if scheduler.max_t is not None and scheduler.max_t > epochs:
        raise UserError(f"search.scheduler.asha.max_t: {scheduler.max_t} is past the ticket's {epochs} epochs "
                        f"(ASHA counts ticket epochs); accepted: 1..{epochs}, or leave it out for {epochs}")
    last = scheduler.max_t or epochs  # ASHA stops every trial there
    if scheduler.grace_period > last:
        end = f"max_t {last}" if scheduler.max_t else f"the ticket's {epochs} epochs"
        raise UserError(f"search.scheduler.asha.grace_period: {scheduler.grace_period} is past {end} (ASHA counts "
                        f"ticket epochs), so no rung would judge a trial; accepted: 1..{last}, or "
                        "search.scheduler: fifo")


def total_ticket_epochs(spec: Spec) -> int:
    """The most epochs any trial of the space trains its ticket (ASHA's clock; every edge of the space)."""
    from ticketsearch.trainers import ticket_epochs

    trials = [spec.default_trial] + [spec.trial({d.path: edge}) for d in spec.space.values() for edge in d.extremes()]
    return max(ticket_epochs(t) for t in trials)


def data_sections(trial: TrialConfig) -> list[tuple[str, DataSection]]:
    """(spec path, section) of every data set the trial's trainer reads, as its registration names
    them (`TrainerKind.data_sections`: `data`, and `transfer.source` for the transfer trainer)."""
    from ticketsearch.trainers import TRAINERS

    found = []
    for path in TRAINERS.get(trial.trainer.name, field="trainer.name").data_sections:
        section = trial
        for name in path.split("."):
            section = None if section is None else getattr(section, name)  # an absent section reads none
        if section is not None:
            found.append((path, section))
    return found
