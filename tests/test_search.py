"""`ticketsearch run` on an embedded Ray with 2 CPUs: ASHA, seeds, resume, restarts, bad input."""

import json
import os
import signal
import socket

import pandas as pd
import torch

from ticketsearch.cli import main
from ticketsearch.search.driver import run_search
from ticketsearch.search.results_callback import ResultsCallback
from ticketsearch.search.space import make_searcher, param_space
from ticketsearch.spec import load_spec
from ticketsearch.trainers import create_trainer

from search_helpers import (assert_each_epoch_once, corrupt_mnist, epochs_recorded, search_spec, start_search,
                            trial_worker_pids, wait_for)

TIMING = {"epoch_seconds", "eval_seconds", "examples_per_second"}


def same_records(frame: pd.DataFrame, records) -> bool:
    skip = TIMING | {"reused"}  # who trained a level does not change its records
    left = [{k: v for k, v in row.items() if k not in skip | {"trial_id", "node", "node_id"}} for row in frame.to_dict("records")]
    right = [{k: v for k, v in r.as_dict().items() if k not in skip} for r in records]
    clean = lambda rows: [{k: None if v != v else v for k, v in row.items()} for row in rows]
    differences = [(i, {k: (a.get(k), b.get(k)) for k in b if a.get(k) != b.get(k)})
                   for i, (a, b) in enumerate(zip(clean(left), clean(right))) if a != b]
    assert len(left) == len(right) and not differences, differences
    return True


def reference_records(spec_path, trial_row):
    """The same trial run uninterrupted in this process, with the trial's one thread."""
    spec = load_spec(spec_path)
    values = {p: trial_row[f"config.{p}"] for p in spec.space}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = create_trainer(spec.trial(values))
        list(trainer)
    finally:
        torch.set_num_threads(threads)
    return trainer.records


def test_asha_search_completes_with_early_stopping_and_matching_records(finished_search):
    spec_path, out = finished_search
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 4
    assert set(trials["status"]) <= {"completed", "early-stopped"}
    assert (trials["status"] == "early-stopped").any(), "ASHA stopped no trial"
    epochs = assert_each_epoch_once(out)
    completed = trials[trials["status"] == "completed"]
    assert (completed["epochs_trained"] == 4).all()  # dense 2 + ticket 2
    assert (trials[trials["status"] == "early-stopped"]["epochs_trained"] < 4).all()
    # stopped trials keep their records and last metrics
    for row in trials.to_dict("records"):
        last = epochs[epochs["trial_id"] == row["trial_id"]].iloc[-1]
        assert row["final_val_robust_acc"] == last["val_robust_acc"] and row["objective"] == last["robust_auc"]
    best = trials.sort_values("objective").iloc[-1]
    assert same_records(epochs[epochs["trial_id"] == best["trial_id"]], reference_records(spec_path, best))
    assert len(list((out / "tensorboard").iterdir())) == 4
    saved = json.loads((out / "search.json").read_text())
    assert saved["spec_hash"] == load_spec(spec_path).content_hash() and saved["ended"] is not None
    # Every trial trains its own dense round here (the learning rate is searched): one per trial, and a ticket.
    totals = saved["totals"]
    assert totals["levels"]["dense"] == 4 and totals["trained_epochs"] == trials["trained_epochs"].sum() > 0


def test_search_seed_makes_sampled_configs_reproducible(tmp_path):
    def sampled(seed):
        spec = load_spec(search_spec(tmp_path, **{"search.seed": seed}))
        searcher = make_searcher(spec)
        searcher.set_search_properties("objective", "max", param_space(spec))
        return [searcher.suggest(f"trial{i}") for i in range(6)]

    assert sampled(0) == sampled(0)
    assert sampled(0) != sampled(1)


def test_driver_killed_mid_search_resumes_with_every_epoch_once(tmp_path):
    # Epochs of a fraction of a second and 2 checkpoints kept: with Tune deleting checkpoints itself,
    # the kill often left its last snapshot naming a deleted one (CheckpointRetention's reason).
    spec_path = search_spec(tmp_path, **{"search.num_samples": 5})
    out = tmp_path / "out"
    process = start_search(spec_path, out)
    try:
        # Killed as a third trial reports its first epoch: usually after Tune's last save of its
        # experiment state (every 10 s at most), so the resume meets a trial Tune has lost as well.
        wait_for(lambda: trials_recorded(out) >= 3, 180, "a third trial")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # power loss: driver and its embedded Ray
        process.wait()
    before = pd.read_parquet(out / "epochs")
    def records(path):  # NaN-safe, comparable
        return json.dumps(torch.load(path, weights_only=True)["records"], sort_keys=True)

    levels = {path: records(path) for path in (out / "levels").glob("*/result.pt")}
    assert main(["run", str(spec_path), "--out", str(out), "--resume", "--num-cpus", "2"]) == 0
    # Levels finished before the kill are used as they are, never trained again (a test evaluation a
    # trial had not finished may be added to one).
    assert levels and all(records(path) == before_kill for path, before_kill in levels.items())
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 5 and set(trials["status"]) <= {"completed", "early-stopped"}, trials.get("error")
    epochs = assert_each_epoch_once(out)
    # What was recorded before the kill is still there, unchanged or re-reported identically, except the
    # records of trials Tune lost: those are set aside (their configs ran again under new ids).
    lost = {path.stem for path in (out / "superseded" / "epochs").glob("*.parquet")}
    assert set(before["trial_id"]) - set(epochs["trial_id"]) == lost and not lost & set(trials["trial_id"])
    kept = before[~before["trial_id"].isin(lost)]
    merged = kept.merge(epochs, on=["trial_id", "global_epoch"], suffixes=("_before", ""))
    assert len(merged) == len(kept)
    assert (merged["sparsity_before"] == merged["sparsity"]).all()
    # a different spec may not resume this search
    other = search_spec(tmp_path, "other.yaml", **{"train.epochs": 3})
    assert main(["run", str(other), "--out", str(out), "--resume"]) == 2


