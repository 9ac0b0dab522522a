"""The transfer trainer: tickets of a network pre-trained in the test, carried to a held-out task.

The source task is digits 0-4, the downstream task digits 5-9 (three of them where a different class
count matters), both from scikit-learn's real digits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ticketsearch.cli import main
from ticketsearch.core.data import prepare_data
from ticketsearch.core.models import create_model
from ticketsearch.core.pretrained import fit_weights, load_weights_file
from ticketsearch.errors import UserError
from ticketsearch.results.store import load
from ticketsearch.results.tickets import load_ticket, write_ticket
from ticketsearch.spec import validate_trial
from ticketsearch.trainers import create_trainer
from ticketsearch.trainers.transfer import double_win

from tiny import tiny_config

SOURCE = {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "val_split": 100}


def transfer_tree(pretrained: dict, **transfer) -> dict:
    return {
        "name": "tinytransfer", "trainer": "transfer",
        "data": {"dataset": "digits", "classes": [5, 6, 7], "val_split": 60},
        "model": {"arch": "small_cnn", "width": 0.25},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "eval_examples": 60, "schedule": "constant"},
        "attack": {"train": {"pgd": {"eps": 0.1, "alpha": 0.05, "steps": 2}},
                   "eval": {"pgd": {"eps": 0.1, "alpha": 0.03, "steps": 5}}, "test_autoattack": False},
        "prune": {"ratio": 0.6, "rounds": 1},
        "transfer": {"pretrained": pretrained, "source": SOURCE, **transfer},
    }


def transfer_config(pretrained: dict, **values):
    tree = transfer_tree(pretrained)
    for path, value in values.items():
        section, _, key = path.partition(".")
        tree[section] = {**tree[section], key: value}
    return validate_trial(tree)


@pytest.fixture(scope="module")
def source_model(tmp_path_factory):
    """A small network trained naturally on digits 0-4 in this test, as a state-dict file and a ticket."""
    directory = tmp_path_factory.mktemp("source")
    values = {"data.classes": [0, 1, 2, 3, 4], "data.val_split": 100, "train.epochs": 3,
              "attack.train": "natural", "prune.exclude": ["classifier"]}
    dense, _ = run(tiny_config(**values, **{"prune.rounds": 0}))
    weights = directory / "pretrained.pt"
    torch.save(dense.ticket_state["weights"], weights)
    config = tiny_config(**values)
    trainer, _ = run(config)
    ticket = write_ticket(directory / "ticket", trainer.state_dict(), config, trainer.summary())
    return {"file": str(weights), "ticket": str(ticket), "config": config}


def run(config, **kwargs):
    trainer = create_trainer(config, **kwargs)
    records = list(trainer)
    return trainer, records


def test_masks_stay_exact_and_the_classifier_is_new(source_model):
    trainer, records = run(transfer_config({"file": source_model["file"]}))
    # The dense network fine-tuned under each regime (the ticket's reference), then the ticket.
    assert [(r.role, r.phase) for r in records] == [("reference", "finetune_standard"),
                                                    ("reference", "finetune_adversarial"),
                                                    ("ticket", "finetune_standard"), ("ticket", "finetune_adversarial")]
    assert [r.global_epoch for r in records] == [1, 2, 3, 4] and records[0].sparsity == 0 < records[2].sparsity
    assert trainer.model.classifier.out_features == 3  # digits 5, 6, 7; the source had 5 classes
    assert all(name.endswith("weight") and trainer.weights[name].dim() == 4 for name in trainer.mask.tensors)
    assert trainer.sparsity == pytest.approx(0.6, abs=1e-3)
    for name, mask in trainer.mask.tensors.items():
        pruned = mask == 0
        assert pruned.any()
        assert (trainer.model.state_dict()[name][pruned] == 0).all()  # after the last optimiser step
        assert (trainer.ticket_state["weights"][name][pruned.cpu()] == 0).all()
    # The unpruned pre-trained weights are where fine-tuning started.
    start = load_weights_file(source_model["file"], "test")
    name = next(iter(trainer.mask.tensors))
    kept = trainer.mask.tensors[name].bool()
    assert torch.equal(trainer.init_state[name][kept], start[name][kept])


def test_ticket_sources(source_model):
    oneshot, _ = run(transfer_config({"file": source_model["file"]}))
    random, _ = run(transfer_config({"file": source_model["file"]}, **{"transfer.ticket": "random"}))
    for name, mask in oneshot.mask.tensors.items():  # the control keeps every layer's count
        assert int(mask.sum()) == int(random.mask.tensors[name].sum())
    assert any(not torch.equal(m, random.mask.tensors[n]) for n, m in oneshot.mask.tensors.items())
    # One-shot keeps the largest pre-trained magnitudes.
    start = load_weights_file(source_model["file"], "test")
    flat = torch.cat([start[n].abs().flatten() for n in oneshot.mask.tensors])
    kept = torch.cat([m.flatten().bool() for m in oneshot.mask.tensors.values()])
    assert flat[kept].min() >= flat[~kept].max()

    files = transfer_config({"file": source_model["file"]}, **{"transfer.ticket": "files",
                                                               "transfer.ticket_dir": source_model["ticket"]})
    trainer, _ = run(files)
    saved = torch.load(f"{source_model['ticket']}/mask.pt", weights_only=True)
    assert set(trainer.mask.tensors) == set(saved) - {"body.classifier.weight"}
    for name, mask in trainer.mask.tensors.items():
        assert torch.equal(mask.bool().cpu(), saved[name])


def test_imp_on_the_source_rewinds_to_the_pretrained_weights(source_model, tmp_path):
    config = transfer_config({"file": source_model["file"]},
                             **{"transfer.ticket": "imp", "prune.rounds": 2, "prune.find_epochs": 1})
    trainer, _ = run(config, levels_dir=tmp_path)
    assert trainer.sparsity == pytest.approx(1 - 0.4 ** 2, abs=1e-3)
    summary = trainer.summary()
    assert summary["find_seconds"] > 0 and not summary["imp_reused"]
    assert 0 <= summary["source_val_clean_acc"] <= 1
    again, _ = run(config, levels_dir=tmp_path)
    assert again.summary()["imp_reused"]
    assert all(torch.equal(m, again.mask.tensors[n]) for n, m in trainer.mask.tensors.items())


def test_imp_paths_of_different_depths_share_their_common_rounds(source_model, tmp_path):
    def imp(rounds, cache_dir):
        config = transfer_config({"file": source_model["file"]},
                                 **{"transfer.ticket": "imp", "prune.rounds": rounds, "prune.find_epochs": 1})
        return run(config, levels_dir=cache_dir)[0]

    alone = imp(3, None)  # no cache: every round computed in this trial
    one = imp(1, tmp_path)
    three = imp(3, tmp_path)
    assert three.summary()["imp_rounds_reused"] == 1 and not three.summary()["imp_reused"]
    assert all(torch.equal(m, alone.mask.tensors[n]) for n, m in three.mask.tensors.items())
    two = imp(2, tmp_path)  # wholly inside the 3-round path
    assert two.summary()["imp_reused"] and two.summary()["imp_rounds_reused"] == 2
    assert two.sparsity == pytest.approx(1 - 0.4 ** 2, abs=1e-3) and one.sparsity == pytest.approx(0.6, abs=1e-3)
    assert all(bool((three.mask.tensors[n] <= m).all()) for n, m in two.mask.tensors.items())  # nested masks


def test_dense_baseline_is_computed_once_for_a_shared_setting(source_model, tmp_path):
    first, _ = run(transfer_config({"file": source_model["file"]}), levels_dir=tmp_path)
    second, _ = run(transfer_config({"file": source_model["file"]}, **{"prune.ratio": 0.8}), levels_dir=tmp_path)
    assert not first.summary()["dense_reused"] and second.summary()["dense_reused"]
    dense = lambda trainer: {s.level.name for s in trainer.plan if s.role == "reference"}  # noqa: E731
    assert dense(first) == dense(second) and len(dense(first)) == 2  # one level per fine-tuning regime
    assert first.dense_results == second.dense_results
    other_lr, _ = run(transfer_config({"file": source_model["file"]}, **{"train.lr": 0.02}), levels_dir=tmp_path)
    assert not other_lr.summary()["dense_reused"]  # another fine-tuning lr is another dense setting
    assert not dense(other_lr) & dense(first)


def test_double_win_verdict_follows_the_numbers(source_model):
    dense = {"standard": {"test_clean_acc": 0.90, "test_robust_acc": 0.10},
             "adversarial": {"test_clean_acc": 0.80, "test_robust_acc": 0.50}}
    close = {"standard": {"test_clean_acc": 0.895, "test_robust_acc": 0.12},
             "adversarial": {"test_clean_acc": 0.81, "test_robust_acc": 0.495}}
    assert double_win(close, dense, 0.01, "test") == (True, pytest.approx(0.005))
    far = {**close, "adversarial": {"test_clean_acc": 0.81, "test_robust_acc": 0.45}}
    assert double_win(far, dense, 0.01, "test") == (False, pytest.approx(-0.04))
    assert double_win(far, dense, 0.06, "test")[0]

    trainer, _ = run(transfer_config({"file": source_model["file"]}))
    s = trainer.summary()
    gaps = [s[f"{r}_test_{k}_acc"] - s[f"dense_{r}_test_{k}_acc"] for r in ("standard", "adversarial")
            for k in ("clean", "robust")]
    assert s["double_win_test_margin"] == pytest.approx(min(gaps) + 0.01)
    assert s["double_win"] == (min(gaps) >= -0.01)
    assert s["double_win_split"] == "test"


def test_fractions_are_exact_and_stratified():
    full = prepare_data("digits", "~/data", val_split=60, fraction=1.0, classes=[5, 6, 7])
    tenth = prepare_data("digits", "~/data", val_split=60, fraction=0.1, classes=[5, 6, 7])
    assert sorted(full.train_y.unique().tolist()) == [0, 1, 2]  # relabelled in the order given
    assert len(tenth.train_y) == round(0.1 * len(full.train_y))
    counts, full_counts = torch.bincount(tenth.train_y), torch.bincount(full.train_y)
    assert ((counts - 0.1 * full_counts).abs() <= 1).all()
    assert torch.equal(tenth.val_y, full.val_y)  # validation does not depend on the fraction
    with pytest.raises(UserError, match="data.fraction: .* leaves class"):
        prepare_data("digits", "~/data", val_split=60, fraction=0.005, classes=[5, 6, 7])


def test_resume_continues_with_the_same_records(source_model):
    config = transfer_config({"file": source_model["file"]}, **{"train.epochs": 2})
    whole, records = run(config)
    first = create_trainer(config)
    head = [first.next_record() for _ in range(3)]
    resumed = create_trainer(config, state=first.state_dict())
    tail = list(resumed)
    strip = lambda rs: [{k: v for k, v in r.as_dict().items() if "second" not in k} for r in rs]
    assert strip(head + tail) == strip(records)
    assert resumed.summary()["double_win_margin"] == pytest.approx(whole.summary()["double_win_margin"])


def test_torchvision_layout_and_bad_weights(tmp_path, source_model):
    import torchvision

    reference = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)  # the layout torchvision publishes its weights in
    state = load_weights_file(path, "transfer.pretrained.file")
    model = create_model("resnet18", width=1, num_classes=10, in_channels=3, mean=(0, 0, 0), std=(1, 1, 1),
                         input_size=32)
    fit_weights(model, state, str(path), "resnet18")
    x = torch.rand(2, 3, 32, 32)
    reference.eval(), model.eval()
    normalized = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(model(x), reference(normalized), atol=1e-5)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)  # grey 8x8 digits into an RGB network

    with pytest.raises(UserError, match="does not fit model.arch small_cnn"):
        run(transfer_config({"file": str(path)}))
    with pytest.raises(UserError, match="no such file|does not exist"):
        run(transfer_config({"file": str(tmp_path / "missing.pt")}))
    (tmp_path / "foreign.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable torch file"):
        load_weights_file(tmp_path / "foreign.pt", "transfer.pretrained.file")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match="holds no state dict"):
        load_weights_file(tmp_path / "list.pt", "transfer.pretrained.file")
    import shutil

    wider = tmp_path / "wider-ticket"  # a ticket of another width than the pre-trained network here
    shutil.copytree(source_model["ticket"], wider)
    manifest = json.loads((wider / "manifest.json").read_text())
    manifest["model"]["width"] = 0.5
    (wider / "manifest.json").write_text(json.dumps(manifest))
    config = transfer_config({"file": source_model["file"]}, **{"transfer.ticket": "files", "transfer.ticket_dir": str(wider)})
    with pytest.raises(UserError, match="transfer.ticket_dir: the ticket is small_cnn width 0.5 .*width 0.25"):
        run(config)


def test_transferred_ticket_files_reload(source_model, tmp_path):
    config = transfer_config({"file": source_model["file"]})
    trainer, _ = run(config)
    directory = write_ticket(tmp_path / "t", trainer.state_dict(), config, trainer.summary())
    model, mask, manifest = load_ticket(directory)
    assert manifest["in_channels"] == 1 and model.classifier.out_features == 3
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trainer.ticket_state["weights"][name].cpu())


def test_bad_transfer_specs_give_one_line(tmp_path, capsys, source_model):
    cases = [
        ({"file": source_model["file"]}, {"source": {**SOURCE, "classes": [0, 12]}},
         "data.classes: 12 is not a class of digits"),
        ({"file": str(tmp_path / "nope.pt")}, {}, "transfer.pretrained.file: "),
        ({"file": source_model["file"], "torchvision": "IMAGENET1K_V1"}, {}, "give exactly one of"),
        ({"file": source_model["file"]}, {"ticket": "files"}, "transfer.ticket_dir"),
        ({"file": source_model["file"]}, {"finetune": ["sideways"]}, "transfer.finetune"),
    ]
    for pretrained, transfer, message in cases:
        tree = transfer_tree(pretrained, **transfer)
        path = tmp_path / "bad.yaml"
        path.write_text(json.dumps(tree))
        assert main(["validate", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_offline_transfer_search_end_to_end(tmp_path):
    out = tmp_path / "run"
    spec = Path(__file__).parent.parent / "searches" / "digits-double-win.yaml"
    code = main(["run", str(spec), "--out", str(out), "--num-cpus", "2",
                 "--set", "train.epochs=1", "--set", "train.lr=0.05", "--set", "prune.rounds={grid: [1, 2]}",
                 "--set", "prune.find_epochs=1", "--set", "transfer.pretrained.pretrain.epochs=2",
                 "--set", "attack.eval.pgd.steps=5", "--set", "train.eval_examples=60"])
    assert code == 0
    trials = pd.read_parquet(out / "trials.parquet")
    epochs = pd.read_parquet(out / "epochs")
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert trials["double_win"].dtype == bool
    assert sorted(trials["config.data.fraction"]) == [0.1, 0.1, 1.0, 1.0]
    # One dense fine-tuning per fraction and regime, trained once and shared by the two sparsities (a
    # trial waiting on one regime's level trains the other's); one pre-training for all.
    dense = epochs[epochs["role"] == "reference"]
    assert dense.groupby("level")["reused"].apply(lambda reused: (~reused).sum()).eq(1).all()
    references = {level for level in epochs.loc[epochs["role"] == "reference", "level"]}
    assert len(references) == 2 * 2 and len(list((out / "levels").glob("pretrain-*/result.pt"))) == 1
    # One IMP path of 2 rounds for all four trials: of their 1 + 2 + 1 + 2 rounds, only 2 were computed.
    assert len(list((out / "levels").glob("source_round-*/result.pt"))) == 2 and trials["imp_rounds_reused"].sum() == 4
    ticket = epochs[epochs["role"] == "ticket"]
    assert len(ticket) == 4 * 2 and set(ticket["phase"]) == {"finetune_standard", "finetune_adversarial"}
    assert trials["objective"].equals(trials["double_win_margin"])
    # Each trial's dense baseline, epoch by epoch beside its own: the same phases and epochs, and the
    # trials sharing a baseline carry the same numbers.
    dense = load(out).dense_epochs
    assert sorted(dense["trial_id"].unique()) == sorted(trials["trial_id"])
    assert (dense.groupby("trial_id").size() == 2).all() and set(dense["phase"]) == set(ticket["phase"])
    assert dense["sparsity"].eq(0).all() and not ticket["sparsity"].eq(0).any()
    shared = dense.merge(trials[["trial_id", "config.data.fraction"]], on="trial_id")
    assert (shared.groupby(["config.data.fraction", "phase"])["val_robust_acc"].nunique() == 1).all()
    for trial_id in trials["trial_id"]:
        tags = EventAccumulator(str(out / "tensorboard" / trial_id)).Reload().Tags()["scalars"]
        assert "val/robust_acc" in tags and "reference/val/robust_acc" in tags
    assert main(["report", str(out)]) == 0
    report = (out / "report" / "report.md").read_text()
    assert "Double-win" in report
    # the convergence plot shows the fine-tuning curves against the dense baseline's
    assert "![Convergence of the best tickets](curves.png)" in report and "per fine-tuning epoch" in report
    assert (out / "report" / "curves.png").stat().st_size > 10_000


def test_train_writes_the_dense_baseline_beside_the_trial(source_model, tmp_path):
    """`ticketsearch train` on a transfer spec: the dense baseline's epochs among the trial's (role
    reference) and in the trial's TensorBoard run under reference/."""
    import yaml

    spec = tmp_path / "transfer.yaml"
    spec.write_text(yaml.safe_dump(transfer_tree({"file": source_model["file"]})))
    out = tmp_path / "trial"
    assert main(["train", str(spec), "--out", str(out), "--device", "cpu"]) == 0
    results = load(out)
    ticket = results.epochs[results.epochs["role"] == "ticket"]
    assert len(results.dense_epochs) == len(ticket) == 2  # one epoch per fine-tuning regime
    assert list(results.dense_epochs["phase"]) == list(ticket["phase"])
    assert results.dense_epochs["sparsity"].eq(0).all() and ticket["sparsity"].gt(0).all()
    run_dir = next((out / "tensorboard").iterdir())
    assert "reference/val/robust_acc" in EventAccumulator(str(run_dir)).Reload().Tags()["scalars"]
