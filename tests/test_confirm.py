"""Confirmation on fresh seeds: the search's best configurations trained again with new seeds on
validation images the search did not rank by, and their speed-ups given with intervals."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ticketsearch.cli import main
from ticketsearch.results.confirmation import confirmation_lines, confirmation_table, t_interval
from ticketsearch.search.confirm import CONFIRM, SEED_STRIDE, confirmation_trials, stage_of, trial_config
from ticketsearch.spec import load_spec

from search_helpers import search_spec


def test_t_interval_of_known_values():
    mean, low, high = t_interval(pd.Series([1.0, 2.0, 3.0]))
    # mean 2, sd 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3)
    assert mean == 2 and high - mean == pytest.approx(4.302653 / 3**0.5, rel=1e-5) and mean - low == high - mean
    assert math.isnan(t_interval(pd.Series([1.5]))[1]) and t_interval(pd.Series([1.5]))[0] == 1.5
    assert math.isnan(t_interval(pd.Series([math.nan]))[0])


def frame(rows):
    base = {"status": "completed", "reached_target": True, "epoch_speedup": math.nan, "speedup": math.nan,
            "stage": "search", "confirms": ""}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_confirmation_table_puts_the_search_figure_beside_the_seeds_mean():
    trials = frame([
        {"trial_id": "a", "epoch_speedup": 1.8, "speedup": 1.2},
        {"trial_id": "a1", "stage": "confirm", "confirms": "a", "epoch_speedup": 1.1, "speedup": 0.9},
        {"trial_id": "a2", "stage": "confirm", "confirms": "a", "epoch_speedup": 1.3, "speedup": 1.0},
        {"trial_id": "a3", "stage": "confirm", "confirms": "a", "reached_target": False},
    ])
    row = confirmation_table(trials).iloc[0]
    assert (row["confirms"], row["seeds"], row["reached"]) == ("a", 3, 2)
    assert row["epoch_speedup_mean"] == pytest.approx(1.2) and row["epoch_speedup_search"] == 1.8
    assert row["epoch_speedup_low"] < 1 < row["epoch_speedup_high"]  # two seeds: a wide interval
    lines = confirmation_lines(trials)
    assert lines[1].startswith("  a: 2 of 3 seeds reached the target; epochs, finding excluded 1.20x [")
    assert "(1.80x)" in lines[1]
    assert lines[-1] == "  confirmed: no configuration reached the target at every seed"
    # Every seed reached, interval above 1: a configuration confirmed faster.
    sure = frame([{"trial_id": "b", "epoch_speedup": 2.0},
                  *({"trial_id": f"b{i}", "stage": "confirm", "confirms": "b", "epoch_speedup": v}
                    for i, v in enumerate((1.50, 1.52, 1.48)))])
    assert confirmation_lines(sure)[-1] == ("  confirmed: b (3 seeds), in epochs to the target; against the "
                                            "reference: 1.50x [1.45, 1.55], faster")
    # Against dense at its own lr and the best dense network the answer can be "not faster", and says so.
    sure["epoch_speedup_matched"] = [1.0, 0.9, 1.1, 1.0]
    sure["epoch_speedup_best_dense"] = [0.8, 0.70, 0.72, 0.71]
    headline = confirmation_lines(sure)[-1]
    assert "against dense at its own lr: 1.00x [0.75, 1.25], not shown faster (the interval spans 1)" in headline
    assert "against the best dense network: 0.71x [0.69, 0.73], slower" in headline
    assert confirmation_lines(frame([{"trial_id": "c"}])) == []  # no confirmation, no lines


def test_confirmation_trials_take_the_best_completed_with_fresh_seeds_and_images(tmp_path):
    spec = load_spec(search_spec(tmp_path, **{"search.confirm": {"top": 2, "seeds": 2}, "data.val_split": 200}))
    trials = pd.DataFrame([
        {"trial_id": t, "status": s, "objective": o, "stage": "search", "config.model.width": w,
         "config.train.lr": lr, "config.prune.ratio": 0.5}
        for t, s, o, w, lr in [("x", "completed", 0.5, 0.25, 0.05), ("y", "early-stopped", 0.9, 0.5, 0.1),
                               ("z", "completed", 0.7, 0.5, 0.02), ("w", "completed", 0.6, 0.25, 0.2)]])
    configs = confirmation_trials(spec, trials)
    assert [c[CONFIRM]["confirms"] for c in configs] == ["z", "z", "w", "w"]  # best completed first
    config = trial_config(spec, configs[1])
    assert (config.train.seed, config.train.lr, config.model.width) == (2 * SEED_STRIDE, 0.02, 0.5)
    assert config.train.eval_offset == 100  # after the 100 images the search ranked by
    assert stage_of(configs[1]) == ("confirm", "z") and stage_of({"train.lr": 0.1}) == ("search", "")
    assert trial_config(spec, {"train.lr": 0.1}).train.seed == 0


def test_confirmation_needs_validation_images_the_search_did_not_use(tmp_path, capsys):
    path = search_spec(tmp_path, **{"search.confirm": {"top": 1, "seeds": 2}, "data.val_split": 100})
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ticketsearch: error: ") or "search.confirm:" in err
    assert "search.confirm: confirmation reads validation images the search did not rank by" in err
    assert "\n" not in err


def test_a_search_confirms_its_best_configuration_on_fresh_seeds(tmp_path, capsys):
    path = search_spec(tmp_path, **{
        "data.val_split": 200,
        "search": {"algorithm": "random", "num_samples": 2, "max_concurrent": 2, "seed": 0,
                   "confirm": {"top": 1, "seeds": 2}}})
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--num-cpus", "2"]) == 0
    printed = capsys.readouterr().out
    trials = pd.read_parquet(out / "trials.parquet")
    search, confirm = trials[trials["stage"] == "search"], trials[trials["stage"] == "confirm"]
    assert len(search) == 2 and len(confirm) == 2
    best = confirm["confirms"].iloc[0]
    assert set(confirm["confirms"]) == {best} and best in set(search["trial_id"])
    assert sorted(confirm["config.train.seed"]) == [SEED_STRIDE, 2 * SEED_STRIDE]
    assert (confirm["config.train.eval_offset"] == 100).all() and (search["config.train.eval_offset"] == 0).all()
    for column in ("config.model.width", "config.train.lr", "config.prune.ratio"):
        assert (confirm[column] == search.set_index("trial_id").at[best, column]).all()
    assert (confirm["status"] == "completed").all()
    assert "confirmation on fresh seeds" in printed and f"  {best}: " in printed
    capsys.readouterr()
    assert main(["results", str(out)]) == 0 and "confirmation on fresh seeds" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert "## Confirmation on fresh seeds" in (out / "report" / "report.md").read_text()
    epochs = pd.read_parquet(out / "epochs")
    # The fresh seed trains its own levels: the confirmation's curves differ from the search trial's.
    mine = epochs[epochs["trial_id"] == best]["val_robust_acc"].tolist()
    assert any(epochs[epochs["trial_id"] == t]["val_robust_acc"].tolist() != mine for t in confirm["trial_id"])
