"""What a trainer yields: one `EpochRecord` per round per epoch, and the convergence measures.

Accuracies are fractions in [0, 1]; seconds are wall-clock seconds; a measure that does not apply is
NaN (kept as a float so every Parquet file has one schema).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

from ticketsearch.spec.objectives import PER_EPOCH_OBJECTIVES

NAN = float("nan")
# What a level is to the trial that plays it (`EpochRecord.role`): a level its ticket is found from
# (pre-training; IMP's dense and finding rounds; IMP on a source task), the ticket itself (the network
# the trial is judged by), or a dense network it is compared with: the reference that sets the target,
# dense at the ticket's own learning rate (`matched`), dense at one of reference.best_of.
ROLES = ("pretrain", "find", "ticket", "reference", "matched", "best_of")
COMPARISON_ROLES = ("reference", "matched", "best_of")  # never the trial's own path


@dataclass(frozen=True)
class EpochRecord:
    round: int  # IMP round: 0 is dense; sparsity 1-(1-p)^round
    # IMP: dense (round 0, under the finding regime), find (rounds 1..R-1), ticket (round R, under
    # attack.train), baseline (the dense reference under attack.train), matched and best_of (the other
    # dense networks it is compared with); transfer: finetune_standard,
    # finetune_adversarial (the ticket fine-tuned downstream).
    phase: str
    epoch: int  # 1-based within the round
    global_epoch: int  # 1-based across the whole trial: TensorBoard's time axis
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
    # The ticket's round: records.convergence_gap against the dense reference so far (NaN elsewhere).
    convergence_gap: float = NAN
    # Certified accuracy (IBP at certify.eps) on the validation images (NaN unless certify.every_epoch).
    val_certified_acc: float = NAN
    # The level the epoch belongs to (trainers/level_spec.py): its name, a hash of what it read.
    level: str = ""
    # What the level is to this trial (trainers/level_spec.py ROLES): pretrain, find, ticket, reference,
    # matched or best_of. Results read roles, never phases.
    role: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EpochRecord":
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


RECORD_FIELDS = tuple(f.name for f in fields(EpochRecord))


# Reported with every epoch: how many epochs of the trial's ticket (the network the trial is judged by:
# the final round of IMP, the fine-tuned ticket of transfer) it has trained so far; 0 before.
TICKET_EPOCH = "ticket_epoch"


def objective_value(metric: str, records: Sequence[EpochRecord], summary: dict[str, Any] | None) -> float:
    """The objective after the latest record, as a search reports it and `train` records it.

    A per-epoch metric follows the trial's path, not the dense networks it is measured against; a trial-level one comes from the `summary` of a finished trial (None while it runs: NaN).
    A ticket that never reached the reference's target gets a finite value that ranks it below every
    ticket that did, and orders such tickets by how close they came (`unreached_value`), so a
    searcher learns from it rather than discarding it as failed.
    """
    if metric in PER_EPOCH_OBJECTIVES:
        main = [r for r in records if r.role not in COMPARISON_ROLES]
        return float(getattr(main[-1], metric)) if main else NAN
    if summary is None:
        return NAN
    value = float(summary.get(metric, NAN))
    if math.isnan(value) and metric in TO_TARGET and not math.isnan(summary.get("target_robust_acc", NAN)):
        return unreached_value(metric, summary)
    return value


def objective_columns(objective) -> list[tuple[str, str, str]]:
    """(results key, metric, mode) of each objective of an `ObjectiveSection`: the first is reported and
    recorded as `objective`, the others as `objective_<metric>`."""
    return [("objective" if i == 0 else f"objective_{o.metric}", o.metric, o.mode) for i, o in enumerate(objective.all)]


# Trial-level measures of reaching the reference's target: larger is better for the speed-ups, smaller
# for the costs to target.
TO_TARGET = ("speedup", "speedup_seconds", "epoch_speedup", "ticket_epochs_to_target", "ticket_passes_to_target",
             "ticket_seconds_to_target")


def unreached_value(metric: str, summary: dict[str, Any]) -> float:
    """The objective of a ticket that never reached the target, with shortfall = target minus its best
    validation robust accuracy (>= 0): a speed-up becomes -shortfall (a reached ticket's is > 0); a cost
    to target becomes the ticket round's whole cost times (1 + shortfall), plus one epoch's worth (a
    reached ticket's is at most the whole cost)."""
    shortfall = max(0.0, summary["target_robust_acc"] - summary.get("ticket_best_val_robust_acc", 0.0))
    if metric in ("speedup", "speedup_seconds", "epoch_speedup"):
        return -shortfall
    unit = metric.removeprefix("ticket_").removesuffix("_to_target")  # epochs | passes | seconds
    total, epochs = summary[f"ticket_{unit}"], max(summary["ticket_epochs"], 1.0)
    return total * (1 + shortfall) + total / epochs


# Time to target is read from the trailing mean of this many epochs of each curve: validation robust
# accuracy is measured on a few hundred images under a random-start attack, and a single epoch moves by
# a few points, so one lucky (or unlucky) epoch of either curve would otherwise decide the measure.
# A curve is judged only on means as long as the target's (`target_window`): a mean of one or two
# epochs is noisier than the 3-epoch target and would reach it by luck.
SMOOTHING_EPOCHS = 3


def target_window(reference: Sequence[EpochRecord]) -> int:
    """Epochs in the trailing mean that sets the target: SMOOTHING_EPOCHS, or the whole reference when
    it trained fewer (its target is then the mean of all its epochs)."""
    return max(1, min(SMOOTHING_EPOCHS, len(reference)))


def smoothed(records: Sequence[EpochRecord], window: int = SMOOTHING_EPOCHS) -> list[float]:
    """Validation robust accuracy as trailing means of `window` epochs (the whole curve when it is
    shorter), one for each epoch from the first with a full window on: no mean of fewer epochs."""
    values = [r.val_robust_acc for r in records]
    width = min(window, len(values))
    return [sum(values[i - width:i]) / width for i in range(width, len(values) + 1)] if values else []


def reach(records: Sequence[EpochRecord], target: float, window: int = SMOOTHING_EPOCHS) -> dict[str, float]:
    """Epochs, example-passes and training seconds until the trailing mean of `window` epochs of
    validation robust accuracy first reaches `target` (NaN if never). No epoch before the `window`-th
    can reach it: pass the target's own window (`target_window`)."""
    if len(records) >= window:
        for epoch, accuracy in enumerate(smoothed(records, window), start=window):
            if accuracy >= target - 1e-12:
                done = records[:epoch]
                return {"epochs": float(epoch), "passes": sum(r.passes for r in done),
                        "seconds": sum(r.epoch_seconds for r in done)}
    return {"epochs": NAN, "passes": NAN, "seconds": NAN}


def convergence_gap(ticket: Sequence[EpochRecord], reference: Sequence[EpochRecord], head_start: int = 0) -> float:
    """Mean over the ticket's epochs so far of its validation robust accuracy minus the reference's at the
    same epoch of training (the reference's last where it trained fewer): above 0, the ticket converges
    faster than the dense network. Known at every epoch of the ticket's round, so ASHA can judge it.
    `head_start`: epochs its weights trained before its round (a ticket rewound to epoch k of the dense
    round: k), so its epoch i meets the reference's epoch i + k."""
    if not ticket or not reference:
        return NAN
    last = len(reference) - 1
    gaps = [r.val_robust_acc - reference[min(i + head_start, last)].val_robust_acc for i, r in enumerate(ticket)]
    return sum(gaps) / len(gaps)


# A network whose final validation accuracy is at most chance (1 / classes) plus this margin has not
# learned: 5 points is more than the sampling noise of a few hundred validation images (about +/-3
# points at 200) above chance, and far below anything a trained network reaches on these tasks.
COLLAPSE_MARGIN = 0.05


def collapsed(records: Sequence[EpochRecord], chance: float, robust: bool = False) -> bool:
    """Whether a round ended at chance: its last validation clean accuracy (and with `robust`, or its
    last validation robust accuracy) at most `chance` + COLLAPSE_MARGIN. No round yet: False."""
    if not records or not chance > 0:
        return False
    last, limit = records[-1], chance + COLLAPSE_MARGIN
    return last.val_clean_acc <= limit or (robust and last.val_robust_acc <= limit)


def convergence(ticket: Sequence[EpochRecord], reference: Sequence[EpochRecord],
                finding: Sequence[EpochRecord], target: str = "final", chance: float = 0.0,
                head_start: int = 0) -> dict[str, Any]:
    """The boosting-ticket measures (Li et al. 2020): the ticket's round against the dense reference.

    target_robust_acc: the reference's validation robust accuracy at its final epoch, or its best
    (`reference.target`); reference_final_/best_val_robust_acc: both. Accuracies here are trailing
    means over SMOOTHING_EPOCHS epochs (`smoothed`), of the reference and the ticket alike. ticket_/dense_{epochs,passes,
    seconds}_to_target: cost until the ticket, and the reference, first reach it. find_passes,
    find_seconds: training cost of rounds 0..R-1 (finding the ticket). speedup: reference passes to the
    target over (find passes + ticket passes to the target), the paper's definition counted in
    example-passes, so it does not depend on the hardware or on how a GPU was shared (above 1, the
    ticket paid for its own search); speedup_seconds: the same in seconds; epoch_speedup: reference
    epochs over ticket epochs to the target, finding excluded; time_saved: 1 - 1/speedup, the share
    of the reference's training the ticket saves, finding included.

    No verdict on a network that did not learn (`chance`: 1 / classes): a reference whose final clean
    or robust accuracy is at chance (`collapsed`) sets no target, and a ticket whose final clean
    accuracy is at chance reaches none; `collapsed` and `reference_collapsed` mark them and
    `no_verdict` says why in words ("" when the measures were computed or the trial has not ended a
    round yet).

    `head_start`: epochs the ticket's weights trained before its round (prune.rewind k: the dense
    round's first k), counted in its epochs to the target, so a rewound ticket is compared with the
    reference at the same total training (their passes are in find_passes already).
    """
    out: dict[str, Any] = dict.fromkeys(CONVERGENCE_COLUMNS, NAN)
    out.update(reached_target=False, collapsed=collapsed(ticket, chance),
               reference_collapsed=collapsed(reference, chance, robust=True), no_verdict="")
    if ticket:
        out["find_passes"] = sum(r.passes for r in finding)
        out["find_seconds"] = sum(r.epoch_seconds for r in finding)
        out.update({"ticket_epochs": float(len(ticket)), "ticket_passes": sum(r.passes for r in ticket),
                    "ticket_seconds": sum(r.epoch_seconds for r in ticket),
                    "ticket_best_val_robust_acc": max(smoothed(ticket))})
    if reference:
        out["reference_final_val_robust_acc"] = smoothed(reference)[-1]
        out["reference_best_val_robust_acc"] = max(smoothed(reference))
    if not ticket or not reference:
        return out
    if out["reference_collapsed"]:
        last = reference[-1]
        out["no_verdict"] = (f"the dense reference ended at chance (val clean {last.val_clean_acc:.1%}, robust "
                             f"{last.val_robust_acc:.1%}; chance {chance:.1%}): it sets no target")
        return out
    if out["collapsed"]:
        out["no_verdict"] = (f"the ticket ended at chance (val clean {ticket[-1].val_clean_acc:.1%}; chance "
                             f"{chance:.1%}): it gets no time to target or speed-up")
        return out
    target = out[f"reference_{target}_val_robust_acc"]
    out["target_robust_acc"] = target
    window = target_window(reference)  # each curve judged on means as long as the target's
    mine, dense = reach(ticket, target, window), reach(reference, target, window)
    mine["epochs"] += head_start
    for unit in ("epochs", "passes", "seconds"):
        out[f"ticket_{unit}_to_target"], out[f"dense_{unit}_to_target"] = mine[unit], dense[unit]
    if not math.isnan(mine["epochs"]):
        out["reached_target"] = True
        out["speedup"] = dense["passes"] / (out["find_passes"] + mine["passes"])
        out["speedup_seconds"] = dense["seconds"] / (out["find_seconds"] + mine["seconds"])
        out["epoch_speedup"] = dense["epochs"] / mine["epochs"]
        out["time_saved"] = 1 - 1 / out["speedup"]
    return out


def best_dense(ticket: Sequence[EpochRecord], curves: dict[float, Sequence[EpochRecord]],
                finding: Sequence[EpochRecord], target: str = "final", chance: float = 0.0,
                head_start: int = 0) -> dict[str, Any]:
    """The ticket against the best-tuned dense network (`reference.best_of`): dense networks trained at
    each learning rate in `curves` (lr -> their records); the target is the best of their final (or
    best, `target`) smoothed validation robust accuracies, and the dense cost to reach it the fewest
    passes any of them needs (`best_dense_lr`: that one's lr). speedup_best_dense: those passes over
    the ticket's with finding; epoch_speedup_best_dense: its epochs over the ticket's (with its head
    start). Dense networks that ended at chance take no part; NaN where nothing is left to compare."""
    out: dict[str, Any] = dict.fromkeys(BEST_DENSE_COLUMNS, NAN)
    live = {lr: c for lr, c in curves.items() if c and not collapsed(c, chance, robust=True)}
    if not ticket or not live or collapsed(ticket, chance):
        return out
    levels = {lr: smoothed(c)[-1] if target == "final" else max(smoothed(c)) for lr, c in live.items()}
    source = max(levels, key=levels.get)  # the dense network that sets the target, and its window
    level, window = levels[source], target_window(live[source])
    reached = {lr: r for lr, r in ((lr, reach(c, level, window)) for lr, c in live.items())
               if not math.isnan(r["passes"])}
    lr, dense = min(reached.items(), key=lambda item: (item[1]["passes"], item[0]))
    out.update(best_dense_target_robust_acc=level, best_dense_lr=lr, best_dense_epochs_to_target=dense["epochs"],
               best_dense_passes_to_target=dense["passes"])
    mine = reach(ticket, level, window)
    if not math.isnan(mine["epochs"]):
        out["speedup_best_dense"] = dense["passes"] / (sum(r.passes for r in finding) + mine["passes"])
        out["epoch_speedup_best_dense"] = dense["epochs"] / (mine["epochs"] + head_start)
    return out


BEST_DENSE_COLUMNS = ("best_dense_target_robust_acc", "best_dense_lr", "best_dense_epochs_to_target",
                      "best_dense_passes_to_target", "speedup_best_dense", "epoch_speedup_best_dense")
# The ticket against dense at its own learning rate and schedule (`reference.matched`): the effect of the
# mask alone (`records.convergence` against that network).
MATCHED_COLUMNS = ("speedup_matched", "epoch_speedup_matched")


CONVERGENCE_COLUMNS = (
    "target_robust_acc", "reference_final_val_robust_acc", "reference_best_val_robust_acc",
    "ticket_epochs", "ticket_passes", "ticket_seconds", "ticket_best_val_robust_acc",
    *(f"{who}_{unit}_to_target" for who in ("ticket", "dense") for unit in ("epochs", "passes", "seconds")),
    "find_passes", "find_seconds", "speedup", "speedup_seconds", "epoch_speedup", "time_saved",
    "speedup_amortized")


def path_summary(records: Sequence[EpochRecord]) -> dict[str, Any]:
    """What a trial's records say so far, running or finished: the one place these columns are computed.

    The path is every record but those of the dense networks it is compared with; its last record is the trial's
    current ticket. `trained_*` counts what this trial trained itself, `reused_*` what it took from
    levels other trials trained.
    """
    main = [r for r in records if r.role not in COMPARISON_ROLES]
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
                "best_test_clean_acc", "best_test_robust_acc", "best_test_examples", "best_test_autoattack_acc",
                # certify: the share of test_certified_examples (the first of the tested) proven robust
                "test_certified_acc", "test_certified_examples", "best_test_certified_acc",
                "best_test_certified_examples")
# Every trial-level column any trainer fills, at its value before a trial ends: present (NaN) from a
# trial's first row on, so trials.parquet keeps one schema whatever state the trials are in.
SUMMARY_DEFAULTS: dict[str, Any] = {
    **{k: (0.0 if k.endswith(("epochs", "seconds", "passes")) else v)
       for k, v in path_summary([]).items()},
    **dict.fromkeys(CONVERGENCE_COLUMNS, NAN), "reached_target": False, "find_level": "",
    "reference_level": "",  # the level of the dense reference (results/curves.py reads its curve by it)
    "collapsed": False, "reference_collapsed": False, "no_verdict": "",
    **dict.fromkeys(BEST_DENSE_COLUMNS + MATCHED_COLUMNS, NAN),
    **dict.fromkeys(TEST_COLUMNS, NAN),
    **dict.fromkeys([f"reference_{c}" for c in TEST_COLUMNS], NAN),
    "certify_method": "", "certify_eps": NAN,
}


def certify_columns(config) -> dict[str, Any]:
    """How the test_*certified_* columns were certified: method and eps of `config.certify` ("" and NaN
    when it is off). `config` is a `TrialConfig` (not imported: spec imports this module's objectives)."""
    certify = config.certify
    return {"certify_method": "", "certify_eps": NAN} if certify is None else {
        "certify_method": certify.method, "certify_eps": float(certify.eps)}
