"""The optimizer registry: every name usable as ``optimizer:`` in params.yaml.

The table of defaults lives in params.yaml (``optimizers:``) so users see and edit it; this
module says which torch class each name is and which keys it accepts. torch is imported only
when an optimizer is built, so params validation stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class OptimizerSpec:
    torch_class: str
    #: Keys of ``optimizers.<name>`` that this optimizer understands.
    keys: frozenset[str]
    #: Arguments fixed by the name itself (``nag`` is SGD with Nesterov momentum).
    fixed: dict[str, Any] = field(default_factory=dict)
    #: Whether torch offers a fused (single-kernel) step for it on the CPU and on CUDA. On a
    #: GPU the fused step also skips an update on the device (GradScaler's ``found_inf``),
    #: which the training loop uses instead of a host check per step.
    has_fused_step: bool = False


_SGD_KEYS = frozenset({"lr", "momentum", "dampening", "weight_decay"})

OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec("SGD", frozenset({"lr", "weight_decay"}), has_fused_step=True),
    "momentum": OptimizerSpec("SGD", _SGD_KEYS, has_fused_step=True),
    "nag": OptimizerSpec(
        "SGD",
        frozenset({"lr", "momentum", "weight_decay"}),
        fixed={"nesterov": True},
        has_fused_step=True,
    ),
    "adagrad": OptimizerSpec("Adagrad", frozenset({"lr", "lr_decay", "weight_decay", "eps"})),
    "adadelta": OptimizerSpec("Adadelta", frozenset({"lr", "rho", "weight_decay", "eps"})),
    "rmsprop": OptimizerSpec(
        "RMSprop", frozenset({"lr", "alpha", "momentum", "weight_decay", "eps", "centered"})
    ),
    "adam": OptimizerSpec(
        "Adam", frozenset({"lr", "betas", "weight_decay", "eps", "amsgrad"}), has_fused_step=True
    ),
    "adamw": OptimizerSpec(
        "AdamW", frozenset({"lr", "betas", "weight_decay", "eps", "amsgrad"}), has_fused_step=True
    ),
}


def resolve_settings(
    name: str, table: dict[str, dict[str, Any]], lr: float | None, weight_decay: float | None
) -> dict[str, Any]:
    """The keyword arguments for optimizer ``name``: its table row, then the top-level overrides.

    Top-level ``lr`` / ``weight_decay`` win over the row so that ``-S lr=...`` works whatever
    optimizer is chosen; ``null`` keeps the row's value.
    """
    settings = {k: v for k, v in table.get(name, {}).items() if v is not None}
    if lr is not None:
        settings["lr"] = lr
    if weight_decay is not None:
        settings["weight_decay"] = weight_decay
    if "betas" in settings:
        settings["betas"] = tuple(settings["betas"])
    return settings


#: Devices whose fused optimizer steps this project uses (torch has them for MPS too, untried).
FUSED_DEVICES = frozenset({"cpu", "cuda"})


def build_optimizer(
    name: str,
    parameters: Iterable[torch.nn.Parameter],
    settings: dict[str, Any],
    *,
    fused: bool = False,
    device: str = "cpu",
) -> torch.optim.Optimizer:
    """Build the torch optimizer; ``fused`` asks for the single-kernel step where torch has one
    (for this optimizer, on ``device``: a device type such as ``cpu`` or ``cuda``)."""
    import torch

    spec = OPTIMIZERS[name]
    kwargs = {**settings, **spec.fixed}
    if fused and spec.has_fused_step and device in FUSED_DEVICES:
        kwargs["fused"] = True
    return getattr(torch.optim, spec.torch_class)(parameters, **kwargs)
