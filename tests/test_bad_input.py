"""Bad input never reaches a trial: every malformed spec of tests/bad_specs/ fails `validate`, `train`
and `run` alike, with one line naming the field, exit code 2, no traceback, and no Ray started.

Each file of the corpus starts with `# expect: <text the error line contains>`.
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray

from ticketsearch.cli import main
from ticketsearch.search.summary import summarise
from ticketsearch.spec import load_spec

from search_helpers import corrupt_mnist

CORPUS = Path(__file__).parent / "bad_specs"
SPECS = sorted(CORPUS.glob("*.yaml"))


def expected(spec: Path) -> str:
    first = spec.read_text().splitlines()[0]
    assert first.startswith("# expect: "), spec
    return first.removeprefix("# expect: ")


@pytest.fixture
def no_ray(monkeypatch):
    """`run` must refuse bad input before Ray starts (~10 s) and so before any trial."""

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called for a spec that should have been refused")

    monkeypatch.setattr(ray, "init", refuse)


def commands(spec: Path, out: Path) -> list[list[str]]:
    return [["validate", str(spec)],
            ["train", str(spec), "--out", str(out / "train"), "--device", "cpu"],
            ["run", str(spec), "--out", str(out / "run")]]


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_bad_spec_is_one_line_and_exit_2_from_every_command(spec, tmp_path, capsys, no_ray):
    for argv in commands(spec, tmp_path):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("ticketsearch: error: ") and captured.err.count("\n") == 1, (argv, captured.err)
        assert expected(spec) in captured.err, (argv, captured.err)
        assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "run" / "search.json").exists() and not (tmp_path / "train" / "epochs").exists()


def test_the_corpus_covers_every_class_and_section():
    names = {spec.stem for spec in SPECS}
    for kind in ("yaml_", "bool_", "default_", "objective_", "size_"):
        assert any(name.startswith(kind) for name in names), kind
    fields = " ".join(expected(spec) for spec in SPECS)
    for section in ("name", "trainer", "data", "model", "train", "attack", "prune", "objective", "search",
                    "resources", "transfer"):
        assert f"{section}." in fields or f"{section}:" in fields, section


def test_the_corpus_base_spec_is_valid(tmp_path, capsys):
    """The corpus changes one thing of a valid spec: without it the spec passes."""
    text = (CORPUS / "size_val_split.yaml").read_text().replace("val_split: 5000", "val_split: 200")
    (tmp_path / "good.yaml").write_text(text)
    assert main(["validate", str(tmp_path / "good.yaml")]) == 0
    transfer = (CORPUS / "size_transfer_source.yaml").read_text().replace("val_split: 2000", "val_split: 100")
    (tmp_path / "transfer.yaml").write_text(transfer)
    assert main(["validate", str(tmp_path / "transfer.yaml")]) == 0


def test_a_spec_that_is_not_utf8_text(tmp_path, capsys, no_ray):
    spec = tmp_path / "weights.yaml"
    spec.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")  # a binary file passed by mistake
    for argv in commands(spec, tmp_path):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "weights.yaml: not UTF-8 text (byte 0x89 at offset 0)" in err and err.count("\n") == 1


def test_an_override_is_held_to_the_same_rules(tmp_path, capsys):
    spec = tmp_path / "good.yaml"
    spec.write_text((CORPUS / "size_val_split.yaml").read_text().replace("val_split: 5000", "val_split: 200"))
    assert main(["validate", str(spec), "--set", "data.augment=off"]) == 2
    assert "data.augment: 'off' is not a boolean" in capsys.readouterr().err
    assert main(["validate", str(spec), "--set", "data.augment=false"]) == 0


def test_sizes_are_checked_against_a_data_set_on_disk(tmp_path, capsys):
    """MNIST's label files alone give its sizes; a root without the data is left to the loader."""
    from fake_datasets import write_mnist

    write_mnist(tmp_path / "data", n_train=60, n_test=20)
    spec = tmp_path / "mnist.yaml"
    spec.write_text((CORPUS / "size_val_split.yaml").read_text().replace(
        "{dataset: digits, val_split: 5000}", f"{{dataset: mnist, root: {tmp_path / 'data'}, val_split: 10}}"))
    assert main(["validate", str(spec), "--set", "train.eval_examples=10"]) == 0
    assert main(["validate", str(spec), "--set", "data.val_split=60"]) == 2
    assert "data.val_split: 60 gives 60 of 60 training examples" in capsys.readouterr().err
    assert main(["validate", str(spec), "--set", "train.test_examples=21", "--set", "train.eval_examples=10"]) == 2
    assert "train.test_examples: 21 is more than the 20 test examples of mnist" in capsys.readouterr().err
    # absent and not downloadable here: validate cannot know its sizes and does not guess
    assert main(["validate", str(spec), "--set", f"data.root={tmp_path / 'none'}", "--set", "data.download=false",
                 "--set", "data.val_split=100000"]) == 0


