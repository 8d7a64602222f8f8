"""The model registry: exact reference architectures, every ablation switch, MAC counting.

Parameter counts and MACs are checked against hand arithmetic (docs/experiments.md), so a layer
that drifts from the reference fails here rather than in a report months later.
"""

from __future__ import annotations

import subprocess
import sys
import typing
from typing import Any

import pytest
import torch
import yaml
from conftest import clean_params_text, model_options
from pydantic import BaseModel, ValidationError
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.models import options as opts
from cnnlab.models import zoo
from cnnlab.models.zoo import count_macs, count_parameters

MODELS = list(opts.MODELS)
#: The committed params.yaml's ``model:`` entries: the one place the defaults are written.
DEFAULTS: dict[str, dict[str, Any]] = yaml.safe_load(clean_params_text())["model"]
options_of = model_options


def build_model(name: str, *, in_channels: int, num_classes: int, options: Any = None) -> nn.Module:
    """:func:`zoo.build_model`, with a dict of options read as changes to params.yaml's."""
    if not isinstance(options, BaseModel):
        options = options_of(name, options) if name in DEFAULTS else options
    return zoo.build_model(name, in_channels=in_channels, num_classes=num_classes, options=options)


def input_size(name: str, options: Any = None) -> int:
    if not isinstance(options, BaseModel):
        options = options_of(name, options)
    return zoo.input_size(name, options)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def _batch(
    name: str, channels: int, batch: int = 2, options: Any = None, device: str = "cpu"
) -> torch.Tensor:
    size = input_size(name, options)
    return torch.randn(batch, channels, size, size, device=device)


def _meta_model(name: str, in_channels: int, num_classes: int, options: Any = None) -> nn.Module:
    """The model on the meta device: real shapes, no weights, no arithmetic.

    Shape-only checks run on it so that the file stays fast with 61M-parameter models.
    """
    with torch.device("meta"):
        return build_model(name, in_channels=in_channels, num_classes=num_classes, options=options)


# --------------------------------------------------------------------------- registry


def test_package_and_options_import_without_torch() -> None:
    code = (
        "import sys, cnnlab.models, cnnlab.models.options, cnnlab.params; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known models: lenet"):
        build_model("vgg", in_channels=3, num_classes=10)


def test_options_of_another_model_are_refused() -> None:
    with pytest.raises(TypeError, match="LeNetOptions"):
        build_model("lenet", in_channels=3, num_classes=10, options=options_of("alexnet"))


def test_options_may_be_a_mapping() -> None:
    model = build_model("lenet", in_channels=1, num_classes=10, options={"activation": "tanh"})
    assert isinstance(model.features.act1, nn.Tanh)


@pytest.mark.parametrize(
    ("name", "options", "size"),
    [
        ("lenet", None, 32),
        ("lenet5", None, 32),
        ("alexnet", {"adaptive_pool": True}, 32),
        ("alexnet_bn", None, 32),
        ("alexnet2012", None, 224),
        ("alexnet2012", {"input_size": 227}, 227),
    ],
)
def test_input_size(name: str, options: dict[str, Any] | None, size: int) -> None:
    assert input_size(name, options) == size


# --------------------------------------------------------------------------- exact counts

_ALEXNET32_CONVS = (
    (3 * 9 + 1) * 64
    + (64 * 9 + 1) * 192
    + (192 * 9 + 1) * 384
    + (384 * 9 + 1) * 256
    + (256 * 9 + 1) * 256
)
_ALEXNET32_FC = (4096 + 1) * 4096 + (4096 + 1) * 10


@pytest.mark.parametrize(
    ("name", "in_channels", "num_classes", "options", "expected"),
    [
        ("lenet", 3, 10, {}, 62_006),
        ("lenet5", 1, 10, {}, 61_706),
        ("alexnet2012", 3, 1000, {}, 60_965_224),
        ("alexnet2012", 1, 10, {"groups": False, "input_size": 227}, 58_299_082),
        # Hand counts so the 32x32 variants cannot drift either.
        ("alexnet", 3, 10, {}, _ALEXNET32_CONVS + (256 * 16 + 1) * 4096 + _ALEXNET32_FC),
        (
            "alexnet",
            3,
            10,
            {"adaptive_pool": True},
            _ALEXNET32_CONVS + (256 * 36 + 1) * 4096 + _ALEXNET32_FC,
        ),
        # Bias-free convs before BatchNorm; BN adds 2 per channel; 4096 -> 512 -> 10.
        (
            "alexnet_bn",
            3,
            10,
            {},
            9 * (3 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 256 * 256)
            + 2 * 2 * (64 + 128 + 256)
            + (4096 + 1) * 512
            + (512 + 1) * 10,
        ),
    ],
)
def test_parameter_counts(
    name: str, in_channels: int, num_classes: int, options: dict[str, Any], expected: int
) -> None:
    model = build_model(name, in_channels=in_channels, num_classes=num_classes, options=options)
    assert count_parameters(model) == expected


