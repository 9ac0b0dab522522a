"""The output directory's layout: every file and folder a search or a trial writes, named in one place.

A search's `<out>/` holds SEARCH_JSON (the spec, its hash, versions, times, the driver), EPOCHS/
(one Parquet file per trial), TRIALS (one row per trial), TENSORBOARD/<trial>/, TICKETS/<trial>/ (the
kept tickets: MASK, REWIND, TRAINED and MANIFEST), LEVELS/ (the shared training, trainers/levels.py:
`<level>/` with LEVEL_KEY, LEVEL_PROGRESS, LEVEL_RESULT and LEVEL_LOCK), SUPERSEDED/ (records of trials
a resumed search re-ran), REPORT/ (`ticketsearch report`: REPORT_MARKDOWN and its plots) and Tune's
RAY/; `ticketsearch train` writes the same tables for its one trial, plus CHECKPOINT and CONFIG_JSON.

The names are constants; code outside this module builds paths only through the functions below, so
a name changes here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

SEARCH_JSON = "search.json"
EPOCHS = "epochs"
TRIALS = "trials.parquet"
TENSORBOARD = "tensorboard"
TICKETS = "tickets"
LEVELS = "levels"
UNSHARED = "unshared"  # LEVELS/UNSHARED/<trial>/: a trial's own levels under search.share_levels: false
SUPERSEDED = "superseded"
REPORT = "report"
RAY = "ray"
CHECKPOINT = "checkpoint.pt"
CONFIG_JSON = "config.json"
# Where `ticketsearch run` and `train` write when not given --out: RUNS/<name>-<hash>/.
RUNS = "runs"

# A ticket directory's files (results/tickets.py).
MASK = "mask.pt"
REWIND = "rewind.pt"
TRAINED = "trained.pt"
MANIFEST = "manifest.json"

# A level directory's files (trainers/levels.py).
LEVEL_KEY = "key.json"
LEVEL_PROGRESS = "progress.pt"
LEVEL_RESULT = "result.pt"
LEVEL_LOCK = ".lock"

REPORT_MARKDOWN = "report.md"


def default_out(run_name: str) -> Path:
    """The output directory of a search or trial run without --out (relative to the working directory)."""
    return Path(RUNS) / run_name


# ---------------------------------------------------------------------------------------------- a search


def search_json(out: str | Path) -> Path:
    return Path(out) / SEARCH_JSON


def epochs_dir(out: str | Path) -> Path:
    """A dataset directory of epoch records: `pandas.read_parquet` reads every trial's at once."""
    return Path(out) / EPOCHS


def trial_epochs(out: str | Path, trial_id: str) -> Path:
    return epochs_dir(out) / f"{trial_id}.parquet"


def trials_table(out: str | Path) -> Path:
    return Path(out) / TRIALS


def tensorboard_dir(out: str | Path) -> Path:
    """What `tensorboard --logdir` is given: one run per trial below it."""
    return Path(out) / TENSORBOARD


def tensorboard_run(out: str | Path, trial_id: str) -> Path:
    return tensorboard_dir(out) / trial_id


def trial_records(out: str | Path, trial_id: str) -> tuple[Path, Path]:
    """A trial's records in `out`: its epochs and its TensorBoard run (what a resumed search moves to
    `superseded(out)` for a trial it re-ran)."""
    return trial_epochs(out, trial_id), tensorboard_run(out, trial_id)


def superseded(out: str | Path) -> Path:
    """Laid out as `out` is, for the records (`trial_records`) of trials a resumed search re-ran."""
    return Path(out) / SUPERSEDED


def ray_storage(out: str | Path) -> Path:
    """Tune's experiments and checkpoints when --storage does not put them elsewhere."""
    return Path(out) / RAY


def report_dir(out: str | Path) -> Path:
    """`ticketsearch report`'s Markdown file and the plots it links (by name, beside it)."""
    return Path(out) / REPORT


def report_markdown(out: str | Path) -> Path:
    return report_dir(out) / REPORT_MARKDOWN


def report_plot(out: str | Path, name: str) -> Path:
    return report_dir(out) / name


# ---------------------------------------------------------------------------------------------- a single trial


def checkpoint(out: str | Path) -> Path:
    """`ticketsearch train`'s trial state after its last epoch, which --resume continues from."""
    return Path(out) / CHECKPOINT


def config_json(out: str | Path) -> Path:
    return Path(out) / CONFIG_JSON


# ---------------------------------------------------------------------------------------------- tickets


def ticket_dir(out: str | Path, trial_id: str) -> Path:
    return Path(out) / TICKETS / trial_id


def ticket_mask(ticket: str | Path) -> Path:
    return Path(ticket) / MASK


def ticket_weights(ticket: str | Path, which: str = "trained") -> Path:
    """The ticket's `trained` weights (at the end of its round) or the `rewind` weights it started from."""
    return Path(ticket) / {"trained": TRAINED, "rewind": REWIND}[which]


def ticket_manifest(ticket: str | Path) -> Path:
    return Path(ticket) / MANIFEST


def ticket_files(ticket: str | Path) -> tuple[Path, Path, Path, Path]:
    """Every file of a ticket directory."""
    return ticket_mask(ticket), ticket_weights(ticket, "rewind"), ticket_weights(ticket), ticket_manifest(ticket)


# ---------------------------------------------------------------------------------------------- levels


def levels_dir(root: str | Path) -> Path:
    """The shared levels of a search: `root` is its output directory, or the --storage path every
    node of a cluster reaches (search/driver.py)."""
    return Path(root) / LEVELS


def trial_levels(levels: str | Path, trial_id: str, shared: bool) -> Path:
    """Where a trial keeps its levels: the search's `levels` directory, or with `search.share_levels:
    false` a directory of its own under it that no other trial reads."""
    return Path(levels) if shared else Path(levels) / UNSHARED / trial_id


def level_dir(levels: str | Path, level_name: str) -> Path:
    return Path(levels) / level_name


def level_key(level: str | Path) -> Path:
    """The level's kind, settings and parents as JSON, for people (the directory's name hashes them)."""
    return Path(level) / LEVEL_KEY


def level_progress(level: str | Path) -> Path:
    return Path(level) / LEVEL_PROGRESS


def level_result(level: str | Path) -> Path:
    return Path(level) / LEVEL_RESULT


def level_lock(level: str | Path) -> Path:
    return Path(level) / LEVEL_LOCK


def finished_levels(levels: str | Path) -> list[Path]:
    """The result file of every finished level directly under `levels` (not a trial's unshared ones)."""
    return sorted(Path(levels).glob(f"*/{LEVEL_RESULT}"))
