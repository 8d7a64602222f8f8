"""The lr schedules of ``scheduler.name`` in params.yaml, and an optional warm-up: torch's
schedulers, the epoch ones stepped after every epoch, OneCycleLR (no momentum cycling) and
the warm-up (LinearLR) after every batch. :class:`LRSchedule` says which to step when.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import lr_scheduler as S


def _epoch_scheduler(
    settings: Any, optimizer: torch.optim.Optimizer, epochs: int
) -> S.LRScheduler | S.ReduceLROnPlateau | None:
    s, name = settings, settings.name
    if name == "step":
        return S.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if name == "multistep":
        return S.MultiStepLR(optimizer, milestones=list(s.milestones), gamma=s.gamma)
    if name == "cosine":
        return S.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=s.min_lr)
    if name == "plateau":
        mode = "max" if s.monitor == "val_acc" else "min"
        return S.ReduceLROnPlateau(
            optimizer,
            mode=mode,
            factor=s.factor,
            patience=s.patience,
            threshold=s.threshold,
            threshold_mode="rel",
            cooldown=s.cooldown,
            min_lr=s.min_lr,
        )
    return None


def _one_cycle(settings: Any, optimizer: torch.optim.Optimizer, total: int) -> S.LRScheduler:
    """OneCycleLR with cosine phases; ``total`` is the number of batches in the run."""
    s = settings
    if s.pct_start * total > 1:
        peaks = [float(g["lr"]) for g in optimizer.param_groups]
        return S.OneCycleLR(
            optimizer,
            max_lr=peaks,
            total_steps=total,
            pct_start=s.pct_start,
            div_factor=s.div_factor,
            final_div_factor=s.final_div_factor,
            anneal_strategy="cos",
            cycle_momentum=False,
        )
    # A rise shorter than one batch: OneCycleLR divides by zero (pct_start * total == 1) or
    # starts its decay at a negative step; the schedule is then its decay alone, from the peak.
    (peak,) = {float(g["lr"]) for g in optimizer.param_groups}  # one eta_min for all groups
    final = peak / s.div_factor / s.final_div_factor
    return S.CosineAnnealingLR(optimizer, T_max=max(total - 1, 1), eta_min=final)


class LRSchedule:
    """torch's schedulers for one run: :meth:`step_batch` after every optimizer step,
    :meth:`step_epoch` after every validation (with its metrics, for ``plateau``)."""

    def __init__(
        self, settings: Any, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int
    ) -> None:
        """``settings``: params' ``scheduler:``; ``steps_per_epoch`` matters to onecycle and the
        warm-up alone."""
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(f"need epochs, steps_per_epoch >= 1; got {epochs}, {steps_per_epoch}")
        self.optimizer = optimizer
        self.settings = settings
        self.total_steps = epochs * steps_per_epoch
        warmup = settings.warmup_epochs
        self.warmup_steps = max(1, round(warmup * steps_per_epoch)) if warmup > 0 else 0
        self.warmup: S.LinearLR | None = None
        if self.warmup_steps > 1:  # one warm-up step is the full lr from the first batch
            w = self.warmup_steps
            self.warmup = S.LinearLR(optimizer, 1 / w, 1.0, total_iters=w - 1)
        self.per_batch: S.LRScheduler | None = None
        self.per_epoch: S.LRScheduler | S.ReduceLROnPlateau | None = None
        if settings.name == "onecycle":
            self.per_batch = _one_cycle(settings, optimizer, self.total_steps)
        else:
            self.per_epoch = _epoch_scheduler(settings, optimizer, epochs)

    def _warmup_factor(self) -> float:
        """LinearLR's factor for the next batch: (batches done + 1) / warm-up steps."""
        if self.warmup is None:
            return 1.0
        return min(1.0, (self.warmup.last_epoch + 1) / self.warmup_steps)

    def step_batch(self) -> None:
        if self.warmup is not None:
            self.warmup.step()
        # torch's one-cycle has no lr after the run's last batch: the lr stays at the final one
        if self.per_batch is not None and self.per_batch.last_epoch < self.total_steps - 1:
            self.per_batch.step()

    def step_epoch(self, *, val_loss: float, val_acc: float) -> None:
        if self.per_epoch is None:
            return
        # Hand-written: the epoch schedule steps the lr without the warm-up's factor, since
        # CosineAnnealingLR's eta_min and ReduceLROnPlateau's min_lr (and its 1e-8 eps) would
        # otherwise bound the warmed lr; tests/test_recipes.py shows it in
        # test_warmup_with_a_floor_is_what_torch_alone_gets_wrong.
        warm = self._warmup_factor()
        if warm != 1.0:
            for group in self.optimizer.param_groups:
                group["lr"] /= warm
        if isinstance(self.per_epoch, S.ReduceLROnPlateau):
            metric = val_acc if self.settings.monitor == "val_acc" else val_loss
            self.per_epoch.step(float(metric))
        else:
            self.per_epoch.step()
        if warm != 1.0:
            for group in self.optimizer.param_groups:
                group["lr"] *= warm

    def _parts(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "per_batch": self.per_batch, "per_epoch": self.per_epoch}

    def state_dict(self) -> dict[str, Any]:
        """torch's state_dicts, plain values (the lr itself is in the optimizer's)."""
        return {k: None if p is None else p.state_dict() for k, p in self._parts().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, part in self._parts().items():
            if part is not None:
                part.load_state_dict(state[key])
