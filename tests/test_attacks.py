import pytest
import torch

from ticketsearch.core.attacks import ATTACKS, build_attack
from ticketsearch.core.data import prepare_data
from ticketsearch.core.loops import evaluate
from ticketsearch.core.models import create_model
from ticketsearch.errors import UserError
from ticketsearch.spec import AttackConfig


@pytest.fixture(scope="module")
def trained():
    """A small conv net trained for a few seconds on the real digits data."""
    torch.manual_seed(0)
    data = prepare_data("digits", "~/data", val_split=200, fraction=1.0)
    info = data.info
    net = create_model("small_cnn", width=0.5, num_classes=10, in_channels=1, mean=info.mean, std=info.std)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x, y = data.train_x.float() / 255, data.train_y
    for _ in range(3):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i : i + 64]), y[i : i + 64]).backward()
            optimizer.step()
    return net.eval(), data


@pytest.mark.parametrize("kind", ATTACKS.names())
def test_adversarial_examples_stay_in_the_eps_ball_and_in_range(trained, kind):
    net, data = trained
    # AutoAttack runs FAB and Square (5,000 queries) on every image still robust after APGD: at
    # eps 0.3 APGD breaks all four images of this undefended net, so the test stays fast.
    count, eps = (4, 0.3) if kind == "autoattack" else (32, 0.1)
    x = data.val_x[:count].float() / 255
    y = data.val_y[:count]
    attack = build_attack(net, AttackConfig(kind=kind, eps=eps, steps=3), 10, "attack.eval")
    x_adv = attack(x, y).detach()
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    if kind != "natural":
        assert not torch.equal(x_adv, x)


def test_robust_accuracy_never_exceeds_clean_and_attacks_bite(trained):
    net, data = trained
    clean_only = evaluate(net, data.val_x, data.val_y, build_attack(net, AttackConfig(kind="natural"), 10, "a"), batch_size=100)
    assert clean_only.clean > 0.8 and clean_only.robust == clean_only.clean
    weak = evaluate(net, data.val_x, data.val_y, build_attack(net, AttackConfig(kind="fgsm", eps=0.1), 10, "a"), batch_size=100)
    strong = evaluate(net, data.val_x, data.val_y,
                      build_attack(net, AttackConfig(kind="pgd", eps=0.1, alpha=0.02, steps=20), 10, "a"), batch_size=100)
    assert strong.robust <= weak.clean and strong.robust <= strong.clean
    assert strong.robust < strong.clean - 0.1  # an undefended net is not robust at eps 0.1
    assert strong.robust <= weak.robust + 0.02  # PGD-20 is at least as strong as one FGSM step


def test_unknown_attack_lists_known_ones(trained):
    net, _ = trained
    with pytest.raises(UserError, match="attack.train.kind: unknown attack 'cw'; known: autoattack, fgsm, natural, pgd"):
        build_attack(net, AttackConfig(kind="cw"), 10, "attack.train")