def test_a_subprocess_prints_one_line_and_no_traceback(tmp_path):
    """The real process: stderr as a user sees it, for a reading error and a size error of `run`."""
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    for argv in (["validate", str(binary)], ["run", str(CORPUS / "size_val_split.yaml"), "--out", str(tmp_path / "o")]):
        done = subprocess.run([sys.executable, "-m", "ticketsearch", *argv], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.startswith("ticketsearch: error: ")
    assert not (tmp_path / "o").exists()


def test_a_search_whose_every_trial_failed_says_so_last(tmp_path):
    spec = load_spec(CORPUS / "size_val_split.yaml", {"data.val_split": 200})
    (tmp_path / "epochs").mkdir()
    pd.DataFrame({"trial_id": ["a", "b"], "status": ["error", "error"], "objective": [float("nan")] * 2,
                  "error": ["UserError: one", "UserError: two"]}).to_parquet(tmp_path / "trials.parquet")
    lines: list[str] = []
    assert summarise(tmp_path, spec, lines.append)["failed"]
    assert lines[-1] == "search bad failed: every trial ended in error (2); the last error: UserError: two"
    pd.DataFrame({"trial_id": ["a", "b"], "status": ["error", "completed"], "objective": [float("nan"), 0.5],
                  "error": ["UserError: one", ""]}).to_parquet(tmp_path / "trials.parquet")
    assert not summarise(tmp_path, spec, lines.append)["failed"]


def test_a_search_whose_trials_keep_failing_stops_and_exits_non_zero(tmp_path, capsys):
    root = corrupt_mnist(tmp_path / "data")
    spec = tmp_path / "failing.yaml"
    spec.write_text((CORPUS / "size_val_split.yaml").read_text()
                    .replace("{dataset: digits, val_split: 5000}", f"{{dataset: mnist, root: {root}, val_split: 10}}")
                    .replace("eval_examples: 100", "eval_examples: 10")
                    .replace("lr: 0.05", "lr: {loguniform: [0.01, 0.1]}")
                    + "search: {algorithm: random, num_samples: 5, max_concurrent: 1, scheduler: fifo, "
                      "max_failures: 0, stop_after_same_errors: 2}\n")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--num-cpus", "2"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("search bad failed: stopped after 2 trials in a row failed with the same error "
                           "(search.stop_after_same_errors 2): "), last
    assert "could not read the train split of mnist" in last
    trials = pd.read_parquet(out / "trials.parquet")
    assert (trials["status"] == "error").sum() == 2 and len(trials) < 5, trials[["trial_id", "status"]]


def test_a_workers_shutdown_traceback_goes_to_its_log_not_the_terminal(tmp_path, monkeypatch, capfd):
    """Ray stops workers with SIGTERM; its handler's SystemExit inside a weakref callback printed
    "Exception ignored ... SystemExit: 1" into the user's terminal after a search (Ray forwards worker
    stderr). The hook every worker runs (search/worker_setup.py) writes it beside the worker's logs."""
    import weakref

    from ticketsearch.search import worker_setup

    monkeypatch.setattr(worker_setup, "_log_dir", lambda: tmp_path)
    reported = []  # what Python's own hook (here: a recorder in its place) is given
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: reported.append(unraisable.exc_type))
    worker_setup.quiet_shutdown()

    class Held:
        pass

    def on_collect(_):
        raise SystemExit(1)  # what Ray's sigterm_handler raises

    held = Held()
    reference = weakref.ref(held, on_collect)
    del held
    assert reference() is None and reported == [] and "SystemExit" not in capfd.readouterr().err
    (log,) = tmp_path.glob("ticketsearch-shutdown-*.log")
    assert "SystemExit: 1" in log.read_text() and "on_collect" in log.read_text()
    # anything else Python cannot raise is still reported as before
    other = Held()
    weakref_to_other = weakref.ref(other, lambda _: 1 / 0)
    del other
    assert weakref_to_other() is None and reported == [ZeroDivisionError]
