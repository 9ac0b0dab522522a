import pytest
import torch
import torch.nn.functional as F

from ticketsearch.core.attacks import build_attack
from ticketsearch.core.data import prepare_data
from ticketsearch.core.loops import Augmentation, evaluate, train_epoch
from ticketsearch.core.models import create_model
from ticketsearch.core.training_objectives import adversarial_cross_entropy, mart, objective_for, trades
from ticketsearch.spec import AttackConfig

EPS = 0.1  # on [0, 1] pixels of 8x8 digits


@pytest.fixture(scope="module")
def digits():
    return prepare_data("digits", "~/data", val_split=200, fraction=1.0)


def _net(digits, seed=0):
    torch.manual_seed(seed)
    info = digits.info
    return create_model("small_cnn", width=0.5, num_classes=10, in_channels=1, mean=info.mean, std=info.std)


def test_each_regime_trains_under_its_own_objective(digits):
    net = _net(digits)
    build = lambda kind, **kw: build_attack(net, AttackConfig(kind=kind, eps=EPS, **kw), 10, "attack.train")
    assert objective_for(build("natural")) is adversarial_cross_entropy
    assert objective_for(build("pgd")) is adversarial_cross_entropy
    assert objective_for(build("fgsm")) is adversarial_cross_entropy
    assert objective_for(build("trades")) is trades
    assert objective_for(build("mart", beta=3)) is mart
    assert objective_for(lambda x, y: x) is adversarial_cross_entropy  # a plain callable: natural training


def test_trades_loss_is_clean_cross_entropy_plus_beta_times_kl(digits):
    net = _net(digits).eval()
    x, y = digits.train_x[:32].float() / 255, digits.train_y[:32]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    losses = {}
    for beta in (1.0, 7.0):
        net.load_state_dict(state)  # the training passes move the running statistics the attack uses
        attack = build_attack(net, AttackConfig(kind="trades", eps=EPS, steps=2, beta=beta), 10, "attack.train")
        torch.manual_seed(0)  # the same x + 0.001 N(0, 1) start for both
        losses[beta] = float(trades(net, attack, x, y)[0].detach())
    with torch.no_grad():
        clean_ce = float(F.cross_entropy(net(x), y))  # net is in train mode now: the objective's own passes
    kl = (losses[7.0] - losses[1.0]) / 6
    assert kl > 0 and losses[1.0] == pytest.approx(clean_ce + kl, rel=1e-4)


@pytest.mark.parametrize("kind", ["trades", "mart"])
def test_trades_and_mart_train_a_robust_digits_network(digits, kind):
    net = _net(digits)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    attack = build_attack(net, AttackConfig(kind=kind, eps=EPS, alpha=0.04, steps=3), 10, "attack.train")
    for epoch in range(6):
        result = train_epoch(net, optimizer, digits.train_x, digits.train_y, batch_size=64, attack=attack,
                             after_step=lambda: None, lr_for_step=lambda step: 0.05, first_step=0,
                             shuffle=torch.Generator().manual_seed(epoch), augmentation=Augmentation(0, False),
                             augment_generator=None)
    pgd20 = build_attack(net, AttackConfig(kind="pgd", eps=EPS, alpha=0.02, steps=20), 10, "attack.eval")
    accuracy = evaluate(net, digits.val_x, digits.val_y, pgd20, batch_size=200)
    assert result.loss == result.loss and accuracy.clean > 0.8
    assert accuracy.robust > 0.5, accuracy  # chance is 0.1; an undefended net keeps far less (test_attacks)
