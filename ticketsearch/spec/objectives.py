"""The objective metrics a search can rank trials by.

A metric the trainer never computes would be recorded as NaN for every trial, so `validate`, `train`
and `run` all refuse it before a trial starts (`check_objective`). The metrics known only when a trial
ends are each trainer's own, declared where it is registered (`TrainerKind.objectives`).
"""

from __future__ import annotations

from ticketsearch.errors import UserError
from ticketsearch.registry import Registry

# Known after every epoch, from the epoch records (ASHA can act on them).
PER_EPOCH_OBJECTIVES = ("convergence_gap", "robust_auc", "val_robust_acc", "val_clean_acc", "train_loss", "train_acc",
                        "val_certified_acc")


def check_objective(config, trainers: Registry) -> None:
    """Refuse an objective.metric the trial's trainer does not compute, or a trial-end metric under ASHA.

    `config` is a `TrialConfig` and `trainers` the trainer registry, each kind with the `objectives`
    known when its trial ends (neither imported: trainers/ imports this module).
    """
    trainer = config.trainer.name
    known = PER_EPOCH_OBJECTIVES + trainers.get(trainer, field="trainer.name").objectives
    metrics = [objective.metric for objective in config.objective.all]
    for index, metric in enumerate(metrics):
        if metric not in known:
            elsewhere = [name for name in trainers.names() if metric in trainers.get(name).objectives]
            what = f"{metric!r} is computed by trainer {elsewhere[0]} only" if elsewhere else f"unknown metric {metric!r}"
            field = "objective.metric" if index == 0 else f"objective[{index}].metric"
            raise UserError(f"{field}: {what}; trainer {trainer} knows: {', '.join(known)}")
    reference = getattr(config, "reference", None)
    for metric in metrics:  # a comparison the spec does not ask for is never computed: NaN for every trial
        needs = "matched" if metric.endswith("_matched") else "best_of" if metric.endswith("_best_dense") else None
        if needs and reference is not None and not getattr(reference, needs):
            raise UserError(f"objective.metric: {metric} compares with a dense network reference.{needs} asks for; "
                            f"set reference.{needs}, or choose speedup or epoch_speedup")
    certify = getattr(config, "certify", None)
    if "val_certified_acc" in metrics and (certify is None or not certify.every_epoch):
        raise UserError("objective.metric: val_certified_acc is computed with certify: {eps: ..., every_epoch: true} "
                        "only")
    if len(set(metrics)) != len(metrics):
        raise UserError(f"objective: each metric once; got {metrics}")
    if len(metrics) > 1 and config.search.algorithm != "optuna":
        raise UserError("objective: several objectives need search.algorithm: optuna (multi-objective TPE)")
    metric = metrics[0]
    if metric not in PER_EPOCH_OBJECTIVES and config.search.scheduler.kind == "asha":
        raise UserError(f"objective.metric: {metric} is known only when a trial ends; ASHA needs a per-epoch "
                        f"metric ({', '.join(PER_EPOCH_OBJECTIVES)}) or use search.scheduler: fifo")
