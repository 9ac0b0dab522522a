"""The two commands end to end, and every bad input giving one line and exit code 2."""

import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ticketsearch.cli import main

from tiny import tiny_tree


def spec_file(tmp_path, **values):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(**values)))
    return path


def test_validate_prints_the_resolved_trial(tmp_path, capsys):
    path = spec_file(tmp_path, **{"train.lr": {"loguniform": [0.01, 0.1], "default": 0.05}})
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "train.lr: loguniform [0.01, 0.1] (default 0.05)" in out and "lr: 0.05" in out


def test_train_writes_parquet_and_tensorboard_that_match_the_records(tmp_path, capsys):
    path = spec_file(tmp_path, **{"train.lr": {"choice": [0.5, 0.05]}})
    out = tmp_path / "run"
    assert main(["train", str(path), "--set", "train.lr=0.05", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "round 1 ticket" in printed and "status completed" in printed
    epochs = pd.read_parquet(out / "epochs")
    assert list(epochs["global_epoch"]) == [1, 2, 3, 4] and set(epochs["phase"]) == {"dense", "ticket"}
    assert (epochs["lr"] <= 0.05).all()
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials.loc[0, "status"] == "completed" and trials.loc[0, "config.train.lr"] == 0.05
    assert trials.loc[0, "final_val_robust_acc"] == epochs["val_robust_acc"].iloc[-1]
    (run,) = (out / "tensorboard").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    robust = events.Scalars("val/robust_acc")
    assert [e.step for e in robust] == [1, 2, 3, 4]
    assert [e.value for e in robust] == pytest.approx(list(epochs["val_robust_acc"]), abs=1e-6)
    # a second train into the same --out refuses; --resume on a finished trial changes nothing
    assert main(["train", str(path), "--set", "train.lr=0.05", "--out", str(out)]) == 2
    assert main(["train", str(path), "--set", "train.lr=0.05", "--out", str(out), "--resume"]) == 0
    assert pd.read_parquet(out / "epochs").equals(epochs)


def test_run_and_train_write_trials_parquet_with_the_same_columns(finished_search, tmp_path):
    spec_path, search_out = finished_search
    out = tmp_path / "run"
    assert main(["train", str(spec_path), "--out", str(out), "--device", "cpu"]) == 0
    trained = pd.read_parquet(out / "trials.parquet")
    searched = pd.read_parquet(search_out / "trials.parquet")
    assert list(trained.columns) == list(searched.columns)
    assert (trained["trained_epochs"] + trained["reused_epochs"] == trained["epochs_trained"]).all()


BAD_SPECS = [
    ({"model.arch": "resnet9000"}, "model.arch: unknown model 'resnet9000'; known: "),
    ({"data.dataset": "imagenet"}, "data.dataset: unknown dataset 'imagenet'; known: "),
    ({"attack.train": {"cw": {"eps": 0.1}}}, "attack.train.kind: unknown attack 'cw'"),
    ({"train.lrr": 0.1}, "train.lrr: unknown key"),
    ({"prune.ratio": 1.0}, "prune.ratio"),
    ({"attack.eval": {"pgd": {"eps": -0.1}}}, "attack.eval.eps"),
    ({"model.width": 0.001}, "model.width"),
    ({"data.dataset": "cifar10", "data.download": False, "model.arch": "resnet20"}, "cifar10 not found under"),
]


@pytest.mark.parametrize("values, message", BAD_SPECS, ids=[m.split(":")[0] for _, m in BAD_SPECS])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, values, message):
    values = {"data.root": str(tmp_path / "empty-root"), **values}
    path = spec_file(tmp_path, **values)
    command = "train" if "not found" in message else "validate"
    assert main([command, str(path), "--out", str(tmp_path / "o")] if command == "train" else [command, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ticketsearch: error: ") and message in err
    assert err.count("\n") == 1, err


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path, capsys):
    path = spec_file(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"\x00garbage")
    assert main(["train", str(path), "--out", str(out), "--resume"]) == 2
    assert "not a readable torch file" in capsys.readouterr().err
    torch.save({"state_dict": {"w": torch.zeros(1)}}, out / "checkpoint.pt")
    assert main(["train", str(path), "--out", str(out), "--resume"]) == 2
    assert "not a ticketsearch trial state" in capsys.readouterr().err


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    path = spec_file(tmp_path, **{"model.arch": "nope"})
    result = subprocess.run([sys.executable, "-m", "ticketsearch", "validate", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
