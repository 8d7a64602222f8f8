"""The training loop: epochs over in-memory tensors, validation, best/last state, divergence.

Every epoch's randomness (shuffle, augmentation, dropout) is seeded from (seed, epoch), so a
resumed run draws what the uninterrupted one drew; the schedule and the fp16 loss scale are
the only other state. On a GPU the host reads device values once per epoch, plus the
divergence flag every ``check_every`` steps: reading it every step would serialise the two.
DDP sits at the loop's edges (:mod:`cnnlab.distributed`): the model wrapper, this rank's
share of each batch, and the reductions; for one process each of these is the identity.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import distributed
from cnnlab.data.batches import Augmentation, BatchMaker
from cnnlab.distributed import SINGLE, World
from cnnlab.evaluation import evaluate_batches, sum_dtype
from cnnlab.runtime import epoch_seed, synchronize
from cnnlab.schedulers import LRSchedule

#: Steps between host reads of the divergence flag on an accelerator (each read waits for
#: every queued step) and between refreshes of the progress bar.
CHECK_EVERY_ON_DEVICE = 50
BAR_REFRESH_STEPS = 50


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    #: The global batch: under DDP each rank takes its share.
    batch_size: int
    seed: int
    augment: Augmentation = field(default_factory=Augmentation)
    eval_batch_size: int = 250
    #: Of the training loss only; the recorded losses are plain cross-entropy.
    label_smoothing: float = 0.0
    clip_grad_norm: float | None = None
    #: Autocast dtype on CUDA; None = float32.
    amp_dtype: torch.dtype | None = None
    #: A tqdm bar per epoch, or one plain line per epoch (CI logs, files).
    progress: bool = False
    label: str = ""
    world: World = SINGLE
    #: None: every step on the CPU, where the read is free; else CHECK_EVERY_ON_DEVICE.
    check_every: int | None = None


@dataclass
class Run:
    """One run's objects, built from params by :func:`cnnlab.recipe.build_run`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRSchedule | None
    train_batches: BatchMaker
    val_batches: BatchMaker
    config: TrainConfig


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float