def test_frozen_parameters_do_not_count() -> None:
    model = build_model("lenet", in_channels=3, num_classes=10)
    model.features.conv1.requires_grad_(False)
    assert count_parameters(model) == 62_006 - (3 * 25 + 1) * 6


def test_macs_of_lenet_match_the_hand_count() -> None:
    model = build_model("lenet", in_channels=1, num_classes=10)
    expected = 6 * 1 * 25 * 28 * 28 + 16 * 6 * 25 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10
    assert expected == 416_520
    assert count_macs(model, (1, 32, 32)) == expected
    assert count_macs(model, (1, 32, 32)) == expected  # stable across calls


def test_macs_of_alexnet2012_match_the_hand_count() -> None:
    model = _meta_model("alexnet2012", 3, 1000)
    expected = (
        96 * 3 * 121 * 55 * 55  # conv1
        + 256 * 48 * 25 * 27 * 27  # conv2, two groups of 48 input channels
        + 384 * 256 * 9 * 13 * 13  # conv3
        + 384 * 192 * 9 * 13 * 13  # conv4, grouped
        + 256 * 192 * 9 * 13 * 13  # conv5, grouped
        + 9216 * 4096
        + 4096 * 4096
        + 4096 * 1000
    )
    assert count_macs(model, (3, 224, 224)) == expected


@pytest.mark.parametrize("name", MODELS)
def test_count_macs_is_positive_stable_and_keeps_the_mode(name: str) -> None:
    # FlopCounterMode counts from shapes, so the meta device gives the real figure for free.
    model = _meta_model(name, 3, 10)
    shape = (3, input_size(name), input_size(name))
    first = count_macs(model, shape)
    assert first > 0
    assert model.training
    assert count_macs(model, shape) == first
    model.eval()
    count_macs(model, shape)
    assert not model.training


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("num_classes", [10, 1000])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", MODELS)
def test_output_shape(name: str, in_channels: int, num_classes: int) -> None:
    model = _meta_model(name, in_channels, num_classes)
    assert model(_batch(name, in_channels, device="meta")).shape == (2, num_classes)


@pytest.mark.parametrize("size", [224, 227])
def test_alexnet2012_feature_map_sizes(size: int) -> None:
    model = _meta_model("alexnet2012", 3, 10, {"input_size": size})
    seen: list[tuple[str, int]] = []
    for name, layer in model.features.named_children():
        if name.startswith(("conv", "pool")):
            layer.register_forward_hook(
                lambda _m, _i, out, name=name: seen.append((name, out.shape[-1]))
            )
    model.features(torch.empty(1, 3, size, size, device="meta"))
    assert seen == [
        ("conv1", 55),
        ("pool1", 27),
        ("conv2", 27),
        ("pool2", 13),
        ("conv3", 13),
        ("conv4", 13),
        ("conv5", 13),
        ("pool3", 6),
    ]


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_gives_the_same_output(name: str) -> None:
    model = build_model(name, in_channels=3, num_classes=10).eval()
    x = _batch(name, 3, batch=1)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- determinism

