"""Certification in trials: the certify section, certified training regimes through the trainer, the
certified columns of trials.parquet, val_certified_acc per epoch and the report's table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.certify import certified_accuracy
from ticketsearch.core.data import prepare_data
from ticketsearch.core.loops import Augmentation, train_epoch
from ticketsearch.core.models import create_model
from ticketsearch.core.training_objectives import certified, objective_for
from ticketsearch.errors import UserError
from ticketsearch.records import SUMMARY_DEFAULTS, TEST_COLUMNS, objective_value
from ticketsearch.results.certified import certified_section
from ticketsearch.results.trials_table import follow, new_row
from ticketsearch.spec import AttackConfig
from ticketsearch.trainers import check_config, create_trainer, summary_defaults
from ticketsearch.trainers.engine import evaluate_test_split, passes_per_example
from ticketsearch.trainers.level_spec import Evaluation

from tiny import tiny_config

CERTIFIED = {"model.arch": "cnn_4layer", "model.width": 0.5, "model.depth": None, "prune.exclude": [],
             "train.lr": 0.05, "train.epochs": 5, "train.test_examples": 300,
             "attack.train": {"ibp": {"eps": 0.1}},
             "certify": {"method": "crown", "eps": 0.1, "every_epoch": True},
             "objective": {"metric": "val_certified_acc"}}


@pytest.fixture(scope="module")
def trained():
    """A 50% ticket of cnn_4layer and its dense reference, both IBP-trained at eps 0.1 on digits (5 epochs
    each, eps ramped over the middle half), certified by CROWN on 300 test images."""
    config = tiny_config(**CERTIFIED)
    check_config(config)
    trainer = create_trainer(config)
    records = list(trainer)
    return config, trainer, records, trainer.summary()


def test_ibp_training_through_the_trainer_certifies_well_above_chance(trained):
    config, trainer, records, summary = trained
    assert trainer.status == "completed" and [r.phase for r in records] == ["dense"] * 5 + ["ticket"] * 5
    assert summary["test_certified_acc"] > 0.3, summary  # chance is 0.1
    assert summary["reference_test_certified_acc"] > 0.2, summary
    assert summary["test_certified_examples"] == 300 and summary["reference_test_certified_examples"] == 300
    # Certified training's accuracy is the worst case's: 0 at full eps before training, rising with it.
    assert all(r.regime == "ibp eps=25.5/255" for r in records)
    assert records[-1].train_acc > 0.2


def test_certified_below_pgd_robust_below_clean_per_ticket(trained):
    _, _, records, summary = trained
    for prefix in ("test_", "best_test_", "reference_test_", "reference_best_test_"):
        clean, robust, certified_ = (summary[f"{prefix}{k}_acc"] for k in ("clean", "robust", "certified"))
        assert 0 < certified_ <= robust <= clean, (prefix, certified_, robust, clean)
    for record in records:  # per epoch: IBP at the same eps as the validation attack, on the same images
        assert record.val_certified_acc <= record.val_robust_acc <= record.val_clean_acc
    assert records[-1].val_certified_acc > 0.2


def test_certified_columns_have_one_home_and_one_schema(trained):
    config, trainer, records, summary = trained
    defaults = summary_defaults(config)
    assert {"test_certified_acc", "best_test_certified_acc", "reference_test_certified_acc"} <= set(defaults)
    assert defaults["certify_method"] == "crown" and defaults["certify_eps"] == pytest.approx(0.1)
    plain = summary_defaults(tiny_config())
    assert set(plain) == set(defaults) and plain["certify_method"] == "" and math.isnan(plain["certify_eps"])
    assert all(math.isnan(SUMMARY_DEFAULTS[c]) for c in TEST_COLUMNS if "certified" in c)
    # A trials.parquet row: born with the columns, filled by the trainer's summary.
    row = new_row("t", config, defaults)
    assert math.isnan(row["test_certified_acc"]) and row["certify_method"] == "crown"
    row = follow(row, records, summary)
    assert row["test_certified_acc"] == summary["test_certified_acc"] and row["certify_eps"] == pytest.approx(0.1)
    # The objective reads the per-epoch figure of the trial's own path.
    assert objective_value("val_certified_acc", records, summary) == records[-1].val_certified_acc
    # A trial without the section has no certified figure, and its levels keep their names.
    model = trainer.model
    without = evaluate_test_split(model, trainer.data, tiny_config(**{**CERTIFIED, "certify": None,
                                                                      "objective": {"metric": "robust_auc"}}))
    assert not any("certified" in key for key in without)
    assert Evaluation.of(tiny_config()).certified_eps is None and Evaluation.of(config).certified_eps == config.certify.eps


def test_certified_passes_follow_the_schedule():
    ibp = AttackConfig(kind="ibp", eps=0.1, warmup=0.2, ramp=0.4)
    assert passes_per_example(ibp, 0.0, 0.2) == pytest.approx(1)  # clean warm-up steps
    assert passes_per_example(ibp, 0.2, 1.0) == pytest.approx(3)  # a clean pass and the bounds' (~2)
    assert passes_per_example(ibp) == pytest.approx(0.2 * 1 + 0.8 * 3)
    crown_ibp = AttackConfig(kind="crown_ibp", eps=0.1, warmup=0.2, ramp=0.4)
    assert passes_per_example(crown_ibp, 0.2, 0.6) == pytest.approx(15)  # while beta > 0
    assert passes_per_example(crown_ibp, 0.6, 1.0) == pytest.approx(3)  # beta 0: IBP alone
    assert passes_per_example(AttackConfig(kind="pgd", eps=0.1, steps=10), 0.3, 0.4) == 11


@pytest.fixture(scope="module")
def digits():
    return prepare_data("digits", "~/data", val_split=200, fraction=1.0)


@pytest.mark.parametrize("kind", ["ibp", "crown_ibp"])
def test_certified_objective_ramps_with_the_rounds_progress(digits, kind):
    torch.manual_seed(0)
    info = digits.info
    net = create_model("cnn_4layer", width=0.25, num_classes=10, in_channels=1, mean=info.mean, std=info.std)
    attack = build_attack(net, AttackConfig(kind=kind, eps=0.1, warmup=0.25, ramp=0.5), 10, "attack.train")
    assert objective_for(attack) is certified
    x, y = digits.train_x[:64].float() / 255, digits.train_y[:64]
    clean, logits = certified(net, attack, x, y, progress=0.1)  # the warm-up: plain cross-entropy
    torch.testing.assert_close(clean, F.cross_entropy(net(x), y))
    middle, _ = certified(net, attack, x, y, progress=0.5)
    full, worst = certified(net, attack, x, y, progress=1.0)
    assert clean < middle < full
    # The worst case's logits: the true class at 0, argmax = the label only where certified.
    assert torch.equal(worst.gather(1, y[:, None]).squeeze(1), torch.zeros(64))
    certified_share = float((worst.argmax(1) == y).float().mean())
    assert certified_share == pytest.approx(certified_accuracy(net, x, y, 0.1, "ibp"), abs=1 / 64)
    # train_epoch gives the objective the round's progress (first_step of round_steps).
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the loss is the schedule's alone
    kwargs = dict(batch_size=64, attack=attack, after_step=lambda: None, lr_for_step=lambda step: 0.0,
                  augmentation=Augmentation(0, False), augment_generator=None)
    images, labels = digits.train_x[:64], digits.train_y[:64]
    early = train_epoch(net, optimizer, images, labels, first_step=1, round_steps=10,
                        shuffle=torch.Generator().manual_seed(0), **kwargs)
    late = train_epoch(net, optimizer, images, labels, first_step=9, round_steps=10,
                       shuffle=torch.Generator().manual_seed(0), **kwargs)
    assert early.loss == pytest.approx(float(clean.detach()), rel=1e-4) and late.loss > early.loss


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("values", "message"), [
    ({"model.arch": "resnet20", "certify": {"method": "crown", "eps": 0.1}},
     r"^certify\.method: CROWN bounds feed-forward networks only; .* method='ibp' supports it$"),
    ({"model.arch": "resnet20", "attack.train": {"crown_ibp": {"eps": 0.1}}},
     r"^attack\.train\.kind: CROWN bounds feed-forward networks only; .* kind ibp supports it$"),
    ({"model.input_size": 16, "prune.find_with": {"ibp": {"eps": 0.1}}},
     r"^prune\.find_with\.kind: model\.input_size resizes images inside the model"),
    ({"objective": {"metric": "val_certified_acc"}, "certify": {"eps": 0.1}},
     r"^objective\.metric: val_certified_acc is computed with certify: \{eps: \.\.\., every_epoch: true\} only$"),
])
def test_a_model_or_objective_certification_cannot_serve_is_refused_before_a_trial(values, message):
    with pytest.raises(UserError, match=message) as info:
        check_config(tiny_config(**{"prune.exclude": [], **values}))
    assert "\n" not in str(info.value)


def test_ibp_on_a_residual_net_is_accepted():
    check_config(tiny_config(**{"model.arch": "resnet20", "prune.exclude": [],
                                "attack.train": {"ibp": {"eps": 0.1}}, "certify": {"eps": 0.1, "every_epoch": True}}))


@pytest.mark.parametrize(("values", "message"), [
    ({"attack.eval": {"ibp": {"eps": 0.1}}}, "eval: ibp is a certified training regime"),
    ({"attack.train": {"pgd": {"eps": 0.1, "warmup": 0.1}}}, "warmup: only ibp and crown_ibp have an eps schedule"),
    ({"attack.train": {"ibp": {"eps": 0.1, "warmup": 0.6, "ramp": 0.6}}}, "past the round's end"),
    ({"certify": {"method": "ibp"}}, "certify.eps"),
    ({"certify": {"method": "lp", "eps": 0.1}}, "certify.method"),
])
def test_bad_certify_and_regime_fields_are_refused(values, message):
    with pytest.raises(Exception, match=message):
        tiny_config(**values)


# -------------------------------------------------------------------------------------------- report


def test_report_table_of_certified_accuracy_by_sparsity():
    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c"], "status": ["completed", "completed", "running"],
        "final_sparsity": [0.75, 0.5, 0.2], "test_certified_acc": [0.61, 0.52, math.nan],
        "test_robust_acc": [0.7, 0.66, math.nan], "test_clean_acc": [0.9, 0.91, math.nan],
        "test_certified_examples": [300.0, 300.0, math.nan], "reference_test_certified_acc": [0.5, 0.5, math.nan],
        "certify_method": ["crown"] * 3, "certify_eps": [0.1] * 3})
    lines = certified_section(trials)
    rows = [line for line in lines if line.startswith("| `")]
    assert lines[1] == "## Certified accuracy against sparsity" and "crown at eps 0.1 (25.5/255)" in lines[3]
    assert rows == ["| `b` | 50.0% | 52.0% | 66.0% | 91.0% | 300 | 50.0% | +2.0 points |",
                    "| `a` | 75.0% | 61.0% | 70.0% | 90.0% | 300 | 50.0% | +11.0 points |"]
    assert certified_section(trials.assign(test_certified_acc=math.nan)) == []
    assert certified_section(trials.drop(columns="test_certified_acc")) == []
