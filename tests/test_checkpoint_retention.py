"""Old trial checkpoints are deleted only when no experiment snapshot Tune may still hold can name them."""

from __future__ import annotations

from types import SimpleNamespace

from ray import tune

from ticketsearch.search.checkpoint_retention import CheckpointRetention


def test_a_checkpoint_goes_only_when_its_successor_is_older_than_any_snapshot_can_be(tmp_path):
    now = [0.0]
    retention = CheckpointRetention(keep=2, lag_s=300, clock=lambda: now[0])
    trial = SimpleNamespace(trial_id="t1")

    def save(index: int):
        folder = tmp_path / f"checkpoint_{index:06d}"
        folder.mkdir()
        retention.on_checkpoint(iteration=0, trials=[trial], trial=trial, checkpoint=tune.Checkpoint.from_directory(folder))
        now[0] += 1  # one epoch a second: Tune's own num_to_keep=2 would delete after every save

    for index in range(5):
        save(index)
    assert len(list(tmp_path.iterdir())) == 5  # a snapshot of the last 300 s may name any of them
    now[0] = 1 + 300  # checkpoint 1, saved at 1 s, is now 300 s old: no live snapshot names checkpoint 0
    retention.on_step_end(iteration=0, trials=[trial])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint_{i:06d}" for i in (1, 2, 3, 4)]
    now[0] = 10_000
    retention.on_step_end(iteration=0, trials=[trial])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000003", "checkpoint_000004"]  # keep=2


def test_the_experiment_end_keeps_the_newest_of_each_trial(tmp_path):
    retention = CheckpointRetention(keep=1, clock=lambda: 0.0)
    for trial_id in ("a", "b"):
        trial = SimpleNamespace(trial_id=trial_id)
        for index in range(3):
            folder = tmp_path / trial_id / f"checkpoint_{index:06d}"
            folder.mkdir(parents=True)
            retention.on_checkpoint(iteration=0, trials=[], trial=trial, checkpoint=tune.Checkpoint.from_directory(folder))
    (tmp_path / "a" / "checkpoint_000000").rmdir()  # already gone: a warning, not an error
    retention.on_experiment_end(trials=[])  # Tune wrote its final snapshot just before
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/*")) == ["a/checkpoint_000002",
                                                                                  "b/checkpoint_000002"]