#: aten ops that raise under the pipeline's ``use_deterministic_algorithms(True)`` on a GPU
#: (torch's docs of ``use_deterministic_algorithms`` list them; most only in their backward
#: pass), plus scatter/index accumulation ops whose deterministic CUDA fallbacks are slow.
_NONDETERMINISTIC_ON_CUDA = frozenset(
    {
        "avg_pool3d_backward",
        "_adaptive_avg_pool2d_backward",
        "_adaptive_avg_pool3d_backward",
        "adaptive_avg_pool3d_backward",
        "adaptive_max_pool2d_backward",
        "max_pool3d_with_indices_backward",
        "fractional_max_pool2d_backward",
        "fractional_max_pool3d_backward",
        "max_unpool2d",
        "max_unpool3d",
        "upsample_linear1d_backward",
        "upsample_bilinear2d_backward",
        "upsample_bicubic2d_backward",
        "upsample_trilinear3d_backward",
        "_upsample_bilinear2d_aa_backward",
        "_upsample_bicubic2d_aa_backward",
        "reflection_pad1d_backward",
        "reflection_pad2d_backward",
        "reflection_pad3d_backward",
        "nll_loss2d_forward",
        "_ctc_loss_backward",
        "_embedding_bag_backward",
        "_embedding_bag_dense_backward",
        "embedding_dense_backward",
        "grid_sampler_2d_backward",
        "grid_sampler_3d_backward",
        "histc",
        "bincount",
        "median",
        "put",
        "put_",
        "index_add",
        "scatter_add",
        "scatter_reduce",
        "index_put",
    }
)


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        self.ops.add(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


#: Every pooling and norm of every model, and the adaptive pool after each pooling.
_LAYER_CHOICES = [
    (name, {"pooling": pooling, "norm": norm})
    for name in MODELS
    for pooling in typing.get_args(opts.PoolingName)
    for norm in typing.get_args(opts.NormName)
] + [("alexnet", {"adaptive_pool": True, "pooling": p}) for p in typing.get_args(opts.PoolingName)]


@pytest.mark.parametrize(
    ("name", "options"),
    _LAYER_CHOICES,
    ids=[f"{n}-{','.join(f'{k}={v}' for k, v in o.items())}" for n, o in _LAYER_CHOICES],
)
def test_no_op_lacks_a_deterministic_cuda_backward(name: str, options: dict[str, Any]) -> None:
    # Checked on the meta device: which ops run does not depend on where they run.
    model = _meta_model(name, 3, 10, options)
    x = _batch(name, 3, batch=2, options=options, device="meta")
    with _OpRecorder() as recorder:
        model(x).sum().backward()
    assert "convolution_backward" in recorder.ops  # the recorder did see the backward pass
    assert not recorder.ops & _NONDETERMINISTIC_ON_CUDA


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    ("in_size", "out_size"), [(4, 6), (13, 6), (12, 6), (6, 6), (5, 3), ((7, 9), (6, 4))]
)
def test_adaptive_pool_matches_torch(
    in_size: Any, out_size: Any, memory_format: torch.memory_format
) -> None:
    h, w = in_size if isinstance(in_size, tuple) else (in_size, in_size)
    x = torch.randn(2, 8, h, w).contiguous(memory_format=memory_format).requires_grad_()
    ours, theirs = zoo.AdaptiveAvgPool2d(out_size)(x), nn.AdaptiveAvgPool2d(out_size)(x)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn_like(theirs)
    torch.testing.assert_close(*(torch.autograd.grad(y, x, grad)[0] for y in (ours, theirs)))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("channels", [3, 6, 96])
def test_lrn_matches_torch(channels: int, memory_format: torch.memory_format) -> None:
    x = 3 * torch.randn(2, channels, 5, 5).contiguous(memory_format=memory_format)
    x.requires_grad_()
    args = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
    ours, theirs = zoo.LocalResponseNorm(**args)(x), nn.LocalResponseNorm(**args)(x)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn_like(theirs)
    torch.testing.assert_close(*(torch.autograd.grad(y, x, grad)[0] for y in (ours, theirs)))


# --------------------------------------------------------------------------- ablations


def _switch_values(name: str) -> list[tuple[str, Any]]:
    """Every non-default value of every Literal/bool option, plus a dropout and width change."""
    options_class = opts.MODELS[name].options
    defaults = options_of(name)
    cases: list[tuple[str, Any]] = []
    for field, info in options_class.model_fields.items():
        default = getattr(defaults, field)
        if typing.get_origin(info.annotation) is typing.Literal:
            values: list[Any] = list(typing.get_args(info.annotation))
        elif info.annotation is bool or info.annotation == "bool":
            values = [True, False]
        elif field == "dropout":
            values = [0.0, 0.3]
        elif field == "hidden":
            values = [0, 64]
        else:
            raise AssertionError(f"{name}.{field}: no test values; add them here")
        cases += [(field, v) for v in values if v != default]
    return cases


