"""The training loop: epochs over in-memory tensors, validation, best/last state, divergence.

Every epoch's randomness (shuffle, augmentation, dropout) is seeded from (seed, epoch), so a
run resumed at epoch k draws exactly what the uninterrupted run drew: no RNG state to save.
The lr schedule and the fp16 loss scale are the only other state; they travel in the
scheduler's state_dict and in :class:`TrainState`.

On a GPU the host never waits for the device inside an epoch, except for the divergence
check every ``check_every`` steps (and a progress bar's refresh): losses and correct counts
add up in device tensors that are read once per epoch, the epoch's shuffle is copied to the
device once, augmentation draws from a generator on the device, and a non-finite loss turns
the following optimizer steps into no-ops on the device (see :func:`train`). One untimed
warm-up pass on a copy of the model keeps CUDA's lazy start out of the training time.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import distributed
from cnnlab.data.batches import Augmentation, BatchMaker
from cnnlab.distributed import SINGLE, World
from cnnlab.evaluation import sum_dtype
from cnnlab.runtime import epoch_seed, synchronize
from cnnlab.schedulers import LRSchedule

#: Steps between two host reads of the divergence flag on an accelerator. Each read waits for
#: every queued step to finish, so reading it every step would serialise host and device.
CHECK_EVERY_ON_DEVICE = 50
#: Steps between two refreshes of the progress bar's running loss and accuracy (a host read).
BAR_REFRESH_STEPS = 50


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    seed: int
    augment: Augmentation = field(default_factory=Augmentation)
    eval_batch_size: int = 250
    #: Cross-entropy label smoothing of the training loss (validation loss stays plain).
    label_smoothing: float = 0.0
    #: Max global L2 norm of the gradients before each step; None = no clipping.
    clip_grad_norm: float | None = None
    #: Autocast dtype on CUDA (float16 or bfloat16); None = float32 everywhere.
    amp_dtype: torch.dtype | None = None
    #: A tqdm bar per epoch (terminals) or one plain line per epoch (CI logs, files).
    progress: bool = False
    label: str = ""
    #: This process's rank among the DDP processes; ``batch_size`` is then the global batch.
    world: World = SINGLE
    #: Steps between host reads of the divergence flag. None: every step on the CPU, where
    #: the read costs nothing; every :data:`CHECK_EVERY_ON_DEVICE` steps on a GPU.
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
        """What the run achieved, for metrics files: nulls where no epoch completed.

        Deterministic for the same params, data and code, like every DVC output."""
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
        return {
            "epoch": self.epoch,
            "history": [asdict(r) for r in self.history],
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "best_model": self.best_model,
            "diverged_epoch": self.diverged_epoch,
            "train_seconds": self.train_seconds,
            "train_images": self.train_images,
            "grad_scaler": self.grad_scaler,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        data = dict(data)
        data["history"] = [EpochRecord(**r) for r in data["history"]]
        return cls(**data)


@torch.inference_mode()
def _validate(
    model: nn.Module, batches: BatchMaker, batch_size: int, world: World
) -> tuple[float, float]:
    """Validation loss and accuracy; under DDP split over the ranks and the sums all-reduced,
    so that every rank gets the same numbers (a single process's slice is the whole split).

    Every rank needs them (the lr schedule and the divergence check must agree), and each
    rank evaluating its own contiguous slice costs 1/world of evaluating the whole split.
    """
    distributed.broadcast_buffers(model)
    model.eval()
    n = len(batches)
    share = -(-n // world.size)
    begin, end = min(n, world.rank * share), min(n, (world.rank + 1) * share)
    loss_sum = torch.zeros((), dtype=sum_dtype(batches.device), device=batches.device)
    correct = torch.zeros((), dtype=torch.int64, device=batches.device)
    for start in range(begin, end, batch_size):
        x, y = batches.batch(slice(start, min(start + batch_size, end)))
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").to(loss_sum.dtype)
        correct += (logits.argmax(1) == y).sum()
    loss_sum, correct = distributed.all_reduce_sum(batches.device, loss_sum, correct)
    return loss_sum.item() / max(1, n), correct.item() / max(1, n)


def _progress_bar(total: int, config: TrainConfig, epoch: int) -> Any:
    if not config.progress or not config.world.is_main:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=f"{config.label} epoch {epoch}/{config.epochs}",
        unit="img",
        unit_scale=True,
        leave=False,
        file=sys.stderr,
    )


def _autocast(dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA only: on this kind of CPU bf16 autocast ran 3-35x slower."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


class _GuardedStep:
    """The optimizer step, made a no-op on the device once ``healthy`` is false.

    Only needed when the host reads the divergence flag less often than every step. Fused
    optimizers (torch's fused SGD, Adam, AdamW) take a ``found_inf`` tensor, the way
    GradScaler hands it to them, and skip the whole update in their kernel, step count
    included. Other optimizers step, then get their parameters put back from a snapshot
    with ``torch.where`` (their own state is left moved: a diverged run never saves it).
    Under GradScaler (fp16) a factor of NaN on the loss makes every gradient non-finite, and
    the scaler skips the step as it skips an overflow. Nothing here reads a device value.
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
        """What GradScaler scales: the loss times 1 (the same bits) while healthy, else NaN."""
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
    """Where an epoch's augmentation draws come from.

    On CUDA a generator on the device, so the per-image draws need no copy from the host
    (a copy from pageable memory waits for the device). On the CPU the single process keeps
    drawing from the shuffle's generator, as it always has (its runs keep their bytes), and
    every DDP rank from its own stream.
    """
    world = config.world
    stream = 2 + 2 * world.rank
    if device.type == "cuda":
        return torch.Generator(device=device).manual_seed(epoch_seed(config.seed, epoch, stream))
    if world.distributed:
        return torch.Generator().manual_seed(epoch_seed(config.seed, epoch, stream))
    return shared


def _warm_up(model: nn.Module, batches: BatchMaker, config: TrainConfig) -> None:
    """On CUDA, one untimed forward and backward pass of a copy of the model, on one batch.

    The first pass pays for CUDA's lazy start (cuDNN and cuBLAS handles, loading kernels): a
    few hundred milliseconds that are not training, and a large share of a run that trains
    in one second. The copy keeps the model's BatchNorm statistics and gradients untouched;
    dropout draws are reseeded at every epoch's start, and no optimizer, schedule or loss
    scale sees the pass, so the run's bytes do not change.
    """
    if batches.device.type != "cuda" or len(batches) == 0:
        return
    twin = copy.deepcopy(model).train()
    x, y = batches.batch(slice(0, max(1, config.batch_size // config.world.size)))
    with _autocast(config.amp_dtype):
        loss = F.cross_entropy(twin(x), y)
    loss.backward()
    synchronize(batches.device)


@dataclass
class _EpochSums:
    """What one pass over the training batches leaves: sums still on the device."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seconds: float
    diverged: bool


@dataclass
class _EpochLoop:
    """The step loop of :func:`train`, with what stays the same from epoch to epoch."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    guard: _GuardedStep
    scaler: Any
    step_batch: Callable[[], None] | None
    train_batches: BatchMaker
    batches: list[tuple[int, int]]
    check_every: int
    config: TrainConfig

    @property
    def used(self) -> int:
        """Training images per epoch (a last partial global batch may be dropped)."""
        return sum(length for _, length in self.batches)

    def run(self, epoch: int) -> _EpochSums:
        config, world = self.config, self.config.world
        device = self.train_batches.device
        # dropout: its own stream per rank (rank 0's is the single process's)
        torch.manual_seed(epoch_seed(config.seed, epoch, stream=1 + 2 * world.rank))
        generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
        # the same on every rank; on the device once per epoch, not an index copy per batch
        order = torch.randperm(len(self.train_batches), generator=generator).to(device)
        augment_generator = _augment_generator(config, epoch, device, generator)
        loss_sum = torch.zeros((), dtype=sum_dtype(device), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        healthy = torch.ones((), dtype=torch.bool, device=device)
        bar = _progress_bar(self.used, config, epoch)
        seen = 0
        started = time.perf_counter()
        diverged = False
        last_step = len(self.batches) - 1
        for step, (start, length) in enumerate(self.batches):
            index = distributed.rank_slice(order, start, length, world)
            x, y = self.train_batches.batch(index, config.augment, augment_generator)
            with _autocast(config.amp_dtype):
                logits = self.net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            # every rank skips the same steps and stops at the same one
            healthy &= distributed.all_ranks_true(torch.isfinite(loss))
            check = (step + 1) % self.check_every == 0 or step == last_step
            if check and not healthy.item():  # the host waits for the device here, and only here
                diverged = True
                break
            self._update(loss, healthy)
            # The recorded train loss is plain cross-entropy, comparable with val loss and
            # across runs; the smoothed one is only what the gradients come from.
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
        return _EpochSums(loss_sum, correct, time.perf_counter() - started, diverged)

    def _update(self, loss: torch.Tensor, healthy: torch.Tensor) -> None:
        """Backward, optional clipping, the optimizer step, and the per-batch schedule."""
        clip = self.config.clip_grad_norm
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(self.guard.loss_to_scale(loss, healthy)).backward()
            if clip is not None:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
                nn.utils.clip_grad_norm_(self.params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(self.params, clip)
            self.guard.step(healthy)
        if self.step_batch is not None:
            self.step_batch()


def _close_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    val_batches: BatchMaker,
    config: TrainConfig,
    epoch: int,
    sums: _EpochSums,
    used: int,
) -> tuple[EpochRecord, float, float]:
    """Validate, step the epoch schedule, and record the epoch (the train sums are read here,
    once per epoch). Also returns the unrounded val loss and accuracy."""
    device = sums.loss_sum.device
    loss_sum, correct = distributed.all_reduce_sum(device, sums.loss_sum, sums.correct)
    val_loss, val_acc = _validate(model, val_batches, config.eval_batch_size, config.world)
    lr = optimizer.param_groups[0]["lr"]
    if scheduler is not None:
        scheduler.step_epoch(val_loss=val_loss, val_acc=val_acc)
    record = EpochRecord(
        epoch=epoch,
        train_loss=round(loss_sum.item() / used, 6),
        train_acc=round(correct.item() / used, 6),
        val_loss=round(val_loss, 6),
        val_acc=round(val_acc, 6),
        lr=lr,
        seconds=round(sums.seconds, 3),
    )
    return record, val_loss, val_acc


def _remember(
    state: TrainState,
    record: EpochRecord,
    val_loss: float,
    val_acc: float,
    model: nn.Module,
    world: World,
) -> None:
    """Add a validated epoch to ``state``: a non-finite val loss marks the run diverged and
    is never the best; a better (unrounded) val accuracy keeps a copy of the weights."""
    finite_val = math.isfinite(val_loss)
    if not finite_val:
        state.diverged_epoch = record.epoch
    state.epoch = record.epoch
    state.history.append(record)
    if finite_val and val_acc > state.best_val_acc:
        state.best_val_acc, state.best_epoch = val_acc, record.epoch
        if world.is_main:  # the only rank that saves it
            weights = {k: v.cpu() for k, v in model.state_dict().items()}
            state.best_model = copy.deepcopy(weights)


def train(
    run: Run,
    *,
    state: TrainState | None = None,
    on_epoch: Callable[[EpochRecord, TrainState], None] | None = None,
) -> TrainState:
    """Train from ``state`` (a fresh run if None) until ``config.epochs`` or divergence.

    ``on_epoch`` runs after each completed epoch, with the state already updated, so that the
    caller can log and save a resumable checkpoint. A non-finite loss ends the run early with
    ``diverged_epoch`` set instead of raising: a sweep goes on with the other runs. A
    non-finite validation loss marks its epoch diverged too, and never makes it the best.

    Divergence without a wait per step: each step folds "this loss is finite" into a
    ``healthy`` flag on the device, and the host reads it every ``config.check_every``
    steps (and at the epoch's last step). Between two reads, a step after a non-finite
    loss is still computed but its update is skipped on the device (:class:`_GuardedStep`).
    What "the run stops at the first non-finite loss" needs is kept that way: the epoch
    records no history, never validates and is never the best; the resume state stays at
    the last completed epoch; and the weights the run ends with (``last.pt``) are those of
    the last step with a finite loss, exactly as with a read every step. Only forward-pass
    side effects of the skipped steps remain: BatchNorm running statistics may have seen up
    to ``check_every - 1`` more batches. On the CPU the read costs nothing, so the default
    there is every step, before the backward pass, with nothing to skip.

    The run's schedule (:class:`~cnnlab.schedulers.LRSchedule`, or None) is stepped after
    every batch and every epoch. The lr recorded per epoch is the one of the epoch's last
    batch.

    DDP sits at the loop's edges (:mod:`cnnlab.distributed`): with ``config.world``
    distributed (under torchrun) the model is wrapped, each rank takes its share of every
    global batch, and the sums and the divergence flag are reduced over the ranks; for a
    single process each of these is the identity. Every rank ends with the same weights and
    ``state``, and only rank 0 prints.
    """
    model, optimizer, scheduler, config = run.model, run.optimizer, run.scheduler, run.config
    train_batches, val_batches = run.train_batches, run.val_batches
    state = state or TrainState()
    world = config.world
    device = train_batches.device
    params = [p for p in model.parameters() if p.requires_grad]
    check_every = config.check_every or (1 if device.type == "cpu" else CHECK_EVERY_ON_DEVICE)
    scaler = None
    if config.amp_dtype == torch.float16:  # bf16 has float32's range: no scaling needed
        scaler = torch.amp.GradScaler("cuda")
        if state.grad_scaler is not None:
            scaler.load_state_dict(state.grad_scaler)
    loop = _EpochLoop(
        net=distributed.wrap(model, world, device),
        optimizer=optimizer,
        params=params,
        guard=_GuardedStep(optimizer, params, masked=check_every > 1),
        scaler=scaler,
        step_batch=getattr(scheduler, "step_batch", None),
        train_batches=train_batches,
        batches=distributed.global_batches(len(train_batches), config.batch_size, world.size),
        check_every=check_every,
        config=config,
    )
    if state.epoch < config.epochs and not state.diverged:
        _warm_up(model, train_batches, config)
    while state.epoch < config.epochs and not state.diverged:
        epoch = state.epoch + 1
        model.train()
        sums = loop.run(epoch)
        state.train_seconds += sums.seconds
        if sums.diverged:
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
        record, val_loss, val_acc = _close_epoch(
            model, optimizer, scheduler, val_batches, config, epoch, sums, loop.used
        )
        if scaler is not None:
            state.grad_scaler = scaler.state_dict()
        _remember(state, record, val_loss, val_acc, model, world)
        if world.is_main:
            print(
                f"{config.label} epoch {epoch}/{config.epochs}: train loss {record.train_loss:.4f}"
                f" acc {record.train_acc:.4f} | val loss {record.val_loss:.4f}"
                f" acc {record.val_acc:.4f} | {loop.used / sums.seconds:,.0f} img/s",
                flush=True,
            )
        if on_epoch is not None:
            on_epoch(record, state)
    return state
