"""Values that used to slip through as something else are refused before a trial starts, by `validate`,
`train` and `run` alike: infinite numbers, booleans where numbers belong, ASHA rungs past the ticket's
epochs, and counts of threads or CPUs below 1. Each is one line naming the field, with exit code 2."""

import math
from pathlib import Path
from typing import get_args, get_origin

import pytest
import ray
import yaml
from pydantic import BaseModel, ValidationError

from ticketsearch.cli import main
from ticketsearch.pretrial import check_scheduler
from ticketsearch.spec import TrialConfig, load_spec

from tiny import tiny_tree

INF = math.inf
SEARCHES = sorted((Path(__file__).parent.parent / "searches").glob("*.yaml"))

BAD = [  # (spec path, value, what the error line says); the tiny spec's ticket trains 2 epochs
    ("train.lr", INF, "train.lr: input should be a finite number, got inf"),
    ("train.lr", -INF, "train.lr: input should be a finite number, got -inf"),
    ("train.lr", math.nan, "train.lr: input should be a finite number, got nan"),
    ("attack.train.pgd.eps", INF, "attack.train.eps: input should be a finite number"),
    ("reference.best_of", [0.1, INF], "reference.best_of.1: input should be a finite number"),
    ("resources.cpu", INF, "resources.cpu: input should be a finite number"),
    ("search.scheduler", {"asha": {"reduction_factor": INF}}, "search.scheduler.reduction_factor: input should be a "
                                                               "finite number"),
    ("train.lr", {"loguniform": [0.01, INF]}, "train.lr: loguniform takes [low, high] finite numbers, got [0.01, inf]"),
    ("train.lr", {"choice": [0.05, INF]}, "(with train.lr=inf): train.lr: input should be a finite number"),
    ("model.width", True, "model.width: input should be a number, not a boolean, got true"),
    ("train.epochs", True, "train.epochs: input should be a number, not a boolean, got true"),
    ("data.val_split", False, "data.val_split: input should be a number, not a boolean, got false"),
    ("data.classes", [0, True], "data.classes.1: input should be a number, not a boolean"),
    ("prune.rewind", True, "prune.rewind: input should be a number, not a boolean"),
    ("search.scheduler", {"asha": {"grace_period": 3}},
     "search.scheduler.asha.grace_period: 3 is past the ticket's 2 epochs"),
    ("search.scheduler", {"asha": {"grace_period": 2, "max_t": 1}}, "search.scheduler.asha.grace_period: 2 is past "
                                                                    "max_t 1"),
    ("search.scheduler", {"asha": {"grace_period": 1, "max_t": 3}},
     "search.scheduler.asha.max_t: 3 is past the ticket's 2 epochs"),
]


@pytest.fixture
def no_ray(monkeypatch):
    """`run` must refuse bad input before Ray starts, and so before any trial."""

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called for a spec that should have been refused")

    monkeypatch.setattr(ray, "init", refuse)


def write_spec(tmp_path: Path, **values) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(**values)))  # .inf, -.inf, .nan, true: the spec's own spellings
    return path


def refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    assert captured.err.startswith("ticketsearch: error: ") and captured.err.count("\n") == 1, (argv, captured.err)
    assert "Traceback" not in captured.err + captured.out
    return captured.err


@pytest.mark.parametrize("path, value, message", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_every_command_refuses_it_in_one_line(tmp_path, capsys, no_ray, path, value, message):
    spec = write_spec(tmp_path, **{path: value})
    for argv in (["validate", str(spec)], ["train", str(spec), "--out", str(tmp_path / "train"), "--device", "cpu"],
                 ["run", str(spec), "--out", str(tmp_path / "run")]):
        assert message in refused(argv, capsys), argv
    assert not (tmp_path / "train").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [["train", "--threads", "0"], ["train", "--threads", "-1"],
                                  ["train", "--threads", "1.5"], ["run", "--num-cpus", "0"]])
def test_a_count_of_threads_or_cpus_is_at_least_one(tmp_path, capsys, no_ray, argv):
    command, option, count = argv
    error = refused([command, str(write_spec(tmp_path)), option, count, "--out", str(tmp_path / "out")], capsys)
    assert f"{option}: '{count}' is not a count; accepted: a whole number of at least 1" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("values", [
    {},
    {"train.lr": 1},  # an integer for a float
    {"train.lr": "5e-4", "attack.train.pgd.eps": "8/255"},  # numbers written as text, quoted or not
    {"train.epochs": 2.0},  # a whole float for an integer: what quniform samples
    {"prune.rewind": "init"},
    {"search.scheduler": {"asha": {"grace_period": 2, "max_t": 2}}},  # a rung at the ticket's last epoch
    # ASHA's clock runs to the longest ticket of the space: rungs past the shorter ones' end are fine
    {"train.epochs": {"choice": [2, 4]}, "search.scheduler": {"asha": {"grace_period": 3}}},
], ids=["tiny", "int-lr", "text-numbers", "float-epochs", "rewind-init", "asha-last-epoch", "asha-longest-ticket"])
def test_a_valid_spec_still_validates(tmp_path, capsys, values):
    assert main(["validate", str(write_spec(tmp_path, **values))]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("spec", SEARCHES, ids=[s.stem for s in SEARCHES])
def test_the_shipped_specs_keep_asha_within_their_tickets(spec):
    check_scheduler(load_spec(spec))


def _walk(annotation):
    yield annotation
    for arg in get_args(annotation):
        yield from _walk(arg)


def _number_fields() -> list[tuple[type[BaseModel], str, bool]]:
    """(model, field, holds a sequence) for every number field of every section a trial config holds."""
    found, todo, seen = [], [TrialConfig], set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            parts = list(_walk(field.annotation))
            todo += [p for p in parts if isinstance(p, type) and issubclass(p, BaseModel)]
            if any(p in (int, float) for p in parts):
                found.append((model, name, any(get_origin(p) in (tuple, list) for p in parts)))
    return found


NUMBER_FIELDS = _number_fields()


@pytest.mark.parametrize("model, name, sequence", NUMBER_FIELDS, ids=[f"{m.__name__}.{n}" for m, n, _ in NUMBER_FIELDS])
def test_no_number_field_takes_a_boolean_or_an_infinity(model, name, sequence):
    """Every number field of every section, including those added later: the number types and the
    sections' shared base (spec/fields.py) refuse both, not a check per field."""
    for value, error_type in ((True, "number_not_boolean"), (INF, "finite_number"), (-INF, "finite_number")):
        with pytest.raises(ValidationError) as error:
            model.model_validate({name: [value] if sequence else value})
        assert error_type in {e["type"] for e in error.value.errors() if e["loc"][0] == name}, (name, value)


def test_the_walk_finds_the_number_fields():
    names = {f"{m.__name__}.{n}" for m, n, _ in NUMBER_FIELDS}
    assert {"TrainSection.lr", "TrainSection.epochs", "DataSection.val_split", "DataSection.classes",
            "AttackConfig.eps", "Schedule.milestones", "ReferenceSection.best_of", "SchedulerSection.grace_period",
            "PretrainSection.lr", "ResourcesSection.cpu"} <= names
