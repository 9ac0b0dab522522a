"""The catastrophic-overfitting guard: it rolls a collapsed round back, and both trainers run it."""

from __future__ import annotations

import math

import torch

from ticketsearch.core.fastpath import FastPath
from ticketsearch.spec import AttackConfig
from ticketsearch.spec.sections import GuardSection
from ticketsearch.trainers import create_trainer
from ticketsearch.trainers.guard import OverfittingGuard

from test_transfer import transfer_config
from tiny import tiny_config

FGSM = AttackConfig(kind="fgsm", eps=0.1)


def test_the_guard_rolls_back_to_the_last_epoch_that_passed():
    # A network trained naturally here, then "collapsed" by zeroing its classifier: with the identity as
    # the check's attack, the guard's accuracy is the clean accuracy on its fixed batch.
    trainer = create_trainer(tiny_config(**{"train.epochs": 3, "attack.train": "natural", "prune.rounds": 0}))
    for _ in trainer:
        pass
    model, data = trainer.model, trainer.data
    guard = OverfittingGuard(GuardSection(examples=128, drop=0.2, action="rollback"), AttackConfig(kind="pgd", eps=0.1))
    asked = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    check = dict(model=model, optimizer=optimizer, forward=trainer.forward,
                 attack_for=lambda config: asked.append(config) or (lambda x, y: x),
                 images=data.train_x, labels=data.train_y, fastpath=FastPath("cpu"))
    accuracy, fired, action = guard.after_epoch(FGSM, **check)
    assert accuracy > 0.5 and not fired and action == ""  # trained: chance is 0.1
    assert asked == [AttackConfig(kind="pgd", eps=0.1, steps=10)]  # attack.eval's threat model, guard's steps
    passed = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    collapsed, fired, action = guard.after_epoch(FGSM, **check)
    assert collapsed < accuracy - 0.2 and fired and action == "rollback"
    assert all(torch.equal(v, passed[k]) for k, v in model.state_dict().items())  # the last epoch that passed
    # Natural training is never guarded, and under PGD only when switched on.
    assert not guard.guards(AttackConfig(kind="natural")) and not guard.guards(AttackConfig(kind="pgd", eps=0.1))
    assert OverfittingGuard(GuardSection(enabled="on"), AttackConfig(kind="pgd")).guards(AttackConfig(kind="pgd", eps=0.1))


def test_transfer_fine_tuning_runs_the_guard(tmp_path):
    # The transfer trainer guards its adversarial fine-tuning (and its dense baseline) as IMP does.
    pretrained = create_trainer(tiny_config(**{"train.epochs": 1, "attack.train": "natural", "prune.rounds": 0}))
    for _ in pretrained:
        pass
    weights = tmp_path / "pretrained.pt"
    torch.save(pretrained.ticket_state["weights"], weights)
    guard = {"attack.guard": {"enabled": "on", "action": "record"}}
    trainer = create_trainer(transfer_config({"file": str(weights)}, **guard), levels_dir=tmp_path / "cache")
    records = [r for r in trainer if r.role == "ticket"]
    by_phase = {r.phase: r for r in records}
    assert math.isnan(by_phase["finetune_standard"].guard_robust_acc)  # natural: nothing to guard
    assert 0 <= by_phase["finetune_adversarial"].guard_robust_acc <= 1  # PGD, with the guard switched on
    assert by_phase["finetune_adversarial"].guard_robust_acc == max(
        r.guard_robust_acc for r in records if r.phase == "finetune_adversarial")
