"""`ticketsearch run`: a search spec as Ray Tune trials, embedded or on a cluster, resumable.

Output directory layout: `search.json` (the spec, its hash, versions, times, the checkpoint storage),
`epochs/`, `trials.parquet`, `tensorboard/` (written on the driver by `ResultsCallback`) and `ray/`
(Tune's experiment state and the trials' checkpoints, unless `storage` names a path or URI that every
node of a cluster reaches).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ticketsearch import __version__
from ticketsearch.errors import UserError
from ticketsearch import layout
from ticketsearch.results.trials_table import search_totals
from ticketsearch.search import confirm
from ticketsearch.search.heartbeat import driver_record, write_json_atomic
from ticketsearch.spec import Spec

EXPERIMENT = "tune"
# Every worker routes the tracebacks of its own shutdown to its logs (search/worker_setup.py).
WORKER_ENV = {"worker_process_setup_hook": "ticketsearch.search.worker_setup.quiet_shutdown"}


def run_search(
    spec: Spec,
    *,
    out: str | Path | None = None,
    address: str | None = None,
    resume: bool = False,
    num_cpus: int | None = None,
    storage: str | None = None,
    echo: Callable[[str], Any] = print,
    verbose: int = 1,
) -> dict[str, Any]:
    import ray  # after ticketsearch/search/__init__.py set Ray's environment
    from ray import tune
    from ray.tune.search import Searcher

    from ticketsearch.pretrial import check_before_trials
    from ticketsearch.search.checkpoint_retention import CheckpointRetention
    from ticketsearch.search.failure_stopper import RepeatedErrorStopper
    from ticketsearch.search.heartbeat import Heartbeat
    from ticketsearch.search.preflight import check_cluster, experiment_path, resolve_storage
    from ticketsearch.search.results_callback import ResultsCallback
    from ticketsearch.search.space import (OBJECTIVE, check_search, make_scheduler, make_searcher, param_space,
                                           tune_objective)
    from ticketsearch.search.trainable import run_trial

    # Every check that needs no Ray comes first: bad input costs no Ray start-up and no trial.
    check_search(spec)
    check_before_trials(spec)
    config = spec.default_trial
    out = Path(out or layout.default_out(f"{spec.name}-{spec.content_hash()}")).resolve()
    _check_out(out, spec, resume)
    # A resumed search finds its checkpoints where it was started, unless told otherwise.
    storage = resolve_storage(storage or (_saved_storage(out) if resume else None), out)
    experiment = experiment_path(storage, EXPERIMENT)
    if resume:
        _check_restorable(tune, experiment)

    _connect(ray, address, num_cpus)
    try:
        _check_resources(ray, config.resources.cpu, config.resources.gpu)
        check_cluster(ray, storage, spec)
        started = time.time()
        _write_search_json(out, spec, started=started, resume=resume, storage=storage)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, spec=spec, levels_dir=_levels_dir(storage, out)),
            {"cpu": config.resources.cpu, "gpu": config.resources.gpu},
        )
        def reporter(parameters: list[str]):
            return tune.CLIReporter(
                parameter_columns=parameters,
                metric_columns={"global_epoch": "epoch", "phase": "phase", "ticket_epoch": "ticket epoch",
                                "sparsity": "sparsity", "val_robust_acc": "val robust",
                                OBJECTIVE: config.objective.metric},
                max_report_frequency=10,
            )
        stopper = RepeatedErrorStopper(config.search.stop_after_same_errors)

        def run_config(name: str, stopper: RepeatedErrorStopper):
            return tune.RunConfig(
                name=name,
                storage_path=storage,
                stop=stopper,
                callbacks=[ResultsCallback(out, spec, "search" if name == EXPERIMENT else "confirm"),
                           CheckpointRetention(config.search.keep_checkpoints), stopper],
                # Tune keeps every checkpoint; CheckpointRetention deletes them when no snapshot can name them.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                failure_config=tune.FailureConfig(max_failures=config.search.max_failures),
                # A confirmation trial's config is not the space's paths (search/confirm.py).
                progress_reporter=reporter(list(spec.space) if name == EXPERIMENT else []),
                verbose=verbose,
            )
        if resume:
            tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True)
        else:
            searcher = make_searcher(spec)
            metric, mode = tune_objective(spec)
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(spec),
                tune_config=tune.TuneConfig(
                    metric=metric, mode=mode,
                    search_alg=searcher, scheduler=make_scheduler(spec),
                    num_samples=config.search.num_samples,
                    max_concurrent_trials=config.search.max_concurrent if isinstance(searcher, Searcher) else None,
                    reuse_actors=True,  # keeps torch, the data and its cache loaded between trials
                    trial_dirname_creator=lambda trial: trial.trial_id,
                ),
                run_config=run_config(EXPERIMENT, stopper),
            )
        with Heartbeat(layout.search_json(out)):
            tuner.fit()
            if not stopper.reason:
                confirm_stopper = RepeatedErrorStopper(config.search.stop_after_same_errors)
                confirmation = _confirmation_tuner(tune, spec, out, trainable, storage, resume,
                                                   run_config(confirm.EXPERIMENT, confirm_stopper))
                if confirmation is not None:
                    echo(f"confirming the best completed configurations (up to {config.search.confirm.top}) with "
                         f"{config.search.confirm.seeds} fresh seeds each")
                    confirmation.fit()
                    stopper = confirm_stopper
        _write_search_json(out, spec, started=started, ended=time.time(), resume=resume, storage=storage,
                           stopped=stopper.reason)
    finally:
        ray.shutdown()
    from ticketsearch.search.summary import summarise

    return summarise(out, spec, echo, stopped=stopper.reason)


def _confirmation_tuner(tune, spec: Spec, out: Path, trainable, storage: str, resume: bool, run_config):
    """The Tuner of the confirmation trials (search/confirm.py), or None when the spec asks for none or
    no search trial completed. A resumed search continues a confirmation it had started."""
    from ticketsearch.search.preflight import experiment_path

    search = spec.default_trial.search
    if search.confirm is None:
        return None
    experiment = experiment_path(storage, confirm.EXPERIMENT)
    if resume and tune.Tuner.can_restore(experiment):
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True)
    table = layout.trials_table(out)
    trials = pd.read_parquet(table) if table.is_file() else pd.DataFrame()
    configs = confirm.confirmation_trials(spec, trials)
    if not configs:
        return None
    return tune.Tuner(
        trainable,
        # Every confirmation trial runs to its end (no scheduler): its figures are the ones reported.
        param_space={confirm.CONFIRM: tune.grid_search([c[confirm.CONFIRM] for c in configs])},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=search.max_concurrent, reuse_actors=True,
                                    trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=run_config,
    )


def _check_out(out: Path, spec: Spec, resume: bool) -> None:
    search_json = layout.search_json(out)
    if resume:
        if not search_json.is_file():
            raise UserError(f"--resume: {out} holds no search (no search.json); run without --resume to start one")
        saved = json.loads(search_json.read_text())
        if saved.get("spec_hash") != spec.content_hash():
            raise UserError(f"--resume: {out} holds a search of a different spec (hash {saved.get('spec_hash')}, "
                            f"this spec {spec.content_hash()}); use the same spec and --set values, or another --out")
    elif search_json.exists():
        raise UserError(f"--out: {out} already holds a search; pass --resume to continue it, or choose another --out")


def _saved_storage(out: Path) -> str | None:
    return json.loads(layout.search_json(out).read_text()).get("storage")


def _check_restorable(tune, experiment: str) -> None:
    try:
        restorable = tune.Tuner.can_restore(experiment)
    except Exception as error:  # an object store that refuses us: credentials, network, bucket
        raise UserError(f"--resume: cannot read {experiment} ({' '.join(str(error).split())[:200]})") from None
    if not restorable:
        raise UserError(f"--resume: no Tune experiment at {experiment}; nothing to resume (pass the --storage "
                        "the search was started with)")


def _connect(ray, address: str | None, num_cpus: int | None) -> None:
    if address is None:
        # "local": a Ray of our own even when this machine runs a cluster (`ray start`, whose address Ray
        # would otherwise pick up from /tmp/ray and join); --address joins one on purpose.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=True, runtime_env=WORKER_ENV)
        return
    if address != "auto":
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--address: expected auto or HOST:PORT, got {address!r}")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as error:
            raise UserError(f"--address: no Ray cluster answers at {address} ({error.strerror or error}); "
                            "start one with `ray start --head` or see cluster/README.md") from None
    try:
        ray.init(address=address, logging_level="WARNING", runtime_env=WORKER_ENV)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"--address: could not join a Ray cluster at {address}: {' '.join(str(error).split())[:200]}") from None


def _check_resources(ray, cpu: float, gpu: float) -> None:
    """Fail fast when no node could ever run one trial, rather than leave trials pending forever."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    most_cpu = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    most_gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= cpu and n["Resources"].get("GPU", 0) >= gpu]
    if not fits:
        raise UserError(f"resources: a trial asks for {cpu:g} CPU and {gpu:g} GPU, but no node of the cluster has "
                        f"that (largest: {most_cpu:g} CPU, {most_gpu:g} GPU across {len(nodes)} node(s)); "
                        "lower resources.cpu / resources.gpu or add bigger nodes")