def _combined_cases(name: str) -> list[dict[str, Any]]:
    """As few option sets as cover every non-default value of every switch.

    For the two big AlexNets, where one build costs more than all of LeNet's tests.
    ``paper_init`` is left out: it is ``init: paper``, and test_alexnet2012_paper_init
    checks it.
    """
    by_field: dict[str, list[Any]] = {}
    for field, value in _switch_values(name):
        if field != "paper_init":
            by_field.setdefault(field, []).append(value)
    rounds = max(len(values) for values in by_field.values())
    # A field with fewer values than rounds keeps its default in the later rounds, so the
    # defaults get combined with the other switches too.
    return [{f: v[i] for f, v in by_field.items() if i < len(v)} for i in range(rounds)]


BIG_MODELS = ["alexnet", "alexnet2012"]
SWITCHES = [
    (name, {field: value})
    for name in MODELS
    if name not in BIG_MODELS
    for field, value in _switch_values(name)
] + [(name, case) for name in BIG_MODELS for case in _combined_cases(name)]


def test_every_model_has_the_shared_switches() -> None:
    for name, options_class in ((n, s.options) for n, s in opts.MODELS.items()):
        shared = {"activation", "pooling", "norm", "dropout", "init"}
        assert shared <= set(options_class.model_fields), name


def test_combined_cases_cover_every_value() -> None:
    for name in BIG_MODELS:
        covered = {(f, v) for case in _combined_cases(name) for f, v in case.items()}
        assert covered == set(_switch_values(name)) - {("paper_init", True)}


@pytest.mark.parametrize(
    ("name", "options"),
    SWITCHES,
    ids=[f"{n}-{','.join(f'{k}={v}' for k, v in o.items())}" for n, o in SWITCHES],
)
def test_switch_builds_and_trains(name: str, options: dict[str, Any]) -> None:
    model = build_model(name, in_channels=3, num_classes=10, options=options)
    out = model(_batch(name, 3, batch=2 if name in ("lenet", "lenet5") else 1, options=options))
    assert out.shape[1] == 10
    loss = out.logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    # Every parameter takes part in the forward pass; checking each grad's values would
    # cost more than the pass itself on the 54M-weight classifiers.
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("norm", typing.get_args(opts.NormName))
@pytest.mark.parametrize("pooling", typing.get_args(opts.PoolingName))
@pytest.mark.parametrize("name", MODELS)
def test_every_pooling_and_norm_combination_fits(name: str, pooling: str, norm: str) -> None:
    model = _meta_model(name, 1, 10, {"pooling": pooling, "norm": norm})
    assert model(_batch(name, 1, batch=1, device="meta")).shape == (1, 10)


@pytest.mark.parametrize("adaptive_pool", [False, True])
@pytest.mark.parametrize("pooling", ["max_overlap", "avg"])
def test_alexnet_adaptive_pool_with_other_pooling(pooling: str, adaptive_pool: bool) -> None:
    options = {"pooling": pooling, "adaptive_pool": adaptive_pool}
    model = _meta_model("alexnet", 3, 10, options)
    assert model(_batch("alexnet", 3, batch=1, device="meta")).shape == (1, 10)


