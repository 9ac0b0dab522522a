"""The catastrophic-overfitting guard of FGSM training (Wong, Rice & Kolter 2020, section 5).

FGSM training can collapse within an epoch: robust accuracy against PGD falls to near zero while
FGSM accuracy climbs. After every epoch of a guarded round the guard runs PGD (attack.eval's threat
model, `attack.guard.steps` steps) on one fixed batch of training images; when that accuracy falls more
than `attack.guard.drop` below the best of the round, it fires. `rollback` restores the weights and
optimiser state of the last epoch that passed (the caller then ends the round), `stop` ends the round
as it is, `record` only marks the epoch's record.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

from torch import Tensor, nn

from ticketsearch.core.attacks import Perturb, is_adversarial
from ticketsearch.core.fastpath import FastPath
from ticketsearch.core.loops import evaluate
from ticketsearch.spec import AttackConfig
from ticketsearch.spec.sections import GuardSection
from ticketsearch.records import NAN


class OverfittingGuard:
    def __init__(self, config: GuardSection, eval_attack: AttackConfig):
        self.config = config
        # alpha None: torchattacks' PGD step for `steps` steps is derived from eps (AttackConfig.step_size).
        self.check = eval_attack.model_copy(update={"kind": "pgd", "steps": config.steps, "alpha": None})
        self.reset()

    def reset(self) -> None:
        """A new round: no best yet, nothing to roll back to."""
        self.best = -math.inf
        self.snapshot: dict[str, Any] | None = None

    def guards(self, regime: AttackConfig) -> bool:
        on = self.config.enabled == "on" or (self.config.enabled == "auto" and regime.kind == "fgsm")
        return on and is_adversarial(regime)

    def after_epoch(self, regime: AttackConfig, *, model: nn.Module, optimizer, forward: nn.Module,
                    attack_for: Callable[[AttackConfig], Perturb], images: Tensor, labels: Tensor,
                    fastpath: FastPath) -> tuple[float, bool, str]:
        """(PGD accuracy on the guard batch, whether the guard fired, its action if it did).

        `attack_for` builds (or looks up) an attack on `forward`; `model` and `optimizer` are what a
        rollback restores.
        """
        if not self.guards(regime):
            return NAN, False, ""
        n = self.config.examples
        accuracy = evaluate(forward, images[:n], labels[:n], attack_for(self.check), batch_size=n,
                            fastpath=fastpath).robust
        fired = accuracy < self.best - self.config.drop
        if fired and self.config.action == "rollback" and self.snapshot is not None:
            model.load_state_dict(self.snapshot["model"])
            optimizer.load_state_dict(self.snapshot["optimizer"])
        if not fired:
            self.best = max(self.best, accuracy)
            if self.config.action == "rollback":
                self.snapshot = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                                 "optimizer": copy.deepcopy(optimizer.state_dict())}
        return accuracy, fired, self.config.action if fired else ""

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "snapshot": self.snapshot}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.snapshot = state["best"], state["snapshot"]
