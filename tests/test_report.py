"""`ticketsearch report`: a Markdown file that links valid PNG plots, also for partial searches."""

import json
import re
import shutil
import time

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from ticketsearch.cli import main
from ticketsearch.errors import UserError
from ticketsearch.results.report import write_report
from ticketsearch.results.report_plots import pareto_front
from ticketsearch.single_trial import run_one_trial

from tiny import tiny_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_report(markdown_path):
    text = markdown_path.read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert linked, "the report links no plot"
    for name in linked:
        png = markdown_path.parent / name
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        height, width = matplotlib.image.imread(png).shape[:2]
        assert height > 100 and width > 100
    assert {p.name for p in markdown_path.parent.glob("*.png")} == set(linked), "a plot on disk is not linked"
    return text, linked


def copy_of(out, destination):
    shutil.copytree(out, destination, ignore=shutil.ignore_patterns("ray", "tensorboard", "tickets", "report"))
    return destination


def test_report_links_valid_plots(finished_search, tmp_path, capsys):
    _, out = finished_search
    copy = copy_of(out, tmp_path / "copy")
    assert main(["report", str(copy)]) == 0
    markdown = copy / "report" / "report.md"
    assert str(markdown) in capsys.readouterr().out
    text, linked = check_report(markdown)
    assert {"curves.png", "pareto.png", "hyperparameters.png", "speedup.png", "sparsities.png"} <= set(linked)
    skipped = [line for line in text.splitlines() if "Skipped" in line]
    # The speed-up across the space needs a ticket that reached the reference; a tiny search may have none.
    assert "speedup_space.png" in linked or skipped == ["_Skipped: no finished ticket reached the reference's "
                                                        "target, or nothing varied._"]
    assert "Leaderboard" in text and "still running" not in text and len(skipped) <= 1
    trials = pd.read_parquet(copy / "trials.parquet")
    best = trials.sort_values(["objective", "trial_id"], ascending=[False, True]).iloc[0]
    first_row = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    assert best["trial_id"] in first_row
    header = next(line for line in text.splitlines() if line.startswith("| # |"))
    assert all(path in header for path in json.loads((copy / "search.json").read_text())["space"])


def test_partial_search_still_gets_a_report(finished_search, tmp_path):
    _, out = finished_search
    copy = copy_of(out, tmp_path / "partial")
    files = sorted((copy / "epochs").glob("*.parquet"))
    files[0].unlink()
    search = json.loads((copy / "search.json").read_text())
    search["ended"] = None
    search["driver"]["heartbeat"] = time.time()  # a driver still at work (this process)
    (copy / "search.json").write_text(json.dumps(search))
    # one trial not yet in trials.parquet (epochs only), one that failed
    trials = pd.read_parquet(copy / "trials.parquet")
    unlisted, failed = files[1].stem, files[2].stem
    trials = trials[trials["trial_id"] != unlisted].copy()
    trials.loc[trials["trial_id"] == failed, ["status", "error"]] = ["error", "RuntimeError: out of | memory\nat step 3"]
    trials.to_parquet(copy / "trials.parquet")
    text, _ = check_report(write_report(copy))
    assert "still running: partial results" in text
    assert f"`{failed}` (error): RuntimeError: out of | memory at step 3" in text
    assert re.search(rf"\| `{unlisted}` \| running \|", text)


def test_search_without_tickets_skips_the_ticket_plots(finished_search, tmp_path):
    # Every trial stopped before its ticket's first epoch: its dense levels only.
    _, out = finished_search
    copy = copy_of(out, tmp_path / "dense-only")
    for path in (copy / "epochs").glob("*.parquet"):
        epochs = pd.read_parquet(path)
        epochs[epochs["phase"] != "ticket"].to_parquet(path)
    trials = pd.read_parquet(copy / "trials.parquet")
    trials["status"] = "early-stopped"
    for column in ("target_robust_acc", "ticket_epochs_to_target", "dense_epochs_to_target", "speedup"):
        trials[column] = float("nan")  # no ticket round: nothing measured against the reference
    trials.to_parquet(copy / "trials.parquet")
    text, linked = check_report(write_report(copy))
    assert set(linked) == {"pareto.png", "hyperparameters.png"}
    assert text.count("_Skipped:") == 4  # curves, speed-up, sparsities, speed-up across the space


def test_single_trial_from_train_has_a_report_without_search_plots(tmp_path):
    out = tmp_path / "train"
    run_one_trial(tiny_config(), out=out, device="cpu", echo=lambda line: None)
    text, linked = check_report(write_report(out, top=1))
    assert "hyperparameters.png" not in linked and {"curves.png", "pareto.png"} <= set(linked)
    assert "ticketsearch train" in text and "partial" not in text
    assert "| 1 | `tiny-" in text  # ranked by the objective metric although train writes no objective column


def test_pareto_front_keeps_the_points_no_other_beats_in_both():
    points = np.array([[0.5, 0.6], [0.8, 0.5], [0.5, 0.4], [0.2, 0.7], [0.8, 0.3], [0.1, 0.7]])
    assert list(pareto_front(points)) == [3, 0, 1]


def test_no_records_is_a_clear_error(tmp_path):
    (tmp_path / "epochs").mkdir()
    with pytest.raises(UserError):
        write_report(tmp_path)
