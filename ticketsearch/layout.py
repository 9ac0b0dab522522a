"""The output directory's layout: every file and folder name a search or a trial writes, in one place.

A search's `<out>/` holds SEARCH_JSON (the spec, its hash, versions, times, the driver), EPOCHS/
(one Parquet file per trial), DENSE_EPOCHS/ (the dense baseline a transfer trial is compared with),
TRIALS (one row per trial), TENSORBOARD/<trial>/, TICKETS/<trial>/ (the kept tickets, each with
MANIFEST), LEVELS/ (the shared training, trainers/levels.py), SUPERSEDED/ (records of trials a resumed
search re-ran) and Tune's RAY/; `ticketsearch train` writes the same tables for its one trial, plus
CHECKPOINT and CONFIG_JSON.
"""

SEARCH_JSON = "search.json"
EPOCHS = "epochs"
DENSE_EPOCHS = "dense_epochs"
TRIALS = "trials.parquet"
TENSORBOARD = "tensorboard"
TICKETS = "tickets"
MANIFEST = "manifest.json"
LEVELS = "levels"
UNSHARED = "unshared"  # LEVELS/UNSHARED/<trial>/: a trial's own levels under search.share_levels: false
SUPERSEDED = "superseded"
RAY = "ray"
CHECKPOINT = "checkpoint.pt"
CONFIG_JSON = "config.json"
