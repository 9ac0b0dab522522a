"""The validated, frozen description of one trial: one pydantic model per spec section.

Every section forbids unknown keys, so a typo fails naming its path, and reads numbers strictly
(spec/fields.py). Single-key shorthands read the way papers write settings:
`schedule: {cosine: {warmup_epochs: 2}}`, `train: {pgd: {eps: 8/255, alpha: 2/255, steps: 10}}`,
`trainer: imp`. The sections live by concern: spec/training_sections.py (data, model, train, prune,
trainer, resources), spec/attack_sections.py (regimes, attack), spec/measurement_sections.py
(reference, certify), spec/transfer_section.py and spec/search_sections.py (objective, search); this
module puts them together into `TrialConfig` and is where they are imported from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import BeforeValidator, model_validator

from ticketsearch.spec.attack_sections import (CERTIFIED_REGIMES, DEFAULT_BETA, DEFAULT_RAMP, DEFAULT_WARMUP, EPS_2,
                                               EPS_8, TRAINING_OBJECTIVES, AttackConfig, AttackField, AttackSection,
                                               GuardSection)
from ticketsearch.spec.fields import Float, Int, Section, single_key_form
from ticketsearch.spec.measurement_sections import CertifySection, ReferenceSection
from ticketsearch.spec.search_sections import (ConfirmSection, Objective, ObjectiveSection, SchedulerSection,
                                               SearchSection, objective_list)
from ticketsearch.spec.training_sections import (DataSection, ModelSection, PruneSection, ResourcesSection, Schedule,
                                                 TrainerSection, TrainSection)
from ticketsearch.spec.transfer_section import PretrainedSection, PretrainSection, TransferSection

__all__ = ["CERTIFIED_REGIMES", "DEFAULT_BETA", "DEFAULT_RAMP", "DEFAULT_WARMUP", "EPS_2", "EPS_8",
           "TRAINING_OBJECTIVES", "AttackConfig", "AttackField", "AttackSection", "CertifySection", "ConfirmSection",
           "DataSection", "Float", "GuardSection", "Int", "ModelSection", "Objective", "ObjectiveSection",
           "PretrainSection", "PretrainedSection", "PruneSection", "ReferenceSection", "ResourcesSection", "Schedule",
           "SchedulerSection", "SearchSection", "Section", "TrainSection", "TrainerSection", "TransferSection",
           "TrialConfig"]


class TrialConfig(Section):
    """A whole spec with every leaf fixed: what one trial runs.

    A section a trainer needs (`transfer`) is refused missing by the trainer's registration
    (trainers/__init__.py, `check_config`), not here: this module names no trainer.
    """

    name: str = "ticketsearch"
    trainer: Annotated[TrainerSection, BeforeValidator(single_key_form("name"))] = TrainerSection()
    data: DataSection
    model: ModelSection
    train: TrainSection
    attack: AttackSection = AttackSection()
    prune: PruneSection = PruneSection()
    reference: ReferenceSection = ReferenceSection()
    objective: Annotated[ObjectiveSection, BeforeValidator(objective_list)] = ObjectiveSection()
    search: SearchSection = SearchSection()
    resources: ResourcesSection = ResourcesSection()
    transfer: TransferSection | None = None  # required by trainer: transfer
    certify: CertifySection | None = None  # certified accuracy of the ticket and the reference (off: none)

    @model_validator(mode="after")
    def _rewind_within_dense_round(self) -> "TrialConfig":
        if self.prune.rewind > self.find_epochs:
            raise ValueError(
                f"prune.rewind: epoch {self.prune.rewind} is past the dense round's {self.find_epochs} epochs"
            )
        # A ticket rewound to epoch k continues the schedule from there: it needs epochs left to train.
        if self.prune.rounds > 0 and self.prune.rewind >= min(self.find_epochs, self.train.epochs):
            raise ValueError(f"prune.rewind: a ticket rewound to epoch {self.prune.rewind} continues the schedule "
                             f"from there; give fewer than {min(self.find_epochs, self.train.epochs)} epochs")
        return self

    @property
    def find_regime(self) -> AttackConfig:
        return self.prune.find_with or self.attack.train

    @property
    def find_epochs(self) -> int:
        return self.prune.find_epochs or self.train.epochs

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        """12 hex digits naming this exact configuration (seed included)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]
