"""A search on a multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`): trials spread over
nodes, a node removed mid-trial costs no epoch, pre-flight checks, and a trial out of GPU memory.

One cluster for the module: a head with no CPU for trials (it runs the driver's side only, as in
cluster/) and two workers of 1 CPU each. Every node shares this machine's filesystem, so a local
`--storage` is visible everywhere, like an NFS mount. The driver runs as `ticketsearch run --address`
in its own process, as a user runs it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ticketsearch.errors import UserError
from ticketsearch.search.driver import _saved_storage, run_search
from ticketsearch.search.preflight import data_sets, probe_node, resolve_storage
from ticketsearch.spec import load_spec

from fake_datasets import write_mnist
from search_helpers import assert_each_epoch_once, search_spec, wait_for

# A stand-in for a GPU that runs out of memory, loaded into every Ray worker through PYTHONPATH: a
# convolution with 64 or more output channels (small_cnn at width >= 0.5) raises the exception torch
# raises on a real GPU, with its message; narrower models run normally.
FAKE_OOM = '''
import os, sys
if any(arg.endswith("default_worker.py") for arg in sys.argv):  # Ray workers only, not the driver
    import torch
    _forward = torch.nn.Conv2d.forward
    def forward(self, x):
        if self.out_channels >= 64:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 15.77 GiB")
        return _forward(self, x)
    torch.nn.Conv2d.forward = forward
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(Cluster, [worker nodes]); the head and the first worker see ~/tsdata/MNIST, the second
    worker's HOME is empty (a node whose data root was never prepared)."""
    # Ray's token authentication looks for ~/.ray/auth_token, and these nodes have HOMEs of their own.
    # An embedded `ray.init()` earlier in this process (another test's search) turns token mode on for
    # the whole process when this machine has a token; the nodes must then find the same token.
    token = Path.home() / ".ray" / "auth_token"
    if token.is_file():
        os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(token))
    from ray._common.utils import reset_ray_address
    from ray.cluster_utils import Cluster

    home = tmp_path_factory.mktemp("home")
    write_mnist(home / "tsdata")
    bare = tmp_path_factory.mktemp("bare-home")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "env_vars": {"HOME": str(home)}})
    # Other Ray users on this machine (an embedded `ray.init()`) must not find and join this cluster.
    reset_ray_address()
    nodes = [cluster.add_node(num_cpus=1, env_vars={"HOME": str(h)}) for h in (home, bare)]
    try:
        yield cluster, nodes
    finally:
        cluster.shutdown()


def test_preflight_refuses_a_node_without_the_data(cluster, tmp_path):
    cluster, nodes = cluster
    spec = load_spec(search_spec(tmp_path, **{"data.dataset": "mnist", "data.root": "~/tsdata",
                                              "data.download": False, "data.val_split": 10}))
    with pytest.raises(UserError) as caught:
        run_search(spec, out=tmp_path / "out", address=cluster.address, verbose=0)
    message = str(caught.value)
    assert message.startswith(f"node {nodes[1].node_ip_address} (Ray node {nodes[1].node_id[:12]}) "
                              "cannot load data set mnist: data.root: mnist not found under ")
    assert "\n" not in message and "more node" not in message  # the head and the other workers have it