def _write_search_json(out: Path, spec: Spec, *, started: float, ended: float | None = None, resume: bool,
                       storage: str, stopped: str = "") -> None:
    import ray
    import torch

    path = layout.search_json(out)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    document = {
        "name": spec.name,
        "spec_source": spec.source,
        "spec_hash": spec.content_hash(),
        "spec": spec.tree,
        "space": {p: {"kind": d.kind, "args": list(d.args)} for p, d in spec.space.items()},
        "ticketsearch_version": __version__,
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "started": previous.get("started", started),
        "resumed": previous.get("resumed", []) + ([started] if resume else []),
        "ended": ended,
        "stopped": stopped,  # why the search stopped before its trials were done ("" when it did not)
        "storage": storage,  # where Tune keeps the experiment and the checkpoints; --resume looks there
        "driver": driver_record(),  # refreshed by Heartbeat while the search runs
    }
    if ended is not None:  # what the search trained and what its trials shared (trainers/levels.py)
        document["totals"] = search_totals(out, _levels_dir(storage, out))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, document)


def _levels_dir(storage: str, out: Path) -> str:
    """Where trials keep the levels they share (trainers/levels.py).

    `<out>/levels` by default; beside the checkpoints when `--storage` is a path (an NFS mount every
    node reaches), so each level is trained once for the whole cluster, under a file lock, and a level
    trained on one node serves trials on every other. With an object-store URI each node trains a
    level once and keeps it at `<out>/levels` on its own disk.
    """
    if "://" in storage or Path(storage) == layout.ray_storage(out):
        return str(layout.levels_dir(out))
    return str(layout.levels_dir(storage))