def test_defaults_are_the_reference_layers() -> None:
    lenet = build_model("lenet", in_channels=3, num_classes=10)
    assert isinstance(lenet.features.act1, nn.ReLU)
    assert isinstance(lenet.features.pool1, nn.MaxPool2d)
    assert not any(isinstance(m, nn.Dropout) for m in lenet.modules())
    lenet5 = build_model("lenet5", in_channels=1, num_classes=10)
    assert isinstance(lenet5.features.act1, nn.Tanh)
    assert isinstance(lenet5.features.pool2, nn.AvgPool2d)
    assert lenet5.features.conv5.out_channels == 120
    alexnet = _meta_model("alexnet", 3, 10)
    assert alexnet.classifier.fc1.in_features == 256 * 4 * 4
    assert [m.p for m in alexnet.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    bn = build_model("alexnet_bn", in_channels=3, num_classes=10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 6
    assert sum(isinstance(m, nn.MaxPool2d) for m in bn.modules()) == 3
    a12 = _meta_model("alexnet2012", 3, 10)
    lrn = [n for n, m in a12.features.named_children() if isinstance(m, nn.LocalResponseNorm)]
    assert lrn == ["lrn1", "lrn2"]
    assert a12.features.lrn1.size == 5 and a12.features.lrn1.k == 2.0
    assert (a12.features.pool1.kernel_size, a12.features.pool1.stride) == (3, 2)
    assert [getattr(a12.features, f"conv{i}").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]


def test_alexnet2012_paper_init() -> None:
    model = build_model("alexnet2012", in_channels=3, num_classes=10, options={"paper_init": True})
    layers = dict(model.features.named_children()) | dict(model.classifier.named_children())
    for name in ("conv2", "conv4", "conv5", "fc1", "fc2"):
        assert torch.all(layers[name].bias == 1), name
    for name in ("conv1", "conv3", "fc3"):
        assert torch.all(layers[name].bias == 0), name
    assert layers["fc1"].weight.std().item() == pytest.approx(0.01, rel=0.01)
    assert layers["fc1"].weight.mean().abs().item() < 1e-4
    assert options_of("alexnet2012", {"paper_init": True}).effective_init == "paper"
    assert options_of("alexnet2012", {"init": "paper"}).effective_init == "paper"


def test_lenet5_paper_init_is_lecuns_uniform() -> None:
    model = build_model("lenet5", in_channels=1, num_classes=10, options={"init": "paper"})
    conv3 = model.features.conv3.weight
    assert conv3.abs().max() <= 2.4 / (6 * 25)
    assert torch.all(model.features.conv3.bias == 0)


def test_same_seed_same_weights() -> None:
    torch.manual_seed(1)
    a = build_model("lenet", in_channels=3, num_classes=10, options={"init": "kaiming"})
    torch.manual_seed(1)
    b = build_model("lenet", in_channels=3, num_classes=10, options={"init": "kaiming"})
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("options_class", "values", "message"),
    [
        (opts.LeNetOptions, {"activation": "gelu"}, "'relu', 'leaky_relu'"),
        (opts.LeNetOptions, {"pooling": "min"}, "'max_overlap'"),
        (opts.LeNetOptions, {"norm": "layernorm"}, "'batchnorm'"),
        (opts.LeNetOptions, {"init": "paper"}, "'kaiming' or 'xavier'"),
        (opts.LeNetOptions, {"dropout": 1.0}, "less than 1"),
        (opts.AlexNetOptions, {"dropout": -0.1}, "greater than or equal to 0"),
        (opts.AlexNetOptions, {"adaptive_pool": "maybe"}, "valid boolean"),
        (opts.AlexNetOptions, {"dropuot": 0.5}, "Extra inputs"),
        (opts.AlexNetBNOptions, {"hidden": -1}, "greater than or equal to 0"),
        (opts.AlexNet2012Options, {"input_size": 256}, "224 or 227"),
        (opts.AlexNet2012Options, {"paper_init": True, "init": "xavier"}, "contradicts"),
        (opts.LeNet5Options, {"activation": "softmax"}, "'sigmoid'"),
    ],
)
def test_bad_option_values_are_rejected(
    options_class: type[BaseModel], values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        options_class.model_validate(values)


def test_bad_option_is_reported_by_the_params_schema() -> None:
    from cnnlab.params import Params, ParamsError, validate_params

    raw = yaml.safe_load(clean_params_text())
    raw["model"] = {
        **DEFAULTS,
        "lenet": {**DEFAULTS["lenet"], "activation": "gelu"},
        "alexnet2012": {**DEFAULTS["alexnet2012"], "input_size": 300},
    }
    with pytest.raises(ParamsError) as caught:
        validate_params(raw)
    assert "model.lenet.activation: got 'gelu'" in str(caught.value)
    assert "model.alexnet2012.input_size: got 300" in str(caught.value)
    raw["model"] = {**DEFAULTS, "lenet": {**DEFAULTS["lenet"], "activation": "elu"}}
    params: Params = validate_params(raw)
    assert params.model_options("lenet") == options_of("lenet", {"activation": "elu"})


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", MODELS)
def test_one_training_step_changes_the_weights(name: str) -> None:
    model = build_model(name, in_channels=3, num_classes=10)
    params = dict(model.named_parameters())
    # The two ends of the network: a step that reaches both has gone all the way through.
    first_conv = next(k for k in params if k.startswith("features.conv"))
    last_fc = [k for k in params if k.startswith("classifier.") and k.endswith("weight")][-1]
    before = {k: params[k].detach().clone() for k in (first_conv, last_fc)}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _batch(name, 3), torch.tensor([1, 7])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    for key, old in before.items():
        assert not torch.equal(old, params[key]), key
        assert torch.isfinite(params[key]).all(), key
