"""What a trainer yields: one `EpochRecord` per round per epoch, and the convergence measures.

Accuracies are fractions in [0, 1]; seconds are wall-clock seconds; a measure that does not apply is
NaN (kept as a float so every Parquet file has one schema).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Sequence

from ticketsearch.spec.objectives import PER_EPOCH_OBJECTIVES

NAN = float("nan")

# Phases of an IMP trial, in order: round 0 trains the dense network (under the ticket-finding
# regime), rounds 1..R-1 train intermediate tickets ("find"), round R trains the final ticket under
# attack.train ("ticket"), and "baseline" trains the dense network under attack.train when that
# regime differs from the finding one, so the ticket's convergence has its reference.
PHASES = ("dense", "find", "ticket", "baseline")
# Phases of a transfer trial: the ticket fine-tuned on the downstream task under each regime.
TRANSFER_PHASES = ("finetune_standard", "finetune_adversarial")


@dataclass(frozen=True)
class EpochRecord:
    round: int  # IMP round: 0 is dense; sparsity 1-(1-p)^round
    phase: str  # one of PHASES or TRANSFER_PHASES
    epoch: int  # 1-based within the round
    global_epoch: int  # 1-based across the whole trial: the time axis of ASHA and TensorBoard
    sparsity: float  # fraction of prunable weights that are zero
    regime: str  # training threat model of this round, e.g. "pgd-10 eps=8/255"
    lr: float  # at the last step of the epoch
    train_loss: float
    train_acc: float  # on the adversarial training batches
    val_clean_acc: float
    val_robust_acc: float  # under attack.eval, counting an example only when clean-correct too
    robust_auc: float  # mean val_robust_acc over this round's epochs so far
    epoch_seconds: float  # training wall time of the epoch (attack passes included, evaluation not)
    eval_seconds: float  # validation evaluation plus the catastrophic-overfitting check
    examples_per_second: float  # training examples / epoch_seconds
    guard_robust_acc: float  # catastrophic-overfitting check on a training batch (NaN when off)
    guard_fired: bool
    guard_action: str  # "" unless the guard fired: rollback, stop or record

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EpochRecord":
        return cls(**{f.name: values[f.name] for f in fields(cls)})


RECORD_FIELDS = tuple(f.name for f in fields(EpochRecord))


def objective_value(metric: str, records: Sequence[EpochRecord], summary: dict[str, Any] | None) -> float:
    """The objective after the latest record, as a search reports it and `train` records it.

    A per-epoch metric follows the ticket, not the dense baseline trained after it; a trial-level one
    comes from the `summary` of a finished trial (None while it runs: NaN).
    """
    if metric in PER_EPOCH_OBJECTIVES:
        main = [r for r in records if r.phase != "baseline"]
        return float(getattr(main[-1], metric)) if main else NAN
    return float(summary.get(metric, NAN)) if summary is not None else NAN


def epochs_to_reach(records: Sequence[EpochRecord], target: float) -> tuple[float, float]:
    """(epochs, training seconds) until val_robust_acc first reaches `target`; NaN if never."""
    seconds = 0.0
    for index, record in enumerate(records, start=1):
        seconds += record.epoch_seconds
        if record.val_robust_acc >= target - 1e-12:
            return float(index), seconds
    return NAN, NAN


def convergence(records: Iterable[EpochRecord]) -> dict[str, float]:
    """The boosting-ticket measures (Li et al. 2020) from a trial's records.

    target: the dense network's final validation robust accuracy under the ticket's regime;
    ticket/dense epochs and seconds to reach it; find_seconds: training time of rounds 0..R-1 (the
    cost of finding the ticket); speedup: dense seconds-to-target over (find seconds + ticket
    seconds-to-target), so a value above 1 means the ticket paid for its own search;
    epoch_speedup: dense epochs-to-target over ticket epochs-to-target, finding cost excluded.
    """
    records = list(records)
    ticket = [r for r in records if r.phase == "ticket"]
    baseline = [r for r in records if r.phase == "baseline"]
    dense = baseline or ([r for r in records if r.phase == "dense"] if _same_regime(records) else [])
    finding = [r for r in records if r.phase in ("dense", "find")]
    out = dict.fromkeys(
        ("target_robust_acc", "ticket_epochs_to_target", "ticket_seconds_to_target", "dense_epochs_to_target",
         "dense_seconds_to_target", "find_seconds", "speedup", "epoch_speedup"),
        NAN,
    )
    out["find_seconds"] = sum(r.epoch_seconds for r in finding) if ticket else NAN
    if not ticket or not dense:
        return out
    target = dense[-1].val_robust_acc
    out["target_robust_acc"] = target
    out["ticket_epochs_to_target"], out["ticket_seconds_to_target"] = epochs_to_reach(ticket, target)
    out["dense_epochs_to_target"], out["dense_seconds_to_target"] = epochs_to_reach(dense, target)
    if not math.isnan(out["ticket_seconds_to_target"]):
        out["speedup"] = out["dense_seconds_to_target"] / (out["find_seconds"] + out["ticket_seconds_to_target"])
        out["epoch_speedup"] = out["dense_epochs_to_target"] / out["ticket_epochs_to_target"]
    return out


def _same_regime(records: Sequence[EpochRecord]) -> bool:
    dense = next((r for r in records if r.phase == "dense"), None)
    ticket = next((r for r in records if r.phase == "ticket"), None)
    return dense is not None and ticket is not None and dense.regime == ticket.regime
