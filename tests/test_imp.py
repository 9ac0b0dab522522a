import math

import pytest
import torch

from ticketsearch.core.checkpoint import load_state, save_state
from ticketsearch.core.data import prepare_data
from ticketsearch.errors import UserError
from ticketsearch.records import objective_value
from ticketsearch.trainers import create_trainer
from ticketsearch.trainers.imp import plan_levels

from tiny import tiny_config

TIMING = {"epoch_seconds", "eval_seconds", "examples_per_second"}


@pytest.fixture(scope="module")
def digits():
    return prepare_data("digits", "~/data", val_split=200, fraction=1.0)


def comparable(records):
    """Records without wall-clock fields, NaN as None so that equal records compare equal."""
    return [{k: None if v != v else v for k, v in r.as_dict().items() if k not in TIMING} for r in records]


def test_imp_on_digits_learns_and_prunes_to_the_expected_sparsity(digits):
    config = tiny_config(**{"prune.rounds": 2, "prune.ratio": 0.5, "train.epochs": 3,
                            "train.lr": 0.05, "train.schedule": "cosine", "model.width": 0.5})
    trainer = create_trainer(config, digits)
    records = list(trainer)
    assert trainer.status == "completed"
    assert [(r.round, r.phase) for r in records] == [(0, "dense")] * 3 + [(1, "find")] * 3 + [(2, "ticket")] * 3
    assert [r.global_epoch for r in records] == list(range(1, 10))
    prunable = sum(layer.weights for layer in trainer.sparsity_report())
    for r in records:
        # 1-(1-p)^R up to rounding (one weight)
        assert r.sparsity == pytest.approx(1 - 0.5**r.round, abs=1 / prunable)
    final = records[-1]
    assert final.val_clean_acc > 0.6, "an adversarially trained ticket on digits is far above chance (0.1)"
    assert 0 < final.val_robust_acc <= final.val_clean_acc
    summary = trainer.summary()
    assert summary["final_sparsity"] == pytest.approx(0.75, abs=1 / prunable)
    assert 0.5 < summary["test_clean_acc"] <= 1 and summary["test_robust_acc"] <= summary["test_clean_acc"]
    assert summary["robust_auc"] == pytest.approx(sum(r.val_robust_acc for r in records[-3:]) / 3)
    # the dense round trains under the same regime, so it is the convergence reference
    assert summary["target_robust_acc"] == pytest.approx(sum(r.val_robust_acc for r in records[:3]) / 3)  # smoothed
    assert summary["find_seconds"] == pytest.approx(sum(r.epoch_seconds for r in records[:6]))
    # Cost in example-passes: PGD-2 training is 3 passes an example (2 attack steps and the update).
    examples = (digits.train_x.shape[0] // 64) * 64
    assert all(r.passes == 3 * examples for r in records)
    assert summary["trained_epochs"] == 9 and summary["reused_epochs"] == 0 and not any(r.reused for r in records)


def test_find_regime_differs_adds_the_dense_baseline_under_the_final_regime(digits):
    # lr 0.2: one epoch takes the reference above chance (at lr 0.05 it ends at 15% robust: no verdict)
    config = tiny_config(**{"prune.find_with": {"fgsm": {"eps": 0.1}}, "train.epochs": 1, "train.lr": 0.2})
    assert [(s.round, s.phase, s.level.recipe.regime.kind) for s in plan_levels(config)] == [
        (0, "dense", "fgsm"), (0, "baseline", "pgd"), (1, "ticket", "pgd")]
    trainer = create_trainer(config, digits)
    records = list(trainer)
    dense, baseline, ticket = records
    assert dense.guard_robust_acc == dense.guard_robust_acc  # the FGSM guard ran
    assert math.isnan(ticket.guard_robust_acc)  # and not under PGD
    summary = trainer.summary()
    assert summary["target_robust_acc"] == baseline.val_robust_acc
    assert summary["final_sparsity"] == pytest.approx(0.5, abs=1e-3)  # the ticket's, not the baseline's
    assert summary["find_seconds"] == dense.epoch_seconds and summary["find_passes"] == dense.passes
    assert ticket.convergence_gap == pytest.approx(ticket.val_robust_acc - baseline.val_robust_acc)
    # The objective (`run` and `train` alike) follows the path, never the reference's records.
    for metric in ("robust_auc", "val_robust_acc", "train_loss", "convergence_gap"):
        assert objective_value(metric, records, summary) == getattr(ticket, metric)
        assert objective_value(metric, records[:2], None) == pytest.approx(getattr(dense, metric), nan_ok=True)
    assert objective_value("speedup", records, summary) == pytest.approx(summary["speedup"]) or \
        not summary["reached_target"]
    assert math.isnan(objective_value("speedup", records, None))  # trial-level: unknown while it runs


def test_rewinding_restores_exact_surviving_values(digits):
    for rewind in (0, 1):
        config = tiny_config(**{"prune.rewind": rewind, "train.epochs": 2, "trainer.dense_baseline": False})
        trainer = create_trainer(config, digits)
        trainer.next_record()
        trainer.next_record()  # end of round 0
        dense = trainer.results[trainer.plan[0].level.name]
        saved = dense["rewind"] if rewind else trainer.init_state
        assert (dense["rewind"] is None) == (rewind == 0)
        run = trainer._start(trainer.plan[1])  # round 1: prune by magnitude, then rewind the survivors
        assert 0 < run.mask.sparsity() < 1
        assert run.epoch == rewind and run.step == rewind * run.steps_per_epoch
        params = dict(trainer.model.named_parameters())
        trained = dense["weights"]
        for name, keep in run.mask.tensors.items():
            alive = keep.bool()
            assert torch.equal(params[name][alive], saved[name][alive])
            assert bool((params[name][~alive] == 0).all())
            assert not torch.equal(params[name], trained[name])
            # the pruned weights are those of smallest magnitude in the trained dense network (global scope)
        flat_alive = torch.cat([trained[n][m.bool()].abs() for n, m in run.mask.tensors.items()])
        flat_dead = torch.cat([trained[n][~m.bool()].abs() for n, m in run.mask.tensors.items()])
        assert flat_dead.max() <= flat_alive.min()


def test_late_rewinding_continues_the_schedule_from_epoch_k(digits):
    config = tiny_config(**{"prune.rewind": 1, "train.epochs": 3, "train.schedule": "cosine",
                            "trainer.dense_baseline": False})
    records = list(create_trainer(config, digits))
    dense = [r for r in records if r.phase == "dense"]
    ticket = [r for r in records if r.phase == "ticket"]
    assert [r.epoch for r in ticket] == [2, 3]  # epochs k+1..E of the same schedule
    assert [r.lr for r in ticket] == pytest.approx([r.lr for r in dense[1:]])


def test_controls_change_only_the_final_ticket(digits):
    """reinit: the IMP ticket's final mask with a fresh initialisation; random_mask: a random mask with
    its per-layer counts. Finding rounds are ordinary IMP, shared with the IMP trial."""
    base = {"train.epochs": 1, "prune.rounds": 2, "trainer.dense_baseline": False}
    plain = create_trainer(tiny_config(**base), digits)
    list(plain)
    ticket = plain.ticket_state["mask"]
    for control in ("reinit", "random_mask"):
        trainer = create_trainer(tiny_config(**base, **{"prune.control": control}), digits)
        list(trainer)
        assert [s.level.digest for s in trainer.plan[:2]] == [s.level.digest for s in plain.plan[:2]]
        mask = trainer.ticket_state["mask"]
        assert [int(m.sum()) for m in mask.values()] == [int(m.sum()) for m in ticket.values()]
        same = all(torch.equal(a, b) for a, b in zip(mask.values(), ticket.values()))
        assert same == (control == "reinit")
        assert trainer.records[-1].sparsity == plain.records[-1].sparsity


def test_resume_gives_the_same_records_as_an_uninterrupted_run(digits, tmp_path):
    config = tiny_config(**{"prune.find_with": {"fgsm": {"eps": 0.1}}, "train.epochs": 2,
                            "prune.rewind": 1, "train.schedule": "cosine"})
    straight = create_trainer(config, digits)
    expected = list(straight)
    for stop_after in (1, 2, 5):  # mid-round, at a round boundary, during the baseline
        first = create_trainer(config, digits)
        for _ in range(stop_after):
            first.next_record()
        save_state(first.state_dict(), tmp_path / "state.pt")
        del first
        resumed = create_trainer(config, digits, state=load_state(tmp_path / "state.pt", config.content_hash()))
        list(resumed)
        assert comparable(resumed.records) == comparable(expected), f"stopped after {stop_after}"
        tests = lambda t: {k: v for k, v in t.summary().items() if "test_" in k}  # noqa: E731
        assert tests(resumed) == tests(straight) and tests(straight)["test_robust_acc"] >= 0


def test_same_config_and_seed_reproduce(digits):
    config = tiny_config(**{"prune.rounds": 0, "train.epochs": 1})
    a, b = create_trainer(config, digits), create_trainer(config, digits)
    assert comparable(list(a)) == comparable(list(b))
    other = create_trainer(tiny_config(**{"prune.rounds": 0, "train.epochs": 1, "train.seed": 1}), digits)
    assert comparable(list(other)) != comparable(a.records)


def test_nan_loss_ends_the_trial_as_diverged(digits):
    config = tiny_config(**{"train.lr": 1e12, "attack.train": "natural", "train.epochs": 3})
    trainer = create_trainer(config, digits)
    records = list(trainer)
    assert trainer.status == "diverged"
    assert len(records) < 6 and math.isnan(records[-1].train_loss)
    assert trainer.summary()["status"] == "diverged"


def test_checkpoint_errors(tmp_path, digits):
    config = tiny_config()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="corrupt.pt: not a readable torch file"):
        load_state(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(UserError, match="not a ticketsearch trial state"):
        load_state(foreign)
    trainer = create_trainer(config, digits)
    save_state(trainer.state_dict(), tmp_path / "ok.pt")
    with pytest.raises(UserError, match="not this trial's"):
        load_state(tmp_path / "ok.pt", tiny_config(**{"train.lr": 0.3}).content_hash())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "ok.pt").read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated.pt"):
        load_state(truncated)


