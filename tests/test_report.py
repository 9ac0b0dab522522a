"""`ticketsearch report`: a Markdown file that links valid PNG plots, also for partial searches."""

import json
import re
import shutil

import matplotlib.image
import pytest

from ticketsearch.cli import main
from ticketsearch.errors import UserError
from ticketsearch.results.report import write_report

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
    return text, linked


def test_report_links_valid_plots(finished_search, tmp_path, capsys):
    _, out = finished_search
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("ray", "tensorboard", "tickets"))
    assert main(["report", str(copy)]) == 0
    markdown = copy / "report" / "report.md"
    assert str(markdown) in capsys.readouterr().out
    text, linked = check_report(markdown)
    assert {"curves.png", "pareto.png", "hyperparameters.png"} <= set(linked)
    assert "Leaderboard" in text and "still running" not in text


def test_partial_search_still_gets_a_report(finished_search, tmp_path):
    _, out = finished_search
    copy = tmp_path / "partial"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("ray", "tensorboard", "tickets"))
    sorted((copy / "epochs").glob("*.parquet"))[0].unlink()
    search = json.loads((copy / "search.json").read_text())
    search["ended"] = None
    (copy / "search.json").write_text(json.dumps(search))
    text, _ = check_report(write_report(copy))
    assert "partial" in text


def test_no_records_is_a_clear_error(tmp_path):
    (tmp_path / "epochs").mkdir()
    with pytest.raises(UserError):
        write_report(tmp_path)
