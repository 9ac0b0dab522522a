import math

import pandas as pd
import pytest

from ticketsearch.errors import UserError
from ticketsearch.results.leaderboard import leaderboard
from ticketsearch.results.repeats import aggregate_seeds, repeats_section, seeds_vary
from ticketsearch.results.store import SearchResults

SPACE = {"train.lr": {"choice": [0.05, 0.1]}, "train.seed": {"grid": [0, 1, 2]}}


def _trials() -> pd.DataFrame:
    rows = []
    # (lr, seed, status, objective, test robust accuracy)
    for i, (lr, seed, status, objective, test_robust) in enumerate([
        (0.1, 0, "completed", 0.50, 0.40), (0.1, 1, "completed", 0.60, 0.44), (0.1, 2, "completed", 0.70, 0.48),
        (0.05, 0, "completed", 0.50, 0.30), (0.05, 1, "completed", 0.60, 0.50),
        (0.1, 0, "early-stopped", 0.05, math.nan),  # cut by ASHA: not a repeat that finished
        (0.2, 0, "completed", 0.90, 0.20),  # a single seed
    ]):
        rows.append({"trial_id": f"t{i}", "status": status, "objective": objective, "test_robust_acc": test_robust,
                     "final_val_robust_acc": objective - 0.1, "config.train.lr": lr, "config.train.seed": seed,
                     "config.prune.find_with": None, "config.prune.exclude": "['classifier']"})
    return pd.DataFrame(rows)


def test_repeats_are_mean_and_std_over_the_completed_seeds_of_each_config():
    table = aggregate_seeds(_trials(), ("objective", "test_robust_acc"))
    assert list(table["config.train.lr"]) == [0.2, 0.1, 0.05]  # best mean objective first
    assert list(table["seeds"]) == [1, 3, 2]
    assert list(table["trial_ids"]) == ["t6", "t0,t1,t2", "t3,t4"]
    by_lr = table.set_index("config.train.lr")
    assert by_lr.loc[0.1, "objective_mean"] == pytest.approx(0.6)
    assert by_lr.loc[0.1, "objective_std"] == pytest.approx(0.1)  # sample std (ddof 1) of 0.5, 0.6, 0.7
    assert by_lr.loc[0.05, "test_robust_acc_mean"] == pytest.approx(0.4)
    assert math.isnan(by_lr.loc[0.2, "objective_std"])
    assert by_lr.loc[0.1, "config.prune.exclude"] == "['classifier']" and by_lr["config.prune.find_with"].isna().all()
    assert "config.train.seed" not in table


def test_leaderboard_shows_configurations_when_seeds_vary_and_trials_otherwise(tmp_path):
    results = SearchResults(out=tmp_path, epochs=pd.DataFrame(), trials=_trials(),
                            search={"space": SPACE, "spec": {"objective": {"mode": "max"}}})
    assert seeds_vary(results.trials, list(SPACE))
    board = leaderboard(results)
    assert list(board.columns[:3]) == ["train.lr", "seeds", "trial_ids"] and "train.seed" not in board
    assert list(board["train.lr"]) == [0.2, 0.1, 0.05] and "test_robust_acc_std" in board
    assert list(leaderboard(results, sort="test_robust_acc")["train.lr"]) == [0.1, 0.05, 0.2]
    with pytest.raises(UserError, match="--sort: no column 'speed'"):
        leaderboard(results, sort="speed")
    per_trial = leaderboard(results, aggregate=False)
    assert len(per_trial) == 7 and per_trial["trial_id"].iloc[0] == "t6"
    fixed_seed = SearchResults(out=tmp_path, epochs=pd.DataFrame(), trials=_trials(),
                               search={"space": {"train.lr": SPACE["train.lr"]}})
    assert "trial_id" in leaderboard(fixed_seed)  # seed not searched: one row per trial, as always


def test_report_section_on_repeats():
    lines = repeats_section(_trials(), list(SPACE), "max")
    assert lines[1] == "## Repeats over seeds"
    assert "| train.lr | seeds | objective | final_val_robust_acc | test_robust_acc |" in lines
    assert "| 0.1 | 3 | 0.6 ± 0.1 | 0.5 ± 0.1 | 0.44 ± 0.04 |" in lines
    assert "| 0.2 | 1 | 0.9 ± – | 0.8 ± – | 0.2 ± – |" in lines
    assert repeats_section(_trials(), ["train.lr"], "max") == []
