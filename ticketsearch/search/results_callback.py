"""Driver-side results: every reported epoch into Parquet and TensorBoard as the search runs.

Runs in the driver process (a `tune.Callback`), so results need no shared storage. Later reports of
the same (trial, global epoch), after a trial restarts from a checkpoint or the search resumes,
replace earlier ones, so each epoch is written exactly once. The callback's memory is rebuilt from the
Parquet files on disk when a search resumes (Tune does not checkpoint callback state).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from ticketsearch.core.checkpoint import load_state
from ticketsearch import layout
from ticketsearch.results.parquet import write_trial_epochs
from ticketsearch.results.trials_table import follow, new_row, write_trials
from ticketsearch.search.confirm import stage_of, trial_config
from ticketsearch.search.trainable import STATE_FILE
from ticketsearch.results.tickets import write_ticket
from ticketsearch.results.tensorboard import TrialWriter
from ticketsearch.spec import Spec, TrialConfig
from ticketsearch.records import RECORD_FIELDS, EpochRecord, objective_columns
from ticketsearch.trainers import summary_defaults

# trials.parquet is rewritten whole; while trials run, at most this often (s). A trial's end, an error and
# the search's end write it at once, and a resumed search rebuilds running rows from the epochs.
TRIALS_WRITE_INTERVAL_S = 1.0


class ResultsCallback(tune.Callback):
    def __init__(self, out: str | Path, spec: Spec, stage: str = "search"):
        self.out = Path(out)
        self.spec = spec
        self.stage = stage  # the experiment's stage (search/confirm.py): only its own trials can be lost
        # trial -> global epoch -> (record, node IP, Ray node id)
        self.epochs: dict[str, dict[int, tuple[EpochRecord, str, str]]] = {}
        self.trials: dict[str, dict[str, Any]] = {}
        self.configs: dict[str, TrialConfig] = {}  # trial -> its config, resolved once
        self.writers: dict[str, TrialWriter] = {}
        self._trials_written_at = -math.inf  # time.monotonic() of the last write of trials.parquet
        self._load_existing()

    def _load_existing(self) -> None:
        if layout.epochs_dir(self.out).is_dir():
            for path in sorted(layout.epochs_dir(self.out).glob("*.parquet")):
                frame = pd.read_parquet(path)
                self.epochs[path.stem] = {int(row["global_epoch"]): (EpochRecord.from_dict(row), row["node"],
                                                                     row.get("node_id", ""))
                                          for row in frame.to_dict("records")}
        if layout.trials_table(self.out).is_file():
            for row in pd.read_parquet(layout.trials_table(self.out)).to_dict("records"):
                self.trials[row["trial_id"]] = row

    # ---------------------------------------------------------------- Tune hooks (driver, main thread)
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "global_epoch" not in result:
            return
        record = EpochRecord.from_dict({f: result[f] for f in RECORD_FIELDS})
        self.epochs.setdefault(trial.trial_id, {})[record.global_epoch] = (
            record, str(result.get("node_ip", "")), str(result.get("node_id", "")))
        write_trial_epochs(self.out, trial.trial_id, self._records(trial.trial_id, with_nodes=True))
        self._writer(trial.trial_id).add_record(record)
        row = self._row(trial, result)
        row["status"] = "running" if result.get("status") == "running" else result["status"]
        if time.monotonic() - self._trials_written_at >= TRIALS_WRITE_INTERVAL_S:
            self._save_trials()

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        row = self._row(trial, result)
        status = result.get("status", "running")
        row["status"] = "early-stopped" if status == "running" else status
        writer = self.writers.get(trial.trial_id) or self._writer(trial.trial_id)
        writer.add_hparams({p: trial.config[p] for p in self.spec.space if p in trial.config}, _final_metrics(row))
        self._close(trial.trial_id)
        self._keep_ticket(trial, row)
        self._save_trials()

    def on_trial_error(self, iteration, trials, trial, **info):
        row = self._row(trial, trial.last_result or {})
        row["status"] = "error"
        row["error"] = _error_message(trial)
        self._close(trial.trial_id)
        self._save_trials()

    def on_experiment_end(self, trials, **info):
        for trial_id in list(self.writers):
            self._close(trial_id)
        self._set_aside_lost({trial.trial_id for trial in trials})
        self._save_trials()

    def _set_aside_lost(self, known: set[str]) -> None:
        """Move out of the results the trials Tune no longer knows after a resume.

        Tune saves its experiment state at most every 10 s, so a driver killed between two saves loses
        the trials it started since the last one; the resumed search samples their configs again under
        new trial ids. Their records would otherwise stay beside the re-runs, as trials "running" for
        ever or as a config counted twice. They move to `superseded/` (epochs, dense epochs and TensorBoard runs), not
        deleted; a kept ticket of theirs is dropped.
        """
        # A driver killed between writing a trial's epochs and its row leaves epochs with no row. The
        # trials of the other stage (the search's, seen from its confirmation) are not this experiment's.
        mine = {t for t, row in self.trials.items() if row.get("stage", "search") == self.stage}
        for trial_id in sorted((mine | (set(self.epochs) - set(self.trials))) - known):
            row = self.trials.pop(trial_id, {})
            self.epochs.pop(trial_id, None)
            for source, target in zip(layout.trial_records(self.out, trial_id),
                                      layout.trial_records(layout.superseded(self.out), trial_id)):
                if source.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source.rename(target)
            if row.get("ticket_dir"):
                shutil.rmtree(row["ticket_dir"], ignore_errors=True)

    # ---------------------------------------------------------------- tickets
    def _keep_ticket(self, trial, row: dict[str, Any]) -> None:
        """Write this trial's ticket if it ranks among the best `search.keep_tickets`; drop the rest."""
        keep, mode = self.spec.default_trial.search.keep_tickets, self.spec.default_trial.objective.mode
        checkpoint = getattr(trial, "checkpoint", None)
        if keep == 0 or checkpoint is None or math.isnan(row.get("objective", math.nan)):
            return
        sign = -1 if mode == "max" else 1
        holders = [r for r in self.trials.values() if r.get("ticket_dir")]
        ranked = sorted(holders + [row], key=lambda r: sign * r["objective"])
        if not any(r is row for r in ranked[:keep]):
            return
        with checkpoint.as_directory() as directory:
            state = load_state(Path(directory) / STATE_FILE)
        if not state.get("ticket"):
            return  # stopped before its ticket finished
        row["ticket_dir"] = str(write_ticket(layout.ticket_dir(self.out, trial.trial_id), state,
                                             self._config(trial), row))
        for dropped in ranked[keep:]:
            if dropped.get("ticket_dir"):
                shutil.rmtree(dropped["ticket_dir"], ignore_errors=True)
                dropped["ticket_dir"] = ""

    # ---------------------------------------------------------------- rows
    def _config(self, trial) -> TrialConfig:
        if trial.trial_id not in self.configs:
            self.configs[trial.trial_id] = trial_config(self.spec, trial.config)
        return self.configs[trial.trial_id]

    def _row(self, trial, result: dict[str, Any]) -> dict[str, Any]:
        config = self._config(trial)
        if trial.trial_id not in self.trials:
            self.trials[trial.trial_id] = new_row(trial.trial_id, config, summary_defaults(config),
                                                  *stage_of(trial.config))
        summary = {k.removeprefix("summary/"): v for k, v in result.items()
                   if k.startswith("summary/") and k != "summary/status"}
        row = follow(self.trials[trial.trial_id], self._records(trial.trial_id), summary or None)
        row.update({"node": result.get("node_ip", row["node"]), "node_id": result.get("node_id", row["node_id"])})
        row.update({key: result.get(key, row[key]) for key, _, _ in objective_columns(config.objective)})
        return row

    def _records(self, trial_id: str, with_nodes: bool = False) -> list:
        by_epoch = self.epochs.get(trial_id, {})
        pairs = [by_epoch[e] for e in sorted(by_epoch)]
        return pairs if with_nodes else [record for record, *_ in pairs]

    def _save_trials(self) -> None:
        if self.trials:
            write_trials(layout.trials_table(self.out), self.trials.values())
            self._trials_written_at = time.monotonic()

    def _writer(self, trial_id: str) -> TrialWriter:
        if trial_id not in self.writers:
            self.writers[trial_id] = TrialWriter(self.out, trial_id)
        return self.writers[trial_id]

    def _close(self, trial_id: str) -> None:
        writer = self.writers.pop(trial_id, None)
        if writer is not None:
            writer.close()

    def __getstate__(self):
        # Tune pickles callbacks with the experiment; writers are rebuilt, records reloaded from disk.
        return {"out": self.out, "spec": self.spec}

    def __setstate__(self, state):
        self.__init__(state["out"], state["spec"])


def _final_metrics(row: dict[str, Any]) -> dict[str, float]:
    """What the HParams dashboard shows against the sampled values (NaN dropped: it cannot plot them)."""
    names = ("objective", "final_val_robust_acc", "final_val_clean_acc", "final_sparsity", "robust_auc",
             "test_robust_acc", "test_clean_acc", "speedup", "epochs_trained", "double_win_margin", "double_win")
    return {f"final/{n}": float(row[n]) for n in names if isinstance(row.get(n), (int, float)) and not math.isnan(row[n])}


def _error_message(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "trial failed"
