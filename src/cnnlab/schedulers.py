"""The learning-rate schedule registry (``scheduler.name`` in params.yaml), stepped per epoch."""

from __future__ import annotations

from typing import Any

import torch


def build_scheduler(
    settings: Any, optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``settings`` is the validated ``scheduler:`` section of params.yaml."""
    if settings.name == "none":
        return None
    if settings.name == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=settings.step_size, gamma=settings.gamma
        )
    if settings.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    raise ValueError(f"scheduler.name: unknown {settings.name!r}")  # params.py rejects it first