@dataclass
class TrainState:
    """Everything needed to continue a run, and what it has achieved so far."""

    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = -1.0
    best_model: dict[str, torch.Tensor] | None = None
    diverged_epoch: int | None = None
    train_seconds: float = 0.0
    train_images: int = 0
    #: GradScaler state of an fp16 run, so a resumed run keeps its loss scale.
    grad_scaler: dict[str, Any] | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None

    def summary(self, epochs: int) -> dict[str, Any]:
        """What the run achieved, for metrics files: nulls where no epoch completed."""
        done = bool(self.history)
        return {
            "best_val_acc": round(self.best_val_acc, 6) if done else None,
            "best_epoch": self.best_epoch or None,
            "final_val_acc": self.history[-1].val_acc if done else None,
            "epochs": epochs,
            "epochs_completed": self.epoch,
            "diverged": self.diverged,
            "diverged_epoch": self.diverged_epoch,
        }

    def timings(self) -> dict[str, Any]:
        """What was measured, not achieved: differs from run to run, so kept apart."""
        return {
            "train_seconds": round(self.train_seconds, 3),
            "train_images_per_second": (
                round(self.train_images / self.train_seconds, 1) if self.train_images else None
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        # not asdict(self): that would deep-copy the best weights at every save
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        return state | {"history": [asdict(r) for r in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(**{**data, "history": [EpochRecord(**r) for r in data["history"]]})


def _validate(model: nn.Module, batches: BatchMaker, config: TrainConfig) -> tuple[float, float]:
    """Validation loss and accuracy, the same on every rank (the schedule and the divergence
    check must agree): each rank evaluates a contiguous share and the sums are reduced."""
    distributed.broadcast_buffers(model)
    span = distributed.rank_range(len(batches), config.world)
    loss_sum, logits, labels = evaluate_batches(model, batches, config.eval_batch_size, span)
    # a rank may get no image: the last ranks of a split smaller than ranks x share
    correct = (
        (logits.argmax(1) == labels).sum() if len(labels) else torch.zeros((), dtype=torch.int64)
    )
    loss_sum, correct = distributed.all_reduce_sum(batches.device, loss_sum, correct)
    n = max(1, len(batches))
    return loss_sum.item() / n, correct.item() / n


def _autocast(dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA only (:func:`cnnlab.recipe.amp_dtype`)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


class _GuardedStep:
    """The optimizer step, made a no-op on the device once ``healthy`` is false.

    Fused optimizers take GradScaler's ``found_inf`` and skip the update in their kernel;
    others step, then get their parameters back from a snapshot with ``torch.where``; under
    GradScaler a NaN factor on the loss makes the scaler skip the step as an overflow.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], masked: bool):
        self.optimizer = optimizer
        self.params = params
        self.masked = masked
        self.fused = bool(getattr(optimizer, "_step_supports_amp_scaling", False))
        self.snapshot: list[torch.Tensor] = []
        if masked and not self.fused:
            self.snapshot = [torch.empty_like(p) for p in params]

    def loss_to_scale(self, loss: torch.Tensor, healthy: torch.Tensor) -> torch.Tensor:
        """The loss times 1 (the same bits) while healthy, else NaN."""
        if not self.masked:
            return loss
        return loss * torch.where(healthy, 1.0, math.nan)

    def step(self, healthy: torch.Tensor) -> None:
        if not self.masked:
            self.optimizer.step()
        elif self.fused:
            self.optimizer.found_inf = (~healthy).float()  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        else:
            with torch.no_grad():
                torch._foreach_copy_(self.snapshot, self.params)
            self.optimizer.step()
            with torch.no_grad():
                for param, old in zip(self.params, self.snapshot, strict=True):
                    param.copy_(torch.where(healthy, param, old))


def _augment_generator(
    config: TrainConfig, epoch: int, device: torch.device, shared: torch.Generator
) -> torch.Generator:
    """On CUDA a generator on the device (a draw copied from the host would wait for it).
    On the CPU rank 0 draws from the shuffle's generator, as the single process always has
    (its runs keep their bytes), and every other rank from its own stream."""
    if device.type != "cuda" and config.world.is_main:
        return shared
    seed = epoch_seed(config.seed, epoch, 2 + 2 * config.world.rank)
    return torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)


def _warm_up(model: nn.Module, batches: BatchMaker, config: TrainConfig) -> None:
    """On CUDA, one untimed pass of a copy of the model, so that CUDA's lazy start (handles,
    kernel loading) is not counted as training; the run's own objects never see it."""
    if batches.device.type != "cuda" or len(batches) == 0:
        return
    twin = copy.deepcopy(model).train()
    x, y = batches.batch(slice(0, max(1, config.batch_size // config.world.size)))
    with _autocast(config.amp_dtype):
        loss = F.cross_entropy(twin(x), y)
    loss.backward()
    synchronize(batches.device)


class _Loop:
    """The step loop of :func:`train`, with what stays the same from epoch to epoch."""

    def __init__(self, run: Run, state: TrainState) -> None:
        self.run, self.config = run, run.config
        device = run.train_batches.device
        self.check_every = self.config.check_every or (
            1 if device.type == "cpu" else CHECK_EVERY_ON_DEVICE
        )
        self.params = [p for p in run.model.parameters() if p.requires_grad]
        self.guard = _GuardedStep(run.optimizer, self.params, masked=self.check_every > 1)
        self.scaler = None
        if self.config.amp_dtype == torch.float16:  # bf16 has float32's range: no scaling
            self.scaler = torch.amp.GradScaler("cuda")
            if state.grad_scaler is not None:
                self.scaler.load_state_dict(state.grad_scaler)
        self.net = distributed.wrap(run.model, self.config.world, device)
        self.batches = distributed.global_batches(
            len(run.train_batches), self.config.batch_size, self.config.world.size
        )
        #: Training images per epoch (a last partial global batch may be cut).
        self.used = sum(length for _, length in self.batches)

    def epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
        """One pass: the loss and correct sums (on the device), seconds, and divergence."""
        config, world, data = self.config, self.config.world, self.run.train_batches
        device = data.device
        # dropout: its own stream per rank (rank 0's is the single process's)
        torch.manual_seed(epoch_seed(config.seed, epoch, stream=1 + 2 * world.rank))
        generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
        # the same on every rank; copied to the device once per epoch
        order = torch.randperm(len(data), generator=generator).to(device)
        augment_generator = _augment_generator(config, epoch, device, generator)
        loss_sum = torch.zeros((), dtype=sum_dtype(device), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        healthy = torch.ones((), dtype=torch.bool, device=device)
        bar = None
        if config.progress and world.is_main:
            from tqdm import tqdm

            desc = f"{config.label} epoch {epoch}/{config.epochs}"
            bar = tqdm(total=self.used, desc=desc, unit="img", unit_scale=True, leave=False)
        seen, diverged = 0, False
        started = time.perf_counter()
        for step, (start, length) in enumerate(self.batches):
            index = distributed.rank_slice(order, start, length, world)
            x, y = data.batch(index, config.augment, augment_generator)
            with _autocast(config.amp_dtype):
                logits = self.net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            # every rank skips the same steps and stops at the same one
            healthy &= distributed.all_ranks_true(torch.isfinite(loss))
            check = (step + 1) % self.check_every == 0 or step == len(self.batches) - 1
            if check and not healthy.item():  # the host waits for the device here only
                diverged = True
                break
            self._update(loss, healthy)
            logged = loss.detach()
            if config.label_smoothing:
                logged = F.cross_entropy(logits.detach().float(), y)
            loss_sum += logged.to(loss_sum.dtype) * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if bar is not None:
                bar.update(length)
                if (step + 1) % BAR_REFRESH_STEPS == 0:
                    bar.set_postfix(
                        loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}"
                    )
        if bar is not None:
            bar.close()
        synchronize(device)  # the epoch's time includes the work still queued on the device
        return loss_sum, correct, time.perf_counter() - started, diverged

    def _update(self, loss: torch.Tensor, healthy: torch.Tensor) -> None:
        """Backward, optional clipping, the optimizer step, and the per-batch schedule."""
        clip, optimizer, scaler = self.config.clip_grad_norm, self.run.optimizer, self.scaler
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(self.guard.loss_to_scale(loss, healthy)).backward()
            if clip is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
                nn.utils.clip_grad_norm_(self.params, clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(self.params, clip)
            self.guard.step(healthy)
        if self.run.scheduler is not None:
            self.run.scheduler.step_batch()


def train(
    run: Run,
    *,
    state: TrainState | None = None,
    on_epoch: Callable[[EpochRecord, TrainState], None] | None = None,
) -> TrainState:
    """Train from ``state`` (a fresh run if None) until ``config.epochs`` or divergence.

    ``on_epoch`` runs after each completed epoch with the state updated (logs, resume
    state). A non-finite loss ends the run with ``diverged_epoch`` set instead of raising,
    so a sweep goes on; a non-finite validation loss marks its epoch diverged and is never
    the best. Between two reads of the divergence flag, the steps after a non-finite loss
    are skipped on the device (:class:`_GuardedStep`), so the run ends with the weights of
    the last finite step as with a read every step; only BatchNorm's running statistics
    may have seen up to ``check_every - 1`` more batches.
    """
    model, config, world = run.model, run.config, run.config.world
    state = state or TrainState()
    loop = _Loop(run, state)
    if state.epoch < config.epochs and not state.diverged:
        _warm_up(model, run.train_batches, config)
    while state.epoch < config.epochs and not state.diverged:
        epoch = state.epoch + 1
        model.train()
        loss_sum, correct, seconds, diverged = loop.epoch(epoch)
        state.train_seconds += seconds
        if diverged:
            state.diverged_epoch = epoch
            if world.is_main:
                print(
                    f"{config.label} epoch {epoch}: loss is not finite; the run diverged and "
                    "stops here (lower lr, or choose another optimizer)",
                    file=sys.stderr,
                    flush=True,
                )
            break
        state.train_images += loop.used
        loss_sum, correct = distributed.all_reduce_sum(loss_sum.device, loss_sum, correct)
        val_loss, val_acc = _validate(model, run.val_batches, config)
        lr = run.optimizer.param_groups[0]["lr"]  # the epoch's last batch's
        if run.scheduler is not None:
            run.scheduler.step_epoch(val_loss=val_loss, val_acc=val_acc)
        record = EpochRecord(
            epoch=epoch,
            train_loss=round(loss_sum.item() / loop.used, 6),
            train_acc=round(correct.item() / loop.used, 6),
            val_loss=round(val_loss, 6),
            val_acc=round(val_acc, 6),
            lr=lr,
            seconds=round(seconds, 3),
        )
        if loop.scaler is not None:
            state.grad_scaler = loop.scaler.state_dict()
        state.epoch = epoch
        state.history.append(record)
        if not math.isfinite(val_loss):
            state.diverged_epoch = epoch
        elif val_acc > state.best_val_acc:  # unrounded
            state.best_val_acc, state.best_epoch = val_acc, epoch
            state.best_model = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
        if world.is_main:
            print(
                f"{config.label} epoch {epoch}/{config.epochs}: train loss {record.train_loss:.4f}"
                f" acc {record.train_acc:.4f} | val loss {record.val_loss:.4f}"
                f" acc {record.val_acc:.4f} | {loop.used / seconds:,.0f} img/s",
                flush=True,
            )
        if on_epoch is not None:
            on_epoch(record, state)
    return state
