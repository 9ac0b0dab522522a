"""What every trainer shares: one epoch per `next_record()`, under the trial's own random stream.

A trainer sets `status` ("running" until it ends), `random` (a `RandomStream`), `forward` (the module
attacks call), `data`, `fastpath` and implements `_next_record()`; this class gives it iteration, the random
stream swapped in around every epoch, and one attack object per threat model.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.data import DataBundle, prepare_data
from ticketsearch.spec import AttackConfig
from ticketsearch.spec.sections import DataSection
from ticketsearch.trainers.records import EpochRecord


def load_task(data: DataSection) -> DataBundle:
    """The train / validation / test tensors a data section describes."""
    return prepare_data(data.dataset, data.root, val_split=data.val_split, fraction=data.fraction,
                        split_seed=data.split_seed, download=data.download, classes=data.classes)


class EpochTrainer:
    status: str
    # Epochs of a dense reference trained outside the trial's own epochs (the transfer trainer's shared
    # baseline); the IMP trainer's dense rounds are its own records, so it has none.
    dense_records: Sequence[EpochRecord] = ()

    @property
    def done(self) -> bool:
        return self.status != "running"

    def __iter__(self) -> Iterator[EpochRecord]:
        while not self.done:
            yield self.next_record()

    def next_record(self) -> EpochRecord:
        """Train and evaluate one epoch (the trainer's `_next_record`) under the trial's random stream."""
        if self.done:
            raise StopIteration
        with self.random.active():
            return self._next_record()

    def _attack(self, regime: AttackConfig) -> Any:
        attacks = self.__dict__.setdefault("_attacks", {})
        if regime not in attacks:
            attacks[regime] = build_attack(self.forward, regime, self.data.info.num_classes, "attack",
                                           fold_batchnorm=self.fastpath.fold_batchnorm)
        return attacks[regime]
