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



@dataclass(frozen=True)
class EpochRecord:
    round: int  # IMP round: 0 is dense; sparsity 1-(1-p)^round
    # IMP: dense (round 0, under the finding regime), find (rounds 1..R-1), ticket (round R, under
    # attack.train), baseline (the dense reference under attack.train); transfer: finetune_standard,
    # finetune_adversarial (the ticket fine-tuned downstream).
    phase: str
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
    # Training cost in example-passes (one forward+backward of one example; trainers/engine.py).
    passes: float = 0.0
    eval_passes: float = 0.0  # validation's passes: clean plus the attack's steps, per example
    reused: bool = False  # trained by another trial (a shared level), not by this one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EpochRecord":
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


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


def convergence(ticket: Sequence[EpochRecord], reference: Sequence[EpochRecord],
                finding: Sequence[EpochRecord]) -> dict[str, float]:
    """The boosting-ticket measures (Li et al. 2020): the ticket's round against the dense reference.

    target: the reference's final validation robust accuracy (the dense network trained under the
    ticket's regime); ticket/dense epochs and seconds to reach it; find_seconds: training time of
    rounds 0..R-1 (the cost of finding the ticket); speedup: dense seconds-to-target over (find
    seconds + ticket seconds-to-target), so a value above 1 means the ticket paid for its own search;
    epoch_speedup: dense epochs-to-target over ticket epochs-to-target, finding cost excluded.
    """
    out = dict.fromkeys(CONVERGENCE_COLUMNS, NAN)
    out["find_seconds"] = sum(r.epoch_seconds for r in finding) if ticket else NAN
    if not ticket or not reference:
        return out
    target = reference[-1].val_robust_acc
    out["target_robust_acc"] = target
    out["ticket_epochs_to_target"], out["ticket_seconds_to_target"] = epochs_to_reach(ticket, target)
    out["dense_epochs_to_target"], out["dense_seconds_to_target"] = epochs_to_reach(reference, target)
    if not math.isnan(out["ticket_seconds_to_target"]):
        out["speedup"] = out["dense_seconds_to_target"] / (out["find_seconds"] + out["ticket_seconds_to_target"])
        out["epoch_speedup"] = out["dense_epochs_to_target"] / out["ticket_epochs_to_target"]
    return out


CONVERGENCE_COLUMNS = ("target_robust_acc", "ticket_epochs_to_target", "ticket_seconds_to_target",
                       "dense_epochs_to_target", "dense_seconds_to_target", "find_seconds", "speedup", "epoch_speedup")


def path_summary(records: Sequence[EpochRecord]) -> dict[str, Any]:
    """What a trial's records say so far, running or finished: the one place these columns are computed.

    The path is every record but the dense reference's ("baseline"); its last record is the trial's
    current ticket. `trained_*` counts what this trial trained itself, `reused_*` what it took from
    levels other trials trained.
    """
    main = [r for r in records if r.phase != "baseline"]
    last = main[-1] if main else None
    final_round = [r for r in main if last is not None and (r.round, r.phase) == (last.round, last.phase)]
    own = [r for r in records if not r.reused]
    reused = [r for r in records if r.reused]
    return {
        "epochs_trained": len(records),
        "trained_epochs": len(own), "reused_epochs": len(reused),
        "trained_seconds": sum(r.epoch_seconds for r in own), "reused_seconds": sum(r.epoch_seconds for r in reused),
        "trained_passes": sum(r.passes for r in own), "reused_passes": sum(r.passes for r in reused),
        "train_seconds": sum(r.epoch_seconds for r in records),
        "eval_seconds": sum(r.eval_seconds for r in records),
        "final_round": last.round if last else 0,
        "final_sparsity": last.sparsity if last else 0.0,
        "final_val_clean_acc": last.val_clean_acc if last else NAN,
        "final_val_robust_acc": last.val_robust_acc if last else NAN,
        "best_val_robust_acc": max((r.val_robust_acc for r in final_round), default=NAN),
        "robust_auc": last.robust_auc if last else NAN,
        "guard_fired": any(r.guard_fired for r in records),
    }


TEST_COLUMNS = ("test_clean_acc", "test_robust_acc", "test_examples", "test_autoattack_acc", "best_epoch",
                "best_test_clean_acc", "best_test_robust_acc", "best_test_examples", "best_test_autoattack_acc")
# Every trial-level column any trainer fills, at its value before a trial ends: present (NaN) from a
# trial's first row on, so trials.parquet keeps one schema whatever state the trials are in.
SUMMARY_DEFAULTS: dict[str, Any] = {
    **{k: (0.0 if k.endswith(("epochs", "seconds", "passes")) else v)
       for k, v in path_summary([]).items()},
    **dict.fromkeys(CONVERGENCE_COLUMNS, NAN),
    **dict.fromkeys(TEST_COLUMNS, NAN),
    **dict.fromkeys([f"reference_{c}" for c in TEST_COLUMNS], NAN),
}
