"""Every check that can be made before a trial starts: the same for `validate`, `train` and `run`.

Each trial config at the edges of the search space is checked by its trainer (registered names, the
objective metric, a model built on the meta device, a transfer trial's files), and the sizes that
depend on a data set on disk are checked against it. A failure is a one-line UserError.
"""

from __future__ import annotations

from ticketsearch.errors import UserError
from ticketsearch.spec import Spec
from ticketsearch.spec.data_sizes import check_data_sizes


def check_before_trials(spec: Spec) -> None:
    from ticketsearch.trainers import check_config  # imports torch and the models

    check_config(spec.default_trial)
    for path, distribution in spec.space.items():
        for edge in distribution.extremes():
            try:
                check_config(spec.trial({path: edge}))
            except UserError as error:
                raise UserError(f"{spec.source} (with {path}={edge!r}): {error}") from None
    check_data_sizes(spec)
