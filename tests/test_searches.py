"""Every spec shipped in searches/ validates, and the CIFAR ones keep the paper's threat model."""

from pathlib import Path

import pytest

from ticketsearch.spec import load_spec
from ticketsearch.trainers import check_config

SEARCHES = sorted((Path(__file__).parent.parent / "searches").glob("*.yaml"))


@pytest.mark.parametrize("path", SEARCHES, ids=[p.stem for p in SEARCHES])
def test_spec_validates(path):
    spec = load_spec(path)
    check_config(spec.default_trial)
    for distribution in spec.space.values():
        for edge in distribution.extremes():
            check_config(spec.trial({distribution.path: edge}))


@pytest.mark.parametrize("path", [p for p in SEARCHES if "boosting" in p.stem], ids=lambda p: p.stem)
def test_boosting_specs_follow_the_paper(path):
    spec = load_spec(path)
    trial = spec.default_trial
    assert trial.data.dataset == "cifar10"
    assert (trial.attack.train.kind, trial.attack.train.steps) == ("pgd", 10)
    assert trial.attack.train.eps == pytest.approx(8 / 255) and trial.attack.train.step_size == pytest.approx(2 / 255)
    assert trial.find_regime.kind == "fgsm"
    assert spec.space["train.lr"].args == (0.005, 0.1)
    low, high = spec.space["prune.ratio"].args
    assert (trial.prune.sparsity_after(1) if trial.prune.rounds == 1 else None) is not None
    assert (low, high) == (0.2, 0.98)
    assert "model.width" in spec.space