def test_the_best_checkpoint_is_kept_and_tested_as_those_weights(digits):
    from ticketsearch.trainers.engine import evaluate_test_split

    config = tiny_config(**{"train.epochs": 4, "trainer.keep": "best", "trainer.dense_baseline": False,
                            "train.lr": 0.2})
    trainer = create_trainer(config, digits)
    list(trainer)
    ticket = [r for r in trainer.records if r.phase == "ticket"]
    best = max(ticket, key=lambda r: r.val_robust_acc)  # the first of equals, as the engine keeps it
    summary = trainer.summary()
    assert summary["best_epoch"] == best.epoch
    trainer.model.load_state_dict(trainer.ticket_state["weights"])  # keep: best -> the ticket files hold them
    again = evaluate_test_split(trainer.model, trainer.data, config, "best_test_")
    assert {k: summary[k] for k in again} == again


def test_patience_ends_a_round_that_stops_improving(digits):
    config = tiny_config(**{"train.epochs": 8, "train.patience": 1, "train.lr": 0.5, "prune.rounds": 0})
    records = list(create_trainer(config, digits))
    robust = [r.val_robust_acc for r in records]
    gains = [robust[i] > max(robust[:i]) for i in range(1, len(robust))]
    assert len(records) < 8, robust  # patience ended the round early
    assert all(gains[:-1]) and not gains[-1], robust  # at its first epoch without a gain, not before