def test_a_node_lost_mid_trial_costs_no_epoch_and_trials_use_several_nodes(cluster, tmp_path):
    cluster, nodes = cluster
    spec_path = search_spec(tmp_path, **{
        "search": {"algorithm": "random", "num_samples": 2, "max_concurrent": 2, "scheduler": "fifo", "seed": 0,
                   "max_failures": 2},
        "train.epochs": 3})  # dense 3 + ticket 3 epochs per trial
    out, storage = tmp_path / "out", tmp_path / "shared-storage"
    process = subprocess.Popen(
        [sys.executable, "-m", "ticketsearch", "run", str(spec_path), "--out", str(out),
         "--address", cluster.address, "--storage", str(storage)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        # a trial two epochs into its six, on a worker: remove that worker
        def running_trial():
            try:
                epochs = pd.read_parquet(out / "epochs")
            except Exception:  # no file yet, or one appearing between listing and reading
                return None
            last = epochs.groupby("trial_id").tail(1)
            return next(iter(last[last["global_epoch"].between(2, 4)].to_dict("records")), None)

        wait_for(lambda: running_trial() is not None, 240, "a trial two epochs in")
        victim = running_trial()
        (node,) = [n for n in nodes if n.node_id == victim["node_id"]]
        before = pd.read_parquet(out / "epochs")
        cluster.remove_node(node)
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    epochs = assert_each_epoch_once(out)  # one row per (trial, global epoch), 1..n with no gap
    assert (epochs.groupby("trial_id").size() == 6).all()
    assert epochs["node_id"].nunique() >= 2, "every trial ran on one node"
    # The lost trial kept the epochs it finished on the removed node and finished them elsewhere: it
    # continued from its checkpoint (a restart from scratch would have re-reported epoch 1 elsewhere).
    lost = epochs[epochs["trial_id"] == victim["trial_id"]]
    on_removed = lost[lost["node_id"] == node.node_id]["global_epoch"].tolist()
    # The epoch it reported last before the removal may be reported again from its new node: Tune may
    # not have stored that epoch's checkpoint yet, and the trial then takes the epoch from its level's
    # progress (or trains it again). Every earlier epoch stays the removed node's.
    assert on_removed[:1] == [1] and len(on_removed) >= victim["global_epoch"] - 1
    assert (lost[lost["global_epoch"] > on_removed[-1]]["node_id"] != node.node_id).all()
    assert len(lost) > len(on_removed)
    merged = before.merge(epochs, on=["trial_id", "global_epoch"], suffixes=("_before", ""))
    settled = (merged["trial_id"] != victim["trial_id"]) | (merged["global_epoch"] < victim["global_epoch"])
    assert len(merged) == len(before) and (merged["node_id_before"] == merged["node_id"])[settled].all()
    # checkpoints went to --storage, and --resume finds them there without being told
    assert (storage / "tune").is_dir() and not (out / "ray").exists()
    assert json.loads((out / "search.json").read_text())["storage"] == str(storage)
    from ray import tune

    assert _saved_storage(out) == str(storage) and tune.Tuner.can_restore(str(storage / "tune"))


def test_a_level_trained_on_one_node_serves_a_trial_on_another(cluster, tmp_path):
    # Two pruning ratios at one learning rate share their dense round: one trial trains it on its node
    # while the other, on the other node, waits for it and takes it from the storage every node reads.
    cluster, nodes = cluster
    # Two worker nodes of one CPU each, whatever earlier tests of this module removed: the two trials
    # run at once, one on each.
    alive = [n for n in nodes if n in cluster.worker_nodes]
    added = [cluster.add_node(num_cpus=1) for _ in range(2 - len(alive))]
    spec_path = search_spec(tmp_path, **{
        "search": {"algorithm": "grid", "num_samples": 1, "max_concurrent": 2, "scheduler": "fifo", "seed": 0},
        "model.width": 0.25, "train.lr": 0.05, "prune.ratio": {"grid": [0.3, 0.7]}, "train.epochs": 2})
    out, storage = tmp_path / "out", tmp_path / "shared-storage"
    process = subprocess.run(
        [sys.executable, "-m", "ticketsearch", "run", str(spec_path), "--out", str(out),
         "--address", cluster.address, "--storage", str(storage)], capture_output=True, timeout=400)
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    epochs = assert_each_epoch_once(out)
    dense = epochs[epochs["phase"] == "dense"]
    trained, reused = dense[~dense["reused"]], dense[dense["reused"]]
    assert trained["trial_id"].nunique() == 1 and reused["trial_id"].nunique() == 1
    assert set(trained["node_id"]).isdisjoint(reused["node_id"]), "both trials ran on one node"
    assert len(list((storage / "levels").glob("dense-*/result.pt"))) == 1
    trials = pd.read_parquet(out / "trials.parquet")
    assert sorted(trials["reused_epochs"]) == [0, 2] and set(trials["status"]) == {"completed"}
    for node in added:
        cluster.remove_node(node)


def test_preflight_names_storage_a_node_cannot_read(tmp_path):
    (tmp_path / "ok").write_text("token")
    assert probe_node(str(tmp_path / "ok"), "token", []) == ""
    problem = probe_node(str(tmp_path / "driver-only" / ".ticketsearch-preflight-x"), "token", [])
    assert problem.startswith(f"cannot read the checkpoint storage {tmp_path / 'driver-only'} that the driver "
                              "wrote (FileNotFoundError") and "--storage" in problem
    with pytest.raises(UserError, match=r"--storage: 'ftp://host/x' has an unknown scheme"):
        resolve_storage("ftp://host/x", tmp_path)
    assert resolve_storage("s3://bucket/searches/", tmp_path) == "s3://bucket/searches"
    assert resolve_storage(None, tmp_path) == str(tmp_path / "ray")


def test_preflight_checks_every_data_set_a_trial_can_read():
    # The double-win search reads three downstream data sets over a grid and pre-trains on none (one-shot
    # tickets of ImageNet weights); the digits one pre-trains on a source task, which nodes need too.
    assert [d for d, _, _ in data_sets(load_spec("searches/cifar-double-win-resnet50.yaml"))] == [
        "cifar10", "cifar100", "svhn"]
    spec = load_spec("searches/digits-double-win.yaml", {"transfer.source.root": "/srv/source-data"})
    assert ("digits", "/srv/source-data", spec.default_trial.transfer.source.download) in data_sets(spec)


def test_a_trial_out_of_gpu_memory_is_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    (tmp_path / "fake-gpu").mkdir()
    (tmp_path / "fake-gpu" / "sitecustomize.py").write_text(FAKE_OOM)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake-gpu"))  # the embedded Ray's workers inherit it
    spec_path = search_spec(tmp_path, **{
        "search": {"algorithm": "grid", "num_samples": 1, "max_concurrent": 2, "scheduler": "fifo", "seed": 0,
                   "max_failures": 0},
        "model.width": {"grid": [0.25, 0.5]}, "train.lr": 0.05, "prune.ratio": 0.5, "prune.rounds": 0,
        "train.epochs": 1})
    run_search(load_spec(spec_path), out=tmp_path / "out", num_cpus=2, verbose=0, echo=lambda line: None)
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet").set_index("config.model.width")
    assert trials.loc[0.25, "status"] == "completed"
    assert trials.loc[0.5, "status"] == "error"
    assert "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB" in trials.loc[0.5, "error"]
