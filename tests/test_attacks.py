import pytest
import torch

import torchattacks

from ticketsearch.core.attacks import ATTACKS, build_attack, training_examples
from ticketsearch.core.data import prepare_data
from ticketsearch.core.loops import evaluate
from ticketsearch.core.models import create_model
from ticketsearch.errors import UserError
from ticketsearch.spec import AttackConfig
from ticketsearch.spec.sections import CERTIFIED_REGIMES


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
    if kind not in ("natural", *CERTIFIED_REGIMES):  # certified training bounds the ball: no examples to move
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
    with pytest.raises(UserError, match="attack.train.kind: unknown attack 'cw'; known: autoattack, crown_ibp, fgsm, ibp, mart, natural, pgd, trades$"):
        build_attack(net, AttackConfig(kind="cw"), 10, "attack.train")


@pytest.mark.parametrize("classes, targets", [(10, 9), (100, 9), (4, 3)])
def test_autoattack_has_the_standard_version_s_iterations_targets_and_queries(trained, classes, targets):
    net, _ = trained
    auto = build_attack(net, AttackConfig(kind="autoattack", eps=8 / 255, steps=3), classes, "attack.eval")
    assert isinstance(auto, torchattacks.MultiAttack)  # each attack runs on the images still unbroken
    apgd, apgd_t, fab_t, square = auto.attacks
    assert [type(a) for a in auto.attacks] == [torchattacks.APGD, torchattacks.APGDT, torchattacks.FAB, torchattacks.Square]
    assert (apgd.loss, apgd.steps, apgd.n_restarts) == ("ce", 100, 1)  # not the spec's steps: 3
    assert (apgd_t.steps, apgd_t.n_restarts, apgd_t.n_target_classes) == (100, 1, targets)
    assert (fab_t.multi_targeted, fab_t.steps, fab_t.n_restarts, fab_t.n_target_classes) == (True, 100, 1, targets)
    assert (square.n_queries, square.n_restarts, square.p_init, square.rescale_schedule) == (5000, 1, 0.8, False)
    assert all(a.eps == 8 / 255 and a.norm == "Linf" for a in auto.attacks)


def test_autoattack_is_at_least_as_strong_as_pgd20(trained):
    net, data = trained
    # AutoAttack costs about the same on 16 images as on 64 (its passes are tiny; 10 s here either way
    # for the few still robust after APGD-CE); this undefended net keeps part of its accuracy at eps 0.03,
    # so the comparison means something.
    x, y = data.val_x[:16], data.val_y[:16]
    eps = 0.03
    pgd20 = evaluate(net, x, y, build_attack(net, AttackConfig(kind="pgd", eps=eps, alpha=eps / 4, steps=20), 10, "a"),
                     batch_size=16)
    auto = evaluate(net, x, y, build_attack(net, AttackConfig(kind="autoattack", eps=eps), 10, "a"), batch_size=16)
    assert 0.2 < pgd20.robust < pgd20.clean
    assert auto.robust <= pgd20.robust <= pgd20.clean and auto.clean == pgd20.clean


def _bn_buffers(net):
    return [b.clone() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked)]


@pytest.mark.parametrize("fold", [False, True])
def test_train_mode_generation_uses_batch_statistics_and_keeps_running_ones(trained, fold):
    net, data = trained
    x, y = data.val_x[:64].float() / 255, data.val_y[:64]
    regime = dict(kind="pgd", eps=0.1, alpha=0.02, steps=5, random_start=False)
    train_mode = build_attack(net, AttackConfig(**regime, bn_mode="train"), 10, "attack.train", fold_batchnorm=fold)
    eval_mode = build_attack(net, AttackConfig(**regime, bn_mode="eval"), 10, "attack.train")
    before = _bn_buffers(net)
    x_train = training_examples(train_mode)(x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_buffers(net)))  # running statistics untouched
    assert not net.training  # the mode the model had
    x_eval = training_examples(eval_mode)(x, y)
    assert float((x_train - x_eval).abs().max()) > 0.01  # batch statistics give other gradients
    unfolded = training_examples(build_attack(net, AttackConfig(**regime, bn_mode="train"), 10, "attack.train"))(x, y)
    assert torch.allclose(x_train, unfolded)  # folding only ever applies to eval-mode passes
    # A direct call is an evaluation: eval mode whatever the regime's bn_mode.
    assert torch.allclose(train_mode(x, y), eval_mode(x, y), atol=1e-6)


def test_autoattack_refuses_a_task_with_fewer_than_four_classes(trained):
    net, _ = trained
    with pytest.raises(UserError, match="^attack.test_autoattack: AutoAttack's standard version needs at least 4 "
                                        "classes .*; this task has 3: set it to false$"):
        build_attack(net, AttackConfig(kind="autoattack"), 3, "attack.eval")
