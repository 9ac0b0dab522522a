"""TensorBoard scalars for one trial, against the global epoch (the time axis of every round)."""

from __future__ import annotations

import math
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from ticketsearch import layout
from ticketsearch.records import COMPARISON_ROLES, EpochRecord

# Scalar tag -> EpochRecord field. Accuracies are fractions in [0, 1]; seconds are wall time.
SCALARS = {
    "val/robust_acc": "val_robust_acc",
    "val/clean_acc": "val_clean_acc",
    "val/robust_auc": "robust_auc",
    "train/loss": "train_loss",
    "train/acc": "train_acc",
    "sparsity": "sparsity",
    "lr": "lr",
    "round": "round",
    "time/epoch_seconds": "epoch_seconds",
    "time/examples_per_second": "examples_per_second",
    "guard/robust_acc": "guard_robust_acc",
}


class TrialWriter:
    """One TensorBoard run per trial: `<out>/tensorboard/<trial_id>/`."""

    def __init__(self, out: str | Path, trial_id: str):
        self.writer = SummaryWriter(log_dir=str(layout.tensorboard_run(out, trial_id)))

    def add_record(self, record: EpochRecord) -> None:
        """The trial's own path under the plain tags; a dense network it is compared with under its role
        (`reference/val/robust_acc`, `matched/...`, `best_of/...`), beside the trial's own curves."""
        prefix = f"{record.role}/" if record.role in COMPARISON_ROLES else ""
        for tag, field in SCALARS.items():
            value = float(getattr(record, field))
            if not math.isnan(value):
                self.writer.add_scalar(prefix + tag, value, global_step=record.global_epoch)
        self.writer.flush()  # visible in TensorBoard while the trial runs

    def add_hparams(self, values: dict, metrics: dict[str, float]) -> None:
        """The HParams dashboard row of this trial: once, when it ends (each call makes a sub-run)."""
        shown = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}
        self.writer.add_hparams(shown, metrics, run_name="hparams")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
