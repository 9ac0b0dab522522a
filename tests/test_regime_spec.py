"""The spec fields of training regimes and pruning added for issue 15: beta, bn_mode, scopes, AutoAttack."""

import pytest
from pydantic import ValidationError

from ticketsearch.spec import AttackConfig
from ticketsearch.spec.sections import AttackSection, PruneSection

from tiny import tiny_config


def test_trades_and_mart_have_a_beta_and_describe_it():
    assert AttackConfig(kind="trades").loss_beta == 6.0
    mart = AttackConfig(kind="mart", eps=8 / 255, steps=10, beta=5)
    assert mart.loss_beta == 5.0 and mart.describe() == "mart-10 eps=8/255 beta=5"
    with pytest.raises(ValidationError, match="beta: only trades and mart have a beta, not pgd"):
        AttackConfig(kind="pgd", beta=6)
    with pytest.raises(ValidationError, match="greater than 0"):
        AttackConfig(kind="trades", beta=0)


def test_training_objectives_and_train_mode_are_refused_for_evaluation():
    with pytest.raises(ValidationError, match="eval: trades is a training objective"):
        AttackSection(eval=AttackConfig(kind="trades"))
    with pytest.raises(ValidationError, match="eval.bn_mode: evaluation attacks run in eval mode"):
        AttackSection(eval=AttackConfig(kind="pgd", bn_mode="train"))
    with pytest.raises(ValidationError):
        AttackConfig(kind="pgd", bn_mode="batch")


def test_autoattack_is_on_by_default_and_layers_cannot_be_emptied_by_default():
    assert AttackSection().test_autoattack
    assert AttackConfig(kind="pgd").bn_mode == AttackConfig(kind="trades").bn_mode == "eval"
    prune = PruneSection(scope="global_normalized")
    assert prune.scope == "global_normalized" and not prune.allow_empty_layers
    trial = tiny_config(**{"attack.train": {"trades": {"eps": 0.1, "steps": 2, "beta": 3}},
                           "prune.find_with": {"mart": {"eps": 0.1, "steps": 2}}})
    assert (trial.attack.train.kind, trial.attack.train.loss_beta, trial.find_regime.loss_beta) == ("trades", 3.0, 6.0)
