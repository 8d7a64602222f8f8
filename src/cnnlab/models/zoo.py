"""The model builders: ``build_<name>`` for every name in :data:`~cnnlab.models.options.MODELS`.

Every model is a :class:`ConvNet` (``features`` -> optional ``avgpool`` -> flatten ->
``classifier``) with named layers (``features.conv1``, ``classifier.fc1``...) as the papers
name them. LRN and the adaptive pool are torch's with another forward: torch's CUDA backward
passes raise under the pipeline's deterministic mode.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.models.options import (
    SMALL_INPUT_SIZE,
    AlexNet2012Options,
    AlexNetBNOptions,
    AlexNetOptions,
    LeNet5Options,
    LeNetOptions,
    resolve_options,
)
from cnnlab.models.options import input_size as input_size  # re-exported beside build_model


class ConvNet(nn.Module):
    """Feature extractor, optional fixed-size pool, and classifier (``torch.flatten`` keeps
    the logical order, so channels_last inputs give the classifier the same values)."""

    def __init__(
        self, features: nn.Sequential, classifier: nn.Sequential, avgpool: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------- layer helpers


#: In-place where torch allows it: one activation-sized buffer less per layer.
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _pool(options: Any, pad: int = 1) -> nn.Module:
    """``pad``: 3x3/2 pools padded by 1 keep the 2x2/2 map sizes of small inputs."""
    if options.pooling == "max":
        return nn.MaxPool2d(2, 2)
    if options.pooling == "max_overlap":
        return nn.MaxPool2d(3, 2, padding=pad)
    if options.pooling == "avg":
        return nn.AvgPool2d(2, 2)
    if options.pooling == "avg_overlap":
        # Padding must not count towards the mean, or border pixels are shrunk towards 0.
        return nn.AvgPool2d(3, 2, padding=pad, count_include_pad=False)
    raise ValueError(f"unknown pooling {options.pooling!r}")


class LocalResponseNorm(nn.LocalResponseNorm):
    """torch's LRN from shifted slices: its ``avg_pool3d`` has no deterministic CUDA backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        # Zero-pad the channel axis (dim 1 of N, C, H, W) as torch's LRN does.
        squares = F.pad(x * x, (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
        window = squares[:, :channels]
        for shift in range(1, self.size):
            window = window + squares[:, shift : shift + channels]
        return x / window.mul(self.alpha / self.size).add(self.k).pow(self.beta)


def _lrn() -> nn.LocalResponseNorm:
    # The reference's LRN(5, 1e-4, 0.75, 2). torch divides alpha by the window size, as
    # Caffe does; the paper's formula does not (its alpha would be 5e-4 here).
    return LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """torch's adaptive average pool without its non-deterministic CUDA backward.

    An input at the output size passes through, an evenly divisible one takes a plain
    average pool, any other (the CIFAR AlexNet's 4x4 -> 6x6) two averaging matrices.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_h, in_w = x.shape[-2:]
        out = self.output_size if isinstance(self.output_size, tuple) else (self.output_size,) * 2
        out_h, out_w = out[0] or in_h, out[1] or in_w
        if (in_h, in_w) == (out_h, out_w):
            return x
        if in_h % out_h == 0 and in_w % out_w == 0:
            return F.avg_pool2d(x, (in_h // out_h, in_w // out_w))
        rows = _bin_matrix(in_h, out_h, x.device, x.dtype)
        cols = _bin_matrix(in_w, out_w, x.device, x.dtype)
        return rows @ x @ cols.T


@functools.cache
def _bin_matrix(
    size_in: int, size_out: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Row i averages torch's adaptive bin i: [floor(i*in/out), ceil((i+1)*in/out)).

    Cached on its device (a copy from the host per forward would wait for the GPU), and made
    outside inference mode: autograd refuses to save an inference tensor for a backward.
    """
    with torch.inference_mode(False):
        matrix = torch.zeros(size_out, size_in, device="cpu")  # not a surrounding device context
        for i in range(size_out):
            start = (i * size_in) // size_out
            end = -((-(i + 1) * size_in) // size_out)
            matrix[i, start:end] = 1.0 / (end - start)
        return matrix.to(device=device, dtype=dtype)


def _conv(
    layers: OrderedDict[str, nn.Module],
    tag: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    options: Any,
    *,
    lrn_after: bool = False,
    batchnorm_ok: bool = True,
    **conv: int,
) -> None:
    """Append conv[+BN]+activation[+LRN] named ``conv<tag>``, ``bn<tag>``, ``act<tag>``...;
    ``conv``: nn.Conv2d's ``stride``, ``padding``, ``groups``."""
    batchnorm = options.norm == "batchnorm" and batchnorm_ok
    # A bias right before BatchNorm is cancelled by its mean subtraction: pure waste.
    layers[f"conv{tag}"] = nn.Conv2d(
        in_channels, out_channels, kernel_size, bias=not batchnorm, **conv
    )
    if batchnorm:
        layers[f"bn{tag}"] = nn.BatchNorm2d(out_channels)
    layers[f"act{tag}"] = _ACTIVATIONS[options.activation]()
    if lrn_after and options.norm == "lrn":
        layers[f"lrn{tag}"] = _lrn()


def _linear(
    layers: OrderedDict[str, nn.Module],
    tag: str,
    in_features: int,
    out_features: int,
    *,
    activation: str | None,
    dropout: float = 0.0,
) -> None:
    """Append [dropout+]linear[+activation]; dropout before the layer, as AlexNet has it."""
    if dropout > 0:
        layers[f"drop{tag}"] = nn.Dropout(dropout)
    layers[f"fc{tag}"] = nn.Linear(in_features, out_features)
    if activation is not None:
        layers[f"act_fc{tag}"] = _ACTIVATIONS[activation]()


def _spatial_size(features: nn.Sequential, in_channels: int, size: int) -> int:
    """Side of the feature map for a ``size`` x ``size`` input, from a dry run on the meta
    device (shapes only: no memory, no arithmetic, BatchNorm's statistics untouched)."""
    probe = copy.deepcopy(features).to("meta").eval()
    try:
        out = probe(torch.empty(1, in_channels, size, size, device="meta"))
    except RuntimeError as exc:
        raise ValueError(f"a {size}x{size} input is too small for these layers: {exc}") from None
    return int(out.shape[-1])


# --------------------------------------------------------------------------- init schemes

#: Layers whose bias the 2012 paper sets to 1 (so ReLUs start in their positive region).
_PAPER_BIAS_ONE = frozenset({"conv2", "conv4", "conv5", "fc1", "fc2"})


def _gain_name(activation: str) -> tuple[str, float | None]:
    # calculate_gain knows no ELU; its positive half is the identity, like ReLU's.
    if activation == "leaky_relu":
        return "leaky_relu", 0.01
    if activation == "elu":
        return "relu", None
    return activation, None


def _init_weights(model: ConvNet, scheme: str, activation: str, paper: str = "alexnet") -> None:
    """Apply ``scheme`` to every conv/linear layer (the output layer with the linear gain);
    BatchNorm keeps torch's (1, 0) init."""
    if scheme == "default":
        return
    layers = [
        (name.rsplit(".", 1)[-1], m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    last = layers[-1][1]
    nonlinearity, slope = _gain_name(activation)
    for short, layer in layers:
        weight, bias = layer.weight, layer.bias
        act, a = ("linear", None) if layer is last else (nonlinearity, slope)
        if scheme == "kaiming":
            nn.init.kaiming_normal_(weight, a=a or 0, nonlinearity=act)
        elif scheme == "xavier":
            nn.init.xavier_uniform_(weight, gain=nn.init.calculate_gain(act, a))
        elif scheme == "paper" and paper == "lenet5":
            fan_in = weight[0].numel()
            nn.init.uniform_(weight, -2.4 / fan_in, 2.4 / fan_in)
        elif scheme == "paper":
            nn.init.normal_(weight, 0.0, 0.01)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")
        if bias is not None:
            one = scheme == "paper" and paper == "alexnet" and short in _PAPER_BIAS_ONE
            nn.init.constant_(bias, 1.0 if one else 0.0)


# --------------------------------------------------------------------------- builders


def build_lenet(in_channels: int, num_classes: int, options: LeNetOptions) -> ConvNet:
    f: OrderedDict[str, nn.Module] = OrderedDict()
    _conv(f, "1", in_channels, 6, 5, options, lrn_after=True)
    f["pool1"] = _pool(options)
    _conv(f, "2", 6, 16, 5, options, lrn_after=True)
    f["pool2"] = _pool(options)
    features = nn.Sequential(f)
    side = _spatial_size(features, in_channels, SMALL_INPUT_SIZE)
    c: OrderedDict[str, nn.Module] = OrderedDict()
    _linear(c, "1", 16 * side * side, 120, activation=options.activation, dropout=options.dropout)
    _linear(c, "2", 120, 84, activation=options.activation, dropout=options.dropout)
    _linear(c, "3", 84, num_classes, activation=None)
    return ConvNet(features, nn.Sequential(c))


def build_lenet5(in_channels: int, num_classes: int, options: LeNet5Options) -> ConvNet:
    # Layer names follow the paper: C1, S2, C3, S4, C5, F6. Full C3 connections (61,706
    # parameters), not the paper's partial table.
    f: OrderedDict[str, nn.Module] = OrderedDict()
    _conv(f, "1", in_channels, 6, 5, options, lrn_after=True)
    f["pool2"] = _pool(options)
    _conv(f, "3", 6, 16, 5, options, lrn_after=True)
    f["pool4"] = _pool(options)
    # C5's output is 1x1: BatchNorm there would see one value per channel and raise on a
    # (last) training batch of one image, so C5 stays un-normalised like a linear layer.
    _conv(f, "5", 16, 120, 5, options, batchnorm_ok=False)
    features = nn.Sequential(f)
    side = _spatial_size(features, in_channels, SMALL_INPUT_SIZE)
    c: OrderedDict[str, nn.Module] = OrderedDict()
    _linear(c, "6", 120 * side * side, 84, activation=options.activation, dropout=options.dropout)
    _linear(c, "7", 84, num_classes, activation=None)
    return ConvNet(features, nn.Sequential(c))


def _alexnet_classifier(
    in_features: int, num_classes: int, activation: str, dropout: float
) -> nn.Sequential:
    c: OrderedDict[str, nn.Module] = OrderedDict()
    _linear(c, "1", in_features, 4096, activation=activation, dropout=dropout)
    _linear(c, "2", 4096, 4096, activation=activation, dropout=dropout)
    _linear(c, "3", 4096, num_classes, activation=None)
    return nn.Sequential(c)


def build_alexnet(in_channels: int, num_classes: int, options: AlexNetOptions) -> ConvNet:
    f: OrderedDict[str, nn.Module] = OrderedDict()
    _conv(f, "1", in_channels, 64, 3, options, padding=1, lrn_after=True)
    f["pool1"] = _pool(options)
    _conv(f, "2", 64, 192, 3, options, padding=1, lrn_after=True)
    f["pool2"] = _pool(options)
    _conv(f, "3", 192, 384, 3, options, padding=1)
    _conv(f, "4", 384, 256, 3, options, padding=1)
    _conv(f, "5", 256, 256, 3, options, padding=1)
    f["pool3"] = _pool(options)
    features = nn.Sequential(f)
    if options.adaptive_pool:
        avgpool: nn.Module | None = AdaptiveAvgPool2d(6)
        side = 6
    else:
        avgpool, side = None, _spatial_size(features, in_channels, SMALL_INPUT_SIZE)
    classifier = _alexnet_classifier(
        256 * side * side, num_classes, options.activation, options.dropout
    )
    return ConvNet(features, classifier, avgpool)


def build_alexnet_bn(in_channels: int, num_classes: int, options: AlexNetBNOptions) -> ConvNet:
    f: OrderedDict[str, nn.Module] = OrderedDict()
    channels = in_channels
    for stage, width in enumerate((64, 128, 256), start=1):
        _conv(f, f"{stage}a", channels, width, 3, options, padding=1)
        _conv(f, f"{stage}b", width, width, 3, options, padding=1, lrn_after=stage < 3)
        f[f"pool{stage}"] = _pool(options)
        channels = width
    features = nn.Sequential(f)
    side = _spatial_size(features, in_channels, SMALL_INPUT_SIZE)
    c: OrderedDict[str, nn.Module] = OrderedDict()
    flat = channels * side * side
    if options.hidden:
        _linear(
            c, "1", flat, options.hidden, activation=options.activation, dropout=options.dropout
        )
        _linear(c, "2", options.hidden, num_classes, activation=None, dropout=options.dropout)
    else:
        _linear(c, "1", flat, num_classes, activation=None, dropout=options.dropout)
    return ConvNet(features, nn.Sequential(c))


def build_alexnet2012(in_channels: int, num_classes: int, options: AlexNet2012Options) -> ConvNet:
    g = 2 if options.groups else 1
    # 227 is the paper's unpadded convention, 224 torchvision's padded one: both give 55.
    pad1 = 0 if options.input_size == 227 else 2
    f: OrderedDict[str, nn.Module] = OrderedDict()
    _conv(f, "1", in_channels, 96, 11, options, stride=4, padding=pad1, lrn_after=True)
    f["pool1"] = _pool(options, pad=0)
    _conv(f, "2", 96, 256, 5, options, padding=2, groups=g, lrn_after=True)
    f["pool2"] = _pool(options, pad=0)
    _conv(f, "3", 256, 384, 3, options, padding=1)
    _conv(f, "4", 384, 384, 3, options, padding=1, groups=g)
    _conv(f, "5", 384, 256, 3, options, padding=1, groups=g)
    f["pool3"] = _pool(options, pad=0)
    classifier = _alexnet_classifier(256 * 6 * 6, num_classes, options.activation, options.dropout)
    # The adaptive pool is a no-op at 6x6; it keeps other sizes (or pooling choices) working.
    return ConvNet(nn.Sequential(f), classifier, AdaptiveAvgPool2d(6))


# --------------------------------------------------------------------------- public API


def build_model(
    name: str, *, in_channels: int, num_classes: int, options: BaseModel | Mapping[str, Any]
) -> nn.Module:
    """Model ``name`` for ``in_channels`` x ``input_size(name)`` inputs and ``num_classes``;
    its weights come from torch's global RNG."""
    resolved = resolve_options(name, options)
    builder: Callable[[int, int, Any], ConvNet] = globals()[f"build_{name}"]
    model = builder(in_channels, num_classes, resolved)
    scheme = getattr(resolved, "effective_init", resolved.init)
    _init_weights(model, scheme, resolved.activation, "lenet5" if name == "lenet5" else "alexnet")
    return model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (frozen ones do not count towards model size in the report)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates for one (C, H, W) image, as papers count them: one eval-mode
    forward under FlopCounterMode (2 FLOPs per MAC), the model's mode restored after."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
