"""The learning-rate schedules of ``scheduler.name`` in params.yaml, and an optional warm-up.

One class, :class:`LRSchedule`, computes the lr in closed form from three counters (batches
done, epochs done, plateau reductions) instead of chaining torch's schedulers:

- epoch schedules (step, multistep, cosine, plateau) and per-batch ones (onecycle, the
  warm-up) live side by side without torch's SequentialLR/ChainedScheduler cadence rules;
- the whole state is a handful of numbers in :meth:`LRSchedule.state_dict`, so a resumed run
  sets exactly the lr the uninterrupted run had, with no recursion to replay;
- the same counters always give the same float, so runs stay bit-for-bit repeatable.

The formulas are torch's own (StepLR, MultiStepLR, CosineAnnealingLR, OneCycleLR without
momentum cycling, ReduceLROnPlateau in relative-threshold mode); tests check them against
torch's classes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: Schedules whose lr changes between batches rather than between epochs.
PER_BATCH = frozenset({"onecycle"})


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


class LRSchedule:
    """Sets every param group's lr from the schedule, before each batch.

    The training loop calls :meth:`step_batch` after every optimizer step and
    :meth:`step_epoch` after every validation; the latter takes the validation metrics so
    that ``plateau`` can watch them.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        settings: Any,
        *,
        epochs: int,
        steps_per_epoch: int,
    ) -> None:
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(f"need epochs, steps_per_epoch >= 1; got {epochs}, {steps_per_epoch}")
        self.optimizer = optimizer
        self.settings = settings
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        # torch's schedulers keep the starting lr in the group too; loading an optimizer
        # state (whose lr is a scheduled one) before building the schedule then still works.
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        warmup = settings.warmup_epochs
        self.warmup_steps = max(1, round(warmup * steps_per_epoch)) if warmup > 0 else 0
        self.batches = 0
        self.epoch = 0
        # plateau: what ReduceLROnPlateau tracks, under the same names.
        self.reductions = 0
        self.best: float | None = None
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._apply()

    # ------------------------------------------------------------------ the formulas

    def _main_lr(self, base: float) -> float:
        s, name = self.settings, self.settings.name
        if name == "none":
            return base
        if name == "step":
            return base * s.gamma ** (self.epoch // s.step_size)
        if name == "multistep":
            return base * s.gamma ** sum(1 for m in s.milestones if m <= self.epoch)
        if name == "cosine":
            cos = math.cos(math.pi * self.epoch / self.epochs)
            return s.min_lr + (base - s.min_lr) * (1 + cos) / 2
        if name == "plateau":
            return max(base * s.factor**self.reductions, s.min_lr)
        if name == "onecycle":
            return self._one_cycle_lr(base)
        raise ValueError(f"scheduler.name: unknown {name!r}")  # params.py rejects it first

    def _one_cycle_lr(self, peak: float) -> float:
        """torch's OneCycleLR (cosine, two phases): ``peak`` is the run's lr."""
        s = self.settings
        total = self.epochs * self.steps_per_epoch
        initial = peak / s.div_factor
        final = initial / s.final_div_factor
        step = min(self.batches, total - 1)
        rise_end = float(s.pct_start * total) - 1
        if rise_end > 0 and step <= rise_end:  # a rise shorter than one batch starts at peak
            return _cos_anneal(initial, peak, step / rise_end)
        start = max(rise_end, 0.0)
        return _cos_anneal(peak, final, (step - start) / max(total - 1 - start, 1e-12))

    def _warmup_factor(self) -> float:
        if not self.warmup_steps:
            return 1.0
        return min(1.0, (self.batches + 1) / self.warmup_steps)

    def lrs(self) -> list[float]:
        """The lr of each param group for the next batch."""
        warm = self._warmup_factor()
        return [self._main_lr(base) * warm for base in self.base_lrs]

    def _apply(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.lrs(), strict=True):
            group["lr"] = lr

    # ------------------------------------------------------------------ the loop's calls

    def step_batch(self) -> None:
        self.batches += 1
        if self.warmup_steps or self.settings.name in PER_BATCH:
            self._apply()

    def step_epoch(self, *, val_loss: float | None = None, val_acc: float | None = None) -> None:
        """End of an epoch; ``plateau`` needs the metric named by ``scheduler.monitor``."""
        self.epoch += 1
        if self.settings.name == "plateau":
            metric = val_acc if self.settings.monitor == "val_acc" else val_loss
            if metric is None:
                raise ValueError(f"the plateau schedule needs {self.settings.monitor}")
            self._watch(float(metric))
        self._apply()

    def _watch(self, metric: float) -> None:
        """ReduceLROnPlateau's bookkeeping: relative threshold, patience, cooldown."""
        s = self.settings
        if s.monitor == "val_acc":
            better = self.best is None or metric > self.best * (1 + s.threshold)
        else:
            better = self.best is None or metric < self.best * (1 - s.threshold)
        if better:
            self.best, self.num_bad_epochs = metric, 0
        else:  # NaN lands here too: a broken epoch never counts as progress
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > s.patience:
            # Count a reduction only while it still lowers some lr (torch skips changes below
            # 1e-8); past the floor the lr stays at min_lr.
            old = [max(b * s.factor**self.reductions, s.min_lr) for b in self.base_lrs]
            new = [max(b * s.factor ** (self.reductions + 1), s.min_lr) for b in self.base_lrs]
            if any(o - n > 1e-8 for o, n in zip(old, new, strict=True)):
                self.reductions += 1
            self.cooldown_counter = s.cooldown
            self.num_bad_epochs = 0

    # ------------------------------------------------------------------ torch-like API

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers only (safe for ``torch.load(weights_only=True)``)."""
        return {
            "base_lrs": list(self.base_lrs),
            "batches": self.batches,
            "epoch": self.epoch,
            "reductions": self.reductions,
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = [float(b) for b in state["base_lrs"]]
        self.batches = int(state["batches"])
        self.epoch = int(state["epoch"])
        self.reductions = int(state["reductions"])
        self.best = None if state["best"] is None else float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self._apply()


def build_scheduler(
    settings: Any, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int = 1
) -> LRSchedule:
    """``settings`` is the validated ``scheduler:`` section of params.yaml.

    ``steps_per_epoch`` (batches per epoch) matters only to onecycle and the warm-up, whose
    lr changes batch by batch.
    """
    return LRSchedule(optimizer, settings, epochs=epochs, steps_per_epoch=steps_per_epoch)
