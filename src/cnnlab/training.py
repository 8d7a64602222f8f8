"""The training loop: epochs over in-memory tensors, validation, best/last state, divergence.

Every epoch's randomness (shuffle, augmentation, dropout) is seeded from (seed, epoch), so a
run resumed at epoch k draws exactly what the uninterrupted run drew: no RNG state to save.
"""

from __future__ import annotations

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

from cnnlab.data.batches import Augmentation, BatchMaker
from cnnlab.runtime import epoch_seed


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    seed: int
    augment: Augmentation = field(default_factory=Augmentation)
    eval_batch_size: int = 1000
    #: A tqdm bar per epoch (terminals) or one plain line per epoch (CI logs, files).
    progress: bool = False
    label: str = ""


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

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        data = dict(data)
        data["history"] = [EpochRecord(**r) for r in data["history"]]
        return cls(**data)


@torch.inference_mode()
def evaluate_batches(
    model: nn.Module, batches: BatchMaker, batch_size: int
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy, logits and labels over a whole split, in large inference batches."""
    model.eval()
    total_loss = 0.0
    logits_parts, label_parts = [], []
    for start in range(0, len(batches), batch_size):
        x, y = batches.batch(slice(start, start + batch_size))
        logits = model(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        logits_parts.append(logits.cpu())
        label_parts.append(y.cpu())
    logits = torch.cat(logits_parts)
    labels = torch.cat(label_parts)
    return total_loss / max(1, len(labels)), logits, labels


def _progress_bar(total: int, config: TrainConfig, epoch: int) -> Any:
    if not config.progress:
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


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    train_batches: BatchMaker,
    val_batches: BatchMaker,
    config: TrainConfig,
    *,
    state: TrainState | None = None,
    on_epoch: Callable[[EpochRecord, TrainState], None] | None = None,
) -> TrainState:
    """Train from ``state`` (a fresh run if None) until ``config.epochs`` or divergence.

    ``on_epoch`` runs after each completed epoch, with the state already updated, so that the
    caller can log and save a resumable checkpoint. A non-finite loss ends the run early with
    ``diverged_epoch`` set instead of raising: a sweep goes on with the other runs.
    """
    state = state or TrainState()
    n = len(train_batches)
    while state.epoch < config.epochs and not state.diverged:
        epoch = state.epoch + 1
        torch.manual_seed(epoch_seed(config.seed, epoch, stream=1))  # dropout
        generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
        order = torch.randperm(n, generator=generator)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        bar = _progress_bar(n, config, epoch)
        started = time.perf_counter()
        diverged = False
        for start in range(0, n, config.batch_size):
            index = order[start : start + config.batch_size]
            x, y = train_batches.batch(index, config.augment, generator)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().to(torch.float64).cpu() * len(y)
            correct += (logits.detach().argmax(1) == y).sum().cpu()
            if bar is not None:
                bar.update(len(y))
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        state.train_seconds += seconds
        if diverged:
            state.diverged_epoch = epoch
            print(
                f"{config.label} epoch {epoch}: loss is not finite; the run diverged and stops "
                "here (lower lr, or choose another optimizer)",
                file=sys.stderr,
                flush=True,
            )
            break
        state.train_images += n
        val_loss, val_logits, val_labels = evaluate_batches(
            model, val_batches, config.eval_batch_size
        )
        val_acc = (val_logits.argmax(1) == val_labels).double().mean().item()
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        record = EpochRecord(
            epoch=epoch,
            train_loss=round(loss_sum.item() / n, 6),
            train_acc=round(correct.item() / n, 6),
            val_loss=round(val_loss, 6),
            val_acc=round(val_acc, 6),
            lr=lr,
            seconds=round(seconds, 3),
        )
        if not math.isfinite(val_loss):
            state.diverged_epoch = epoch
        state.epoch = epoch
        state.history.append(record)
        if val_acc > state.best_val_acc:
            state.best_val_acc, state.best_epoch = val_acc, epoch
            state.best_model = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
        print(
            f"{config.label} epoch {epoch}/{config.epochs}: train loss {record.train_loss:.4f}"
            f" acc {record.train_acc:.4f} | val loss {record.val_loss:.4f}"
            f" acc {record.val_acc:.4f} | {n / seconds:,.0f} img/s",
            flush=True,
        )
        if on_epoch is not None:
            on_epoch(record, state)
    return state
