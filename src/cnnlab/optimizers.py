"""The optimizer registry: every name usable as ``optimizer:`` in params.yaml, its torch
class and the keys it accepts (the values are params.yaml's ``optimizers:`` table). torch is
imported only to build one, so params validation stays cheap.
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
    #: torch has a fused (single-kernel) step for it on the CPU and CUDA, which can also
    #: skip an update on the device (GradScaler's ``found_inf``).
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
    """The keyword arguments for optimizer ``name``: its table row, then the top-level
    ``lr`` / ``weight_decay`` where not null (so ``-S lr=...`` works for any optimizer)."""
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
    """The torch optimizer; ``fused`` asks for the single-kernel step where torch has one
    (for this optimizer, on the device type ``device``)."""
    import torch

    spec = OPTIMIZERS[name]
    kwargs = {**settings, **spec.fixed}
    if fused and spec.has_fused_step and device in FUSED_DEVICES:
        kwargs["fused"] = True
    return getattr(torch.optim, spec.torch_class)(parameters, **kwargs)
