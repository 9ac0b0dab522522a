"""The output directory's layout: the paths readers (README queries, scripts, resumed searches) rely on."""

from pathlib import Path

from ticketsearch import layout

OUT = Path("out")


def test_paths_have_the_documented_names():
    ticket, level = layout.ticket_dir(OUT, "t1"), layout.level_dir(layout.levels_dir(OUT), "dense-ab12")
    expected = [
        (layout.search_json(OUT), "search.json"),
        (layout.trial_epochs(OUT, "t1"), "epochs/t1.parquet"),
        (layout.trials_table(OUT), "trials.parquet"),
        (layout.tensorboard_run(OUT, "t1"), "tensorboard/t1"),
        (layout.ray_storage(OUT), "ray"),
        (layout.report_markdown(OUT), "report/report.md"),
        (layout.report_plot(OUT, "curves.png"), "report/curves.png"),
        (layout.checkpoint(OUT), "checkpoint.pt"),
        (layout.config_json(OUT), "config.json"),
        (layout.ticket_manifest(ticket), "tickets/t1/manifest.json"),
        (layout.ticket_weights(ticket, "rewind"), "tickets/t1/rewind.pt"),
        (layout.level_result(level), "levels/dense-ab12/result.pt"),
    ]
    assert [path.relative_to(OUT).as_posix() for path, _ in expected] == [name for _, name in expected]
    assert [p.name for p in layout.ticket_files(ticket)] == ["mask.pt", "rewind.pt", "trained.pt", "manifest.json"]
    assert layout.default_out("tiny-ab12") == Path("runs/tiny-ab12")


def test_superseded_records_keep_their_place_in_the_layout():
    moved = layout.trial_records(layout.superseded(OUT), "t1")
    kept = layout.trial_records(OUT, "t1")
    assert [p.relative_to(layout.superseded(OUT)) for p in moved] == [p.relative_to(OUT) for p in kept]
    assert [p.relative_to(OUT).as_posix() for p in moved] == [
        "superseded/epochs/t1.parquet", "superseded/tensorboard/t1"]


def test_a_trial_that_shares_no_levels_keeps_its_own_apart():
    levels = layout.levels_dir(OUT)
    assert layout.trial_levels(levels, "t1", shared=True) == levels
    own = layout.trial_levels(levels, "t1", shared=False)
    assert own == levels / "unshared" / "t1" and own != layout.trial_levels(levels, "t2", shared=False)


def test_finished_levels_are_the_results_directly_under_the_levels_directory(tmp_path):
    levels = layout.levels_dir(tmp_path)
    for name in ("dense-a", "ticket-b"):
        layout.level_dir(levels, name).mkdir(parents=True)
    layout.level_result(layout.level_dir(levels, "dense-a")).write_bytes(b"")
    unshared = layout.level_dir(layout.trial_levels(levels, "t1", shared=False), "dense-c")
    unshared.mkdir(parents=True)
    layout.level_result(unshared).write_bytes(b"")
    assert layout.finished_levels(levels) == [layout.level_result(layout.level_dir(levels, "dense-a"))]
