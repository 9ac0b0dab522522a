"""Checks made before a search starts: where checkpoints go, and whether every node can reach them and the data.

A trial may run on any node and report its checkpoint from there, and a restarted trial reads its last
checkpoint on whatever node it lands on. A checkpoint storage path that only the driver's machine sees,
or a data set that one node cannot load, would otherwise surface as trials failing one by one minutes
into the search. So on a cluster of more than one node the driver writes a marker file into the
storage, then a task pinned to each alive node reads it back and loads every data set the search uses
(downloading it under the data set's file lock where allowed, so this also prepares the data once per
node). Any failure stops the search before it starts, with one line naming the node and what to fix.
On one node, or several nodes that share one filesystem, every check passes.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ticketsearch import layout
from ticketsearch.errors import UserError
from ticketsearch.pretrial import data_sections
from ticketsearch.spec import Spec

MARKER_PREFIX = ".ticketsearch-preflight-"  # + a random token: concurrent searches never share a marker
# Seconds to wait for every node's check. A node downloads its missing data sets inside the check
# (CIFAR-10 is 163 MiB), so this is generous; a node that cannot start a worker at all fails here.
CHECK_TIMEOUT_S = 900.0
# Where on every node the object-store URIs Tune understands begin (pyarrow file systems).
URI_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "abfss://", "file://")


def resolve_storage(storage: str | None, out: Path) -> str:
    """The checkpoint storage Tune is given: `<out>/ray` by default, an absolute path, or a URI.

    Raises a one-line UserError for a URI of a scheme Tune cannot use or a local path that cannot
    be created.
    """
    if storage is None:
        storage = str(layout.ray_storage(out))
    if "://" in storage:
        if not storage.startswith(URI_SCHEMES):
            raise UserError(f"--storage: {storage!r} has an unknown scheme; pass a path (an NFS mount on a cluster) "
                            f"or a URI starting with one of {', '.join(URI_SCHEMES)}")
        return storage.rstrip("/")
    path = Path(storage).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--storage: cannot create {path} ({error.strerror or error}); "
                        "pass a writable path or an s3:// / gs:// URI") from None
    return str(path)


def experiment_path(storage: str, name: str) -> str:
    """`storage`/`name` for a path or a URI (a URI must not go through pathlib: it would drop a slash)."""
    return f"{storage.rstrip('/')}/{name}"


def check_cluster(ray, storage: str, spec: Spec, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Refuse to start when some alive node cannot read `storage` or load the search's data sets."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return  # one node: the driver's own checks (and the data loader's messages) cover it
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    marker = experiment_path(storage, MARKER_PREFIX + token)
    _write_marker(marker, token)
    # num_cpus=0: the check must run even on a node with no CPU for trials (a CPU-only head) or with
    # every CPU taken; soft=False: on that node or not at all.
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_node)
    refs = {
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            marker, token, data_sets(spec)): n
        for n in nodes
    }
    try:
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        problems = [_on(refs[ref], f"did not answer the pre-flight check within {timeout_s:g} s") for ref in pending]
        for ref in ready:
            try:
                problem = ray.get(ref)
            except Exception as error:  # the node died or its worker could not start
                problem = f"pre-flight check failed ({' '.join(str(error).split())[:200]})"
            if problem:
                problems.append(_on(refs[ref], problem))
    finally:
        _remove_marker(marker)
    if problems:
        more = f" (and {len(problems) - 1} more node(s))" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)


def data_sets(spec: Spec) -> list[tuple[str, str, bool]]:
    """(dataset, root, download) of every trial the search can sample: the defaults and each edge of a
    `data.*` or `transfer.source.*` distribution (a search over data sets, or over roots), each data set
    its trainer reads (a transfer trial's source task beside its downstream one)."""
    trials = [spec.default_trial] + [spec.trial({path: edge}) for path, d in spec.space.items()
                                     if path.startswith(("data.", "transfer.source.")) for edge in d.extremes()]
    return sorted({(d.dataset, d.root, d.download) for t in trials for _, d in data_sections(t)})


def prepare_data_sets(spec: Spec) -> list[str]:
    """Load (downloading under each data set's file lock where allowed) every data set the search
    uses, on this machine; one line per data set. `ticketsearch data`, run by a node's set-up."""
    from ticketsearch.core.data import load_raw

    lines = []
    for dataset, root, download in data_sets(spec):
        raw = load_raw(dataset, root, download)
        lines.append(f"{dataset}: {len(raw.train_y)} training and {len(raw.test_y)} test images under "
                     f"{Path(root).expanduser()}")
    return lines


def probe_node(marker: str, token: str, datasets: list[tuple[str, str, bool]]) -> str:
    """Runs on one node: '' when it reads the marker and loads every data set, else what is wrong."""
    try:
        found = "" if _read_marker(marker) == token else "it holds another file under the marker's name"
    except Exception as error:  # FileNotFoundError for an unshared path; auth or network errors for a URI
        found = f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"
    if found:
        return (f"cannot read the checkpoint storage {_storage_of(marker)} that the driver wrote ({found}); "
                "on a cluster every node must reach it: pass --storage with a path every node mounts (NFS) "
                "or an s3:// / gs:// URI (see cluster/README.md)")
    from ticketsearch.core.data import check_raw

    for dataset, root, download in datasets:
        try:
            check_raw(dataset, root, download)
        except UserError as error:
            return f"cannot load data set {dataset}: {error}"
    return ""


def _storage_of(marker: str) -> str:
    return marker.rsplit("/", 1)[0]


def _on(node: dict[str, Any], problem: str) -> str:
    return f"node {node.get('NodeManagerAddress', '?')} (Ray node {node['NodeID'][:12]}) {problem}"


def _filesystem(location: str):
    """A pyarrow file system and the path in it, for a local path or a URI (Tune uses the same)."""
    import pyarrow.fs

    if "://" in location:
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), location


def _write_marker(marker: str, token: str) -> None:
    fs, path = _filesystem(marker)
    try:
        fs.create_dir(_storage_of(path), recursive=True)
        with fs.open_output_stream(path) as handle:
            handle.write(token.encode())
    except Exception as error:
        raise UserError(f"--storage: the driver cannot write to {_storage_of(marker)} "
                        f"({' '.join(str(error).split())[:200]}); check the path or the URI's credentials") from None


def _read_marker(marker: str) -> str:
    fs, path = _filesystem(marker)
    with fs.open_input_stream(path) as handle:
        return handle.read().decode()


def _remove_marker(marker: str) -> None:
    fs, path = _filesystem(marker)
    try:
        fs.delete_file(path)
    except Exception:  # already gone, or a store that forbids deletes: 32 bytes left behind
        pass
