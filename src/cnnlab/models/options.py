"""The model registry: one :class:`ModelSpec` per name in :data:`MODELS`, torch-free so that
validating params costs no torch import. Adding a model: its options and spec here, its
``build_<name>`` in :mod:`cnnlab.models.zoo`, its entry under ``model:`` in params.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


class ModelOptions(BaseModel):
    """Switches every model shares, so one sweep key means the same for all; no defaults
    here: params.yaml's ``model.<name>`` holds every value."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    activation: ActivationName
    pooling: PoolingName
    norm: NormName
    dropout: float = Field(ge=0.0, lt=1.0)
    init: PlainInitName


class LeNetOptions(ModelOptions):
    """The modern LeNet: ReLU and max-pooling (docs/experiments.md, "LeNet")."""


class LeNet5Options(ModelOptions):
    """LeNet-5 as in 1998 with tanh and average pooling, C5 as a conv (LeCun et al. 1998).

    ``init: paper`` is LeCun's uniform(-2.4/fan_in, 2.4/fan_in) with zero biases.
    """

    init: InitName


class AlexNetOptions(ModelOptions):
    """AlexNet adapted to 32x32 inputs (docs/experiments.md, "AlexNet for 32x32 inputs").

    ``init: paper`` is the 2012 scheme: weights N(0, 0.01), bias 1 in conv2/4/5 and the
    hidden linear layers.
    """

    #: The variant with an adaptive 6x6 average pool before the classifier.
    adaptive_pool: bool
    init: InitName


class AlexNetBNOptions(ModelOptions):
    """AlexNet-mini: three stages of two conv+BatchNorm+ReLU and a max-pool (docs/experiments.md).

    ``hidden``: the width of the one hidden linear layer (0: none). Dropout comes before
    every linear layer here, so the single-layer variant is still regularised.
    """

    hidden: int = Field(ge=0, le=16384)


class AlexNet2012Options(ModelOptions):
    """The original AlexNet (Krizhevsky et al. 2012) at 224x224 (conv1 padded by 2, as
    torchvision) or 227x227 (unpadded, as the paper): both give 55 -> 27 -> 13 -> 6 maps."""

    #: conv2/4/5 split in two groups, as the paper's two-GPU layout (fewer parameters).
    groups: bool
    input_size: Literal[224, 227]
    init: InitName
    #: Shorthand for ``init: paper``: N(0, 0.01), bias 1 in conv2/4/5 and hidden linears.
    paper_init: bool

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


@dataclass(frozen=True)
class ModelSpec:
    #: Shown in tables and figure legends.
    title: str
    #: The schema of ``model.<name>`` in params.yaml.
    options: type[ModelOptions]


#: The models of params ``models:``; each is built by ``cnnlab.models.zoo.build_<name>``.
MODELS: dict[str, ModelSpec] = {
    "lenet": ModelSpec("LeNet", LeNetOptions),
    "lenet5": ModelSpec("LeNet-5 (1998)", LeNet5Options),
    "alexnet": ModelSpec("AlexNet", AlexNetOptions),
    "alexnet_bn": ModelSpec("AlexNet-BN", AlexNetBNOptions),
    "alexnet2012": ModelSpec("AlexNet (2012)", AlexNet2012Options),
}


def title(name: str) -> str:
    """The model's name in reports; a name that is not registered is shown as it is."""
    spec = MODELS.get(name)
    return spec.title if spec is not None else name


def resolve_options(name: str, options: BaseModel | Mapping[str, Any]) -> Any:
    """The options object for model ``name``, validated if given as a mapping; another
    model's options are refused (they would build the wrong architecture)."""
    try:
        options_class = MODELS[name].options
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None
    if isinstance(options, Mapping):
        return options_class.model_validate(dict(options))
    if not isinstance(options, options_class):
        raise TypeError(
            f"model {name!r} takes {options_class.__name__}, got {type(options).__name__}"
        )
    return options


def input_size(name: str, options: BaseModel | Mapping[str, Any]) -> int:
    """The square spatial size model ``name`` expects; batches are padded/resized to it."""
    resolved = resolve_options(name, options)
    return int(getattr(resolved, "input_size", SMALL_INPUT_SIZE))