def trials_recorded(out) -> int:
    return len(list((out / "epochs").glob("*.parquet"))) if (out / "epochs").is_dir() else 0


def test_results_of_trials_tune_lost_are_set_aside(tmp_path):
    spec = load_spec(search_spec(tmp_path))
    callback = ResultsCallback(tmp_path / "out", spec)
    for trial_id in ("kept", "lost"):
        (tmp_path / "out" / "epochs").mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"global_epoch": [1]}).to_parquet(tmp_path / "out" / "epochs" / f"{trial_id}.parquet")
        (tmp_path / "out" / "tensorboard" / trial_id).mkdir(parents=True)
        callback.trials[trial_id] = {"trial_id": trial_id, "status": "running", "ticket_dir": ""}
    callback.trials.pop("lost")  # killed after writing its epochs, before its row
    callback.epochs["lost"] = {}
    callback.on_experiment_end(trials=[type("Trial", (), {"trial_id": "kept"})()])
    assert list(pd.read_parquet(tmp_path / "out" / "trials.parquet")["trial_id"]) == ["kept"]
    assert [p.name for p in (tmp_path / "out" / "epochs").iterdir()] == ["kept.parquet"]
    assert (tmp_path / "out" / "superseded" / "epochs" / "lost.parquet").is_file()
    assert (tmp_path / "out" / "superseded" / "tensorboard" / "lost").is_dir()
    assert not (tmp_path / "out" / "tensorboard" / "lost").exists()


def test_trial_killed_mid_epoch_continues_from_its_checkpoint(tmp_path):
    spec_path = search_spec(tmp_path, **{
        "search": {"algorithm": "random", "num_samples": 1, "max_concurrent": 1, "scheduler": "fifo", "seed": 0},
        "prune.rounds": 2, "model.width": 0.5, "train.eval_examples": 200})
    out = tmp_path / "out"
    process = start_search(spec_path, out)
    try:
        wait_for(lambda: epochs_recorded(out) >= 2, 180, "two epochs")
        (pid,) = trial_worker_pids(process.pid)
        os.kill(pid, signal.SIGKILL)  # the trial's worker dies mid-epoch
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    # Results after the kill came from another process. (Whether the killed worker's own lines are in
    # result.json depends on Tune having synced the file before the kill: on a restart Tune replaces
    # the file with the synced copy.)
    (result_json,) = (out / "ray" / "tune").glob("*/result.json")
    pids = {json.loads(line)["pid"] for line in result_json.read_text().splitlines()}
    assert pids - {pid}, "the trial did not restart in a new worker"
    trials = pd.read_parquet(out / "trials.parquet")
    assert list(trials["status"]) == ["completed"]
    epochs = assert_each_epoch_once(out)
    assert len(epochs) == 6
    assert same_records(epochs, reference_records(spec_path, trials.iloc[0]))


def test_errors_and_divergence_are_recorded_and_the_search_goes_on(tmp_path):
    spec_path = search_spec(tmp_path, **{
        "search": {"algorithm": "grid", "num_samples": 1, "max_concurrent": 2, "scheduler": "fifo",
                   "seed": 0, "max_failures": 0},
        "model.width": 0.25, "train.lr": {"grid": [0.05, 1e12]}, "prune.ratio": 0.5, "prune.rounds": 0,
        "attack.train": "natural", "train.epochs": 2,
        # images cut short (the checks before the search read only labels): the trial fails loading them
        "data.dataset": {"grid": ["digits", "mnist"]}, "data.root": str(corrupt_mnist(tmp_path / "data", 400))})
    out = tmp_path / "out"
    run_search(load_spec(spec_path), out=out, num_cpus=2, verbose=0)
    trials = pd.read_parquet(out / "trials.parquet").set_index(["config.data.dataset", "config.train.lr"])
    assert trials.loc[("digits", 0.05), "status"] == "completed"
    assert trials.loc[("digits", 1e12), "status"] == "diverged"
    for lr in (0.05, 1e12):
        assert trials.loc[("mnist", lr), "status"] == "error"
        assert "could not read the train split of mnist" in trials.loc[("mnist", lr), "error"]


def test_bad_search_input(tmp_path, capsys):
    spec_path = search_spec(tmp_path)
    with socket.socket() as probe:  # a port with nothing behind it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["run", str(spec_path), "--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "a")]) == 2
    assert "no Ray cluster answers at 127.0.0.1:" in capsys.readouterr().err
    assert main(["run", str(spec_path), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "holds no search" in capsys.readouterr().err
    bounds = search_spec(tmp_path, "bounds.yaml", **{"train.lr": {"loguniform": [0.2, 0.01]}})
    assert main(["run", str(bounds), "--out", str(tmp_path / "b")]) == 2
    assert "train.lr: loguniform bounds must satisfy low < high" in capsys.readouterr().err
    missing = search_spec(tmp_path, "missing.yaml", **{"train.momentumm": {"uniform": [0.8, 0.9]}})
    assert main(["run", str(missing), "--out", str(tmp_path / "c")]) == 2
    assert "train.momentumm: unknown key" in capsys.readouterr().err
    huge = search_spec(tmp_path, "huge.yaml", **{"resources": {"cpu": 64, "gpu": 2}})
    assert main(["run", str(huge), "--out", str(tmp_path / "d"), "--num-cpus", "2"]) == 2
    err = capsys.readouterr().err
    assert "asks for 64 CPU and 2 GPU" in err and "largest: 2 CPU, 0 GPU" in err and err.count("\n") == 1
