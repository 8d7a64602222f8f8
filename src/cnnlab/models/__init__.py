"""Models: the registry ``MODELS`` (torch-free) and the builders (torch, loaded on first use).

``import cnnlab.models`` stays cheap so that params validation never pays torch's import
time; ``build_model``, ``count_parameters`` and ``count_macs`` import
:mod:`cnnlab.models.zoo` the first time they are looked up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab.models.options import (
    MODELS,
    ActivationName,
    AlexNet2012Options,
    AlexNetBNOptions,
    AlexNetOptions,
    InitName,
    LeNet5Options,
    LeNetOptions,
    ModelOptions,
    ModelSpec,
    NormName,
    PoolingName,
    input_size,
    resolve_options,
    title,
)

if TYPE_CHECKING:
    from cnnlab.models.zoo import build_model, count_macs, count_parameters

_FROM_ZOO = frozenset({"build_model", "count_macs", "count_parameters"})

__all__ = [
    "MODELS",
    "ActivationName",
    "AlexNet2012Options",
    "AlexNetBNOptions",
    "AlexNetOptions",
    "InitName",
    "LeNet5Options",
    "LeNetOptions",
    "ModelOptions",
    "ModelSpec",
    "NormName",
    "PoolingName",
    "build_model",
    "count_macs",
    "count_parameters",
    "input_size",
    "resolve_options",
    "title",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_ZOO:
        from cnnlab.models import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
