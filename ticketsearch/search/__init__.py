"""The search layer: the only code that imports Ray (spec -> Tune, trainable, results callback, driver).

Ray reads some settings from the environment when its modules load, so they are set here, before any
module of this package imports Ray (importing `ticketsearch.search.x` runs this file first).
"""

import os

# Ray would start workers through `uv run` when the driver runs under it (the README's commands do),
# packing the working directory, .venv included (gigabytes), into every Ray session; the project's
# environment is already active, so workers start from it directly.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic live trial table (CLIReporter)
# A checkpoint every epoch is the point (a lost node costs at most the epoch in flight): no warning.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
