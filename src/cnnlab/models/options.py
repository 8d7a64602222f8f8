"""Per-model architecture options (``model.<name>`` in params.yaml).

Kept free of torch so that validating params costs nothing at stage start-up.
Every model in the registry has an entry here, even if it takes no options.

Every model shares the same ablation switches (``activation``, ``pooling``, ``norm``,
``dropout``, ``init``) so that one sweep key means the same thing for all of them; each class
only changes the defaults, and the defaults give exactly the architecture docs/experiments.md
describes, with its parameter count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

ActivationName = Literal["relu", "leaky_relu", "elu", "tanh", "sigmoid"]
#: ``max`` and ``avg`` are 2x2 windows with stride 2; the ``_overlap`` ones are AlexNet's
#: 3x3 windows with stride 2 (padded by 1 in the 32x32 models so map sizes do not change).
PoolingName = Literal["max", "max_overlap", "avg", "avg_overlap"]
#: ``lrn`` follows the activation before the first two pools (where AlexNet put it);
#: ``batchnorm`` sits between every conv and its activation.
NormName = Literal["none", "lrn", "batchnorm"]
#: ``default`` leaves PyTorch's own init; ``paper`` is the model's original scheme.
InitName = Literal["default", "kaiming", "xavier", "paper"]
#: For models that have no original paper to take an init from.
PlainInitName = Literal["default", "kaiming", "xavier"]

#: Square input size of every model except ``alexnet2012`` (MNIST's 28x28 is padded to it).
SMALL_INPUT_SIZE = 32


class _Options(BaseModel):
    """Switches every model shares; dropout goes before each hidden linear layer."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    activation: ActivationName = "relu"
    pooling: PoolingName = "max"
    norm: NormName = "none"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    init: PlainInitName = "default"


class LeNetOptions(_Options):
    """The modern LeNet: ReLU and max-pooling (docs/experiments.md, "LeNet").

    ``dropout`` (off by default) goes before the two hidden linear layers, as in AlexNet.
    """


class LeNet5Options(_Options):
    """LeNet-5 as in 1998: tanh, average pooling, C5 as a conv (LeCun et al. 1998).

    ``init: paper`` is LeCun's uniform(-2.4/fan_in, 2.4/fan_in) with zero biases.
    """

    activation: ActivationName = "tanh"
    pooling: PoolingName = "avg"
    init: InitName = "default"


class AlexNetOptions(_Options):
    """AlexNet adapted to 32x32 inputs (docs/experiments.md, "AlexNet for 32x32 inputs").

    ``init: paper`` is the 2012 scheme: weights N(0, 0.01), bias 1 in conv2/4/5 and the
    hidden linear layers.
    """

    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    #: The variant with an adaptive 6x6 average pool before the classifier.
    adaptive_pool: bool = False
    init: InitName = "default"


class AlexNetBNOptions(_Options):
    """AlexNet-mini: three stages of two conv+BatchNorm+ReLU and a max-pool (docs/experiments.md).

    The reference leaves the classifier's width open; ``hidden`` is the one hidden linear
    layer between the features and the output (0: a single linear layer). Dropout comes
    before every linear layer here, so the single-layer variant is still regularised.
    """

    norm: NormName = "batchnorm"
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    hidden: int = Field(512, ge=0, le=16384)


class AlexNet2012Options(_Options):
    """The original AlexNet (Krizhevsky et al. 2012) at 224x224 or 227x227.

    At 227 conv1 is unpadded (the paper's and Caffe's convention) and at 224 it is padded by
    2 (torchvision's), so both give the reference's 55 -> 27 -> 13 -> 6 maps.
    """

    pooling: PoolingName = "max_overlap"
    norm: NormName = "lrn"
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    #: conv2/4/5 split in two groups, as the paper's two-GPU layout (fewer parameters).
    groups: bool = True
    input_size: Literal[224, 227] = 224
    init: InitName = "default"
    #: Shorthand for ``init: paper``: N(0, 0.01), bias 1 in conv2/4/5 and hidden linears.
    paper_init: bool = False

    @field_validator("paper_init")
    @classmethod
    def _paper_init_agrees_with_init(cls, paper_init: bool, info: ValidationInfo) -> bool:
        init = info.data.get("init", "default")
        if paper_init and init not in ("default", "paper"):
            raise ValueError(f"true contradicts init: {init!r}; set one or the other")
        return paper_init

    @property
    def effective_init(self) -> str:
        """The init scheme after resolving the ``paper_init`` shorthand."""
        return "paper" if self.paper_init else self.init


MODEL_OPTIONS: dict[str, type[_Options]] = {
    "lenet": LeNetOptions,
    "lenet5": LeNet5Options,
    "alexnet": AlexNetOptions,
    "alexnet_bn": AlexNetBNOptions,
    "alexnet2012": AlexNet2012Options,
}

#: Names for tables and figure legends.
MODEL_TITLES: dict[str, str] = {
    "lenet": "LeNet",
    "lenet5": "LeNet-5 (1998)",
    "alexnet": "AlexNet",
    "alexnet_bn": "AlexNet-BN",
    "alexnet2012": "AlexNet (2012)",
}


def resolve_options(name: str, options: BaseModel | Mapping[str, Any] | None = None) -> Any:
    """The options object for model ``name``: defaults for ``None``, validated for a mapping.

    Rejecting another model's options class here catches a mix-up (say, AlexNet options
    passed for LeNet) that would otherwise silently build the defaults.
    """
    try:
        options_class = MODEL_OPTIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(MODEL_OPTIONS)}"
        ) from None
    if options is None:
        return options_class()
    if isinstance(options, Mapping):
        return options_class.model_validate(dict(options))
    if not isinstance(options, options_class):
        raise TypeError(
            f"model {name!r} takes {options_class.__name__}, got {type(options).__name__}"
        )
    return options


def input_size(name: str, options: BaseModel | Mapping[str, Any] | None = None) -> int:
    """The square spatial size model ``name`` expects; batches are padded/resized to it."""
    resolved = resolve_options(name, options)
    return int(getattr(resolved, "input_size", SMALL_INPUT_SIZE))
