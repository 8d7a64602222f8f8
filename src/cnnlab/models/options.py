"""Per-model architecture options (``model.<name>`` in params.yaml).

Kept free of torch so that validating params costs nothing at stage start-up.
Every model in the registry has an entry here, even if it takes no options.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeNetOptions(_Options):
    """The modern LeNet: ReLU and max-pooling (REFERENCE.md, "LeNet, modern")."""


class AlexNetOptions(_Options):
    """AlexNet adapted to 32x32 inputs (REFERENCE.md, "AlexNet for 32x32 inputs")."""

    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    #: The variant with an adaptive 6x6 average pool before the classifier.
    adaptive_pool: bool = False


MODEL_OPTIONS: dict[str, type[_Options]] = {
    "lenet": LeNetOptions,
    "alexnet": AlexNetOptions,
}

ActivationName = Literal["relu", "leaky_relu", "elu", "tanh", "sigmoid"]
