"""Model registry tests: every registered architecture is checked by being registered."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketsearch.core.models import MODELS, ImageClassifier, count_parameters, create_model
from ticketsearch.core.models.layers import scale_channels
from ticketsearch.errors import UserError

IMAGENET = ("resnet18", "resnet50")  # torchvision's, at width 1 only (tested at the end)
ARCHS = [a for a in MODELS.names() if a not in IMAGENET]
FIXED_DEPTH = [a for a in ARCHS if a != "wide_resnet"]
MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
NUM_CLASSES = 7  # not 10, so a hard-coded class count would show


def make(arch: str, width: float = 0.25, in_channels: int = 3, **kwargs) -> ImageClassifier:
    # wide_resnet at depth 16 keeps the tests fast; its default depth 34 is built in one test below.
    if arch == "wide_resnet":
        kwargs.setdefault("depth", 16)
    mean, std = (MEAN3, STD3) if in_channels == 3 else ((0.5,) * in_channels, (0.3,) * in_channels)
    return create_model(
        arch,
        width=width,
        num_classes=NUM_CLASSES,
        in_channels=in_channels,
        mean=mean,
        std=std,
        **kwargs,
    )


def forward_backward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    assert out.shape == (x.shape[0], NUM_CLASSES)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    return out


# ---------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_at_widths(arch, width):
    torch.manual_seed(0)
    forward_backward(make(arch, width), torch.rand(2, 3, 32, 32))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [8, 28])
def test_small_single_channel_inputs(arch, size):
    # Global average pooling (and ceil-mode pools in VGG) make every model accept 8x8 and up.
    torch.manual_seed(0)
    forward_backward(make(arch, in_channels=1), torch.rand(2, 1, size, size))


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_last_matches_contiguous(arch):
    # Width 0.25 gives shortcuts with 4 input channels, where a plain channels_last 1x1 stride-2
    # conv crashes or hangs on CPU (see layers.Projection).
    torch.manual_seed(0)
    model = make(arch, width=0.25)
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    forward_backward(model.train(), x.to(memory_format=torch.channels_last))


# ----------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count_grows_with_width(arch):
    counts = [count_parameters(make(arch, w)) for w in (0.25, 0.5, 1.0, 1.5)]
    assert counts == sorted(set(counts)), counts


@pytest.mark.parametrize("arch", ARCHS)
def test_classifier_and_replace_classifier(arch):
    model = make(arch)
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier is model.body.classifier
    assert model.classifier.out_features == NUM_CLASSES
    in_features = model.classifier.in_features
    new = model.replace_classifier(3)
    assert model.classifier is new and new.in_features == in_features and new.out_features == 3
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 3)


@pytest.mark.parametrize("arch", ARCHS)
def test_modules_are_registered_in_call_order(arch):
    # Pruning takes "the first conv" as the first nn.Conv2d in named_modules() order.
    model = make(arch)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    called: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, i, o: called.append(m)) for m in layers]
    model(torch.rand(2, 3, 16, 16))
    for h in handles:
        h.remove()
    assert [id(m) for m in called] == [id(m) for m in layers]
    assert layers[0].in_channels == 3


@pytest.mark.parametrize("arch", ARCHS)
def test_normalisation_is_inside_the_model(arch):
    model = make(arch).eval()
    x = torch.rand(2, 3, 16, 16)
    mean, std = torch.tensor(MEAN3).view(1, 3, 1, 1), torch.tensor(STD3).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.body((x - mean) / std))
    state = model.state_dict()
    assert state["normalize.mean"].shape == (1, 3, 1, 1)
    assert state["normalize.std"].shape == (1, 3, 1, 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_are_multiples_of_8_above_8(arch):
    for module in make(arch, width=0.3).modules():
        if isinstance(module, nn.Conv2d):
            c = module.out_channels
            assert c <= 8 or c % 8 == 0, f"{arch}: {c} channels"


def test_resnet20_channels_at_width_0_3():
    convs = [m for m in make("resnet20", width=0.3).modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 5  # 16 * 0.3 = 4.8 -> 5 (at most 8: nearest integer)
    assert convs[-1].out_channels == 16  # 64 * 0.3 = 19.2 -> 16 (nearest multiple of 8)


@pytest.mark.parametrize(
    ("channels", "width", "expected"),
    [(16, 1.0, 16), (64, 0.3, 16), (16, 0.3, 5), (16, 0.5, 8), (9, 1.0, 8), (12, 1.0, 16),
     (100, 1.0, 104), (16, 0.03125, 1), (64, 10, 640)],
)  # fmt: skip
def test_scale_channels(channels, width, expected):
    assert scale_channels(channels, width) == expected


def test_known_parameter_counts_at_width_1():
    # Published counts: ResNet-20 0.27M, PreAct ResNet-18 11.2M, VGG-16-bn 14.7M, WRN-34-10 46.2M.
    def millions(arch, width=1.0, depth=None):
        model = create_model(arch, width=width, num_classes=10, in_channels=3, mean=MEAN3, std=STD3,
                             depth=depth)  # fmt: skip
        return round(count_parameters(model) / 1e6, 2)

    assert millions("resnet20") == 0.27
    assert millions("preact_resnet18") == 11.17
    assert millions("vgg16_bn") == 14.72
    assert millions("wide_resnet", width=10) == 46.16  # default depth 34


# -------------------------------------------------------------------------------------- errors


def test_unknown_arch_lists_known_names():
    with pytest.raises(UserError, match="model.arch") as info:
        make("resnet21")
    for name in ARCHS:
        assert name in str(info.value)


def test_width_with_no_channels_is_rejected():
    with pytest.raises(
        UserError, match=r"model\.width: 0\.01 gives no channels.*at least 0\.03125"
    ):
        make("resnet20", width=0.01)


@pytest.mark.parametrize("width", [0.0, -1.0, float("nan")])
def test_nonpositive_width_is_rejected(width):
    with pytest.raises(UserError, match=r"model\.width: must be > 0"):
        make("resnet20", width=width)


def test_single_class_is_rejected():
    with pytest.raises(UserError, match="num_classes"):
        create_model("resnet20", width=1.0, num_classes=1, in_channels=3, mean=MEAN3, std=STD3)


def test_mean_std_must_match_channels():
    with pytest.raises(UserError, match="mean/std"):
        create_model("resnet20", width=1.0, num_classes=10, in_channels=1, mean=MEAN3, std=STD3)


@pytest.mark.parametrize("depth", [30, 4, 0])
def test_wide_resnet_bad_depth(depth):
    with pytest.raises(UserError, match=r"model\.depth: .*16, 22, 28, 34, 40"):
        make("wide_resnet", depth=depth)


@pytest.mark.parametrize("arch", FIXED_DEPTH)
def test_depth_given_to_fixed_depth_model(arch):
    with pytest.raises(UserError, match=rf"model\.depth: {arch} has a fixed depth"):
        make(arch, depth=20)


# ------------------------------------------------------------------- torchvision's ImageNet ResNets


@pytest.mark.parametrize("arch", IMAGENET)
def test_imagenet_resnets_match_torchvision(arch):
    import torchvision

    reference = getattr(torchvision.models, arch)(num_classes=1000)
    model = create_model(arch, width=1, num_classes=1000, in_channels=3, mean=MEAN3, std=STD3)
    assert count_parameters(model) == count_parameters(reference)
    assert model.classifier is model.body.classifier and "body.classifier.weight" in model.state_dict()
    with pytest.raises(UserError, match=rf"model.width: {arch} exists at width 1 only"):
        create_model(arch, width=0.5, num_classes=10, in_channels=3, mean=MEAN3, std=STD3)


def test_input_adaptation_resizes_and_repeats_grey_inside_the_model():
    torch.manual_seed(0)
    model = create_model("resnet18", width=1, num_classes=NUM_CLASSES, in_channels=3, mean=MEAN3, std=STD3,
                         input_size=64)
    seen = []
    model.body.conv1.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    x = torch.rand(2, 1, 8, 8, requires_grad=True)  # grey 8x8 digits into an RGB ImageNet network
    out = forward_backward(model, x)
    assert seen == [(2, 3, 64, 64)] and out.shape == (2, NUM_CLASSES)
    assert x.grad is not None and x.grad.abs().sum() > 0  # attacks still reach the data's own pixels
