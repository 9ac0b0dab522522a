"""A search whose driver is gone is told apart from one still running: `results` and `report` say
"interrupted at <time>" and how to resume, from the driver's host, pid and heartbeat in search.json."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd

from ticketsearch.cli import main
from ticketsearch.results.store import load
from ticketsearch.search.heartbeat import STALE_AFTER_S, Heartbeat, driver_record

from search_helpers import search_spec, start_search, wait_for


def unfinished_search(out, driver) -> None:
    """The files of a search that has not ended: search.json without `ended`, one running trial."""
    out.mkdir(parents=True)
    pd.DataFrame({"trial_id": ["t1"], "status": ["running"], "objective": [0.5]}).to_parquet(out / "trials.parquet")
    (out / "search.json").write_text(json.dumps({"name": "x", "spec_source": "spec.yaml", "started": time.time() - 900,
                                                 "ended": None, "driver": driver}))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_dead_driver_is_reported_as_interrupted_with_how_to_resume(tmp_path, capsys):
    out = tmp_path / "out"
    beat = time.time() - 600
    unfinished_search(out, {"host": socket.gethostname(), "pid": dead_pid(), "heartbeat": beat})
    assert main(["results", str(out)]) == 0
    err = capsys.readouterr().err
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(beat))
    assert f"{out}: interrupted at {at}" in err
    assert f"resume with `ticketsearch run spec.yaml --out {out} --resume`" in err and err.count("\n") == 1


def test_a_live_driver_is_running_and_a_silent_one_elsewhere_is_gone(tmp_path):
    live = tmp_path / "live"
    unfinished_search(live, driver_record())  # this process, beating now
    assert not load(live).interrupted and "is still running" in load(live).state_note()
    # another host: the pid cannot be asked, the heartbeat decides
    elsewhere = tmp_path / "elsewhere"
    unfinished_search(elsewhere, {"host": "node-that-died", "pid": 1, "heartbeat": time.time() - STALE_AFTER_S - 5})
    assert load(elsewhere).interrupted
    recent = tmp_path / "recent"
    unfinished_search(recent, {"host": "node-that-beats", "pid": 1, "heartbeat": time.time()})
    assert not load(recent).interrupted
    # written before heartbeats existed: no claim either way
    old = tmp_path / "old"
    unfinished_search(old, None)
    assert not load(old).interrupted and "still running or was interrupted" in load(old).state_note()


def test_the_heartbeat_refreshes_search_json_until_the_search_ends(tmp_path):
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"name": "x", "driver": {"heartbeat": 0.0}}))
    with Heartbeat(path, period_s=0.02):
        wait_for(lambda: json.loads(path.read_text())["driver"]["heartbeat"] > 0, 10, "a heartbeat")
    document = json.loads(path.read_text())
    assert document["name"] == "x" and document["driver"]["pid"] == os.getpid()


def test_a_driver_killed_with_sigkill_is_reported_as_interrupted(tmp_path, capsys):
    spec = search_spec(tmp_path, **{"search.num_samples": 2, "train.epochs": 3})
    out = tmp_path / "out"
    process = start_search(spec, out)
    try:
        # An epoch and the trial's row (the driver writes the epoch's file first, then trials.parquet).
        wait_for(lambda: (out / "trials.parquet").is_file(), 120, "a trial's first epoch")
        assert "is still running" in load(out).state_note()
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its embedded Ray
        process.wait()
    assert main(["results", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{out}: interrupted at " in err and f"--out {out} --resume`" in err, err
