"""Reading a search back: leaderboard, ticket files, TensorBoard, partial and corrupt directories."""

import json
import shutil

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ticketsearch.cli import main
from ticketsearch.core.attacks import build_attack
from ticketsearch.core.data import prepare_data
from ticketsearch.core.loops import evaluate
from ticketsearch.results.store import load
from ticketsearch.results.tickets import load_ticket
from ticketsearch.spec import AttackConfig


def test_leaderboard_formats(finished_search, capsys):
    _, out = finished_search
    assert main(["results", str(out), "--format", "json", "--top", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(rows) == 2 and rows[0]["objective"] == pytest.approx(trials["objective"].max())
    assert {"train.lr", "prune.ratio", "model.width", "final_val_robust_acc"} <= set(rows[0])
    assert main(["results", str(out), "--format", "csv", "--sort", "final_sparsity", "--top", "0"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 1 + len(trials)
    assert main(["results", str(out), "--sort", "no_such_column"]) == 2
    assert "--sort: no column 'no_such_column'" in capsys.readouterr().err


def test_results_on_a_directory_without_a_search(tmp_path, capsys):
    assert main(["results", str(tmp_path)]) == 2
    assert "holds no ticketsearch results" in capsys.readouterr().err


def test_partial_and_corrupt_directories_give_a_readable_partial_answer(finished_search, tmp_path, capsys):
    _, out = finished_search
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("ray", "tensorboard", "tickets"))
    broken = sorted((copy / "epochs").glob("*.parquet"))[0]
    broken.write_bytes(broken.read_bytes()[:40])  # a copy cut short
    search = json.loads((copy / "search.json").read_text())
    search["ended"] = None
    (copy / "search.json").write_text(json.dumps(search))
    assert main(["results", str(copy)]) == 0
    captured = capsys.readouterr()
    assert f"{broken}: unreadable" in captured.err and "partial results" in captured.err
    assert len(captured.out.splitlines()) == 1 + 4
    with pytest.warns(UserWarning, match="unreadable"):
        results = load(copy)
    assert results.epochs["trial_id"].nunique() == 3 and not results.finished


def test_ticket_files_load_weights_only_and_reproduce_the_reported_accuracy(finished_search):
    _, out = finished_search
    trials = pd.read_parquet(out / "trials.parquet")
    with_tickets = trials[trials["ticket_dir"] != ""]
    assert 1 <= len(with_tickets) <= 3  # search.keep_tickets, completed trials only
    row = with_tickets.iloc[0]
    for name in ("mask.pt", "rewind.pt", "trained.pt"):
        torch.load(f"{row['ticket_dir']}/{name}", weights_only=True)
    model, mask, manifest = load_ticket(row["ticket_dir"])
    assert mask.sparsity() == pytest.approx(row["final_sparsity"]) == pytest.approx(manifest["sparsity"])
    config = manifest["config"]
    data = prepare_data("digits", "~/data", val_split=config["data"]["val_split"], fraction=1.0)
    n = config["train"]["eval_examples"]
    x, y = data.val_x[:n], data.val_y[:n]
    clean = evaluate(model, x, y, build_attack(model, AttackConfig(kind="natural"), 10, "a"), batch_size=500)
    assert clean.clean == pytest.approx(row["final_val_clean_acc"])
    robust = evaluate(model, x, y, build_attack(model, AttackConfig(**config["attack"]["eval"]), 10, "a"), batch_size=500)
    assert robust.robust == pytest.approx(row["final_val_robust_acc"], abs=0.05)  # PGD's random start


def test_tensorboard_matches_parquet_with_one_hparams_run_per_trial(finished_search):
    _, out = finished_search
    epochs = pd.read_parquet(out / "epochs")
    for trial_id, group in epochs.groupby("trial_id"):
        run = out / "tensorboard" / trial_id
        events = EventAccumulator(str(run))
        events.Reload()
        scalars = events.Scalars("val/robust_acc")
        assert [e.step for e in scalars] == list(group["global_epoch"])
        assert [e.value for e in scalars] == pytest.approx(list(group["val_robust_acc"]), abs=1e-6)
        assert [p.name for p in run.iterdir() if p.is_dir()] == ["hparams"]


def test_leaderboard_ranks_finished_trials_before_those_stopped_early(tmp_path):
    # convergence_gap, a mean lead over the epochs so far, is largest early on: a ticket ASHA stopped at
    # epoch 3 shows a larger value than any finished ticket without being better.
    from ticketsearch.results.leaderboard import leaderboard
    from ticketsearch.results.store import SearchResults

    trials = pd.DataFrame([
        {"trial_id": "stopped", "status": "early-stopped", "objective": 0.127, "final_sparsity": 0.6},
        {"trial_id": "second", "status": "completed", "objective": 0.050, "final_sparsity": 0.8},
        {"trial_id": "best", "status": "completed", "objective": 0.089, "final_sparsity": 0.4},
    ])
    results = SearchResults(out=tmp_path, epochs=pd.DataFrame(), trials=trials,
                            search={"space": {}, "spec": {"objective": {"metric": "convergence_gap", "mode": "max"}}})
    assert list(leaderboard(results)["trial_id"]) == ["best", "second", "stopped"]
    assert list(leaderboard(results, sort="final_sparsity")["trial_id"]) == ["second", "stopped", "best"]
