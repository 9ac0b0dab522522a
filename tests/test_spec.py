import pytest

from ticketsearch.errors import UserError
from ticketsearch.spec import load_spec, parse_overrides
from ticketsearch.spec.distributions import find_distributions
from ticketsearch.spec.sections import EPS_2, EPS_8
from ticketsearch.spec.yaml_io import load_yaml_text

from tiny import tiny_config, tiny_tree


def write(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_numbers_and_fractions_are_read_without_eval():
    tree = load_yaml_text("a: 8/255\nb: 1e-3\nc: yes\nd: on\ne: '8/255'\nf: -2.5e1\ng: __import__('os')", "t")
    assert tree == {"a": 8 / 255, "b": 1e-3, "c": "yes", "d": "on", "e": "8/255", "f": -25.0, "g": "__import__('os')"}


def test_attack_shorthand_and_defaults():
    config = tiny_config(**{"attack.train": {"fgsm": {"eps": "8/255"}}})
    assert config.attack.train.kind == "fgsm"
    assert config.attack.train.eps == pytest.approx(EPS_8)
    assert config.attack.train.step_size == pytest.approx(1.25 * EPS_8)  # Wong et al. 2020
    default_eval = tiny_config(**{"attack": {}}).attack.eval
    assert (default_eval.kind, default_eval.steps, default_eval.random_start) == ("pgd", 20, True)
    assert default_eval.step_size == pytest.approx(EPS_2)


def test_config_is_frozen_and_hash_names_content():
    a, b = tiny_config(), tiny_config(**{"train.lr": 0.1})
    with pytest.raises(Exception):
        a.train.lr = 1.0
    assert a.content_hash() == tiny_config().content_hash() != b.content_hash()


def test_distributions_defaults_and_set(tmp_path):
    path = write(tmp_path, """
data: {dataset: digits}
model: {arch: small_cnn, width: {choice: [0.25, 0.5]}}
train: {epochs: 1, lr: {loguniform: [1e-3, 1e-1]}}
prune: {ratio: {uniform: [0.2, 0.8], default: 0.3}, rounds: {randint: [1, 4]}}
""")
    spec = load_spec(path)
    assert set(spec.space) == {"model.width", "train.lr", "prune.ratio", "prune.rounds"}
    trial = spec.default_trial
    assert trial.model.width == 0.25 and trial.train.lr == pytest.approx(0.01) and trial.prune.ratio == 0.3
    assert trial.prune.rounds == 1
    fixed = load_spec(path, parse_overrides(["train.lr=0.05", "model.width=1"]))
    assert "train.lr" not in fixed.space and fixed.default_trial.train.lr == 0.05
    assert fixed.default_trial.model.width == 1.0
    assert spec.trial({"prune.ratio": 0.7}).prune.ratio == 0.7


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: {arch: small_cnn, widht: 1}", "model.widht: unknown key; known keys here: arch, depth, input_size, width"),
        ("prune: {ratio: 1.2}", "prune.ratio"),
        ("prune: {ratio: -0.1}", "prune.ratio"),
        ("attack: {train: {pgd: {eps: -8/255}}}", "attack.train.eps"),
        ("train: {epochs: 1, lr: {uniform: [0.1, 0.01]}}", "train.lr: uniform bounds must satisfy low < high"),
        ("prune: {ratio: {uniform: [0.5, 1.5]}}", "prune.ratio"),
        ("model: {arch: small_cnn, width: {loguniform: [0, 1]}}", "model.width: loguniform needs low > 0"),
        ("data: {dataset: digits, fraction: 0}", "data.fraction"),
        ("bogus_section: 1", "bogus_section: unknown key"),
        ("train: [1, 2", "not valid YAML"),
    ],
)
def test_bad_specs_fail_naming_the_field(tmp_path, text, message):
    base = "data: {dataset: digits}\nmodel: {arch: small_cnn}\ntrain: {epochs: 1, lr: 0.1}\n"
    with pytest.raises(UserError) as error:
        load_spec(write(tmp_path, base + text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_required_field(tmp_path):
    with pytest.raises(UserError, match="train.lr: required but missing"):
        load_spec(write(tmp_path, "data: {dataset: digits}\nmodel: {arch: small_cnn}\ntrain: {epochs: 1}\n"))


def test_bad_override():
    with pytest.raises(UserError, match="expected path=value"):
        parse_overrides(["train.lr"])


def test_find_distributions_ignores_plain_single_key_sections():
    assert find_distributions(tiny_tree()) == {}
    assert set(find_distributions(tiny_tree(**{"train.lr": {"choice": [0.1, 0.2]}}))) == {"train.lr"}
