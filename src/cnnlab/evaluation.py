"""A model on a split: logits, then the test-set metrics (accuracy, top-5, loss, per class,
confusion). Training's validation and the evaluate stage share it."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.batches import BatchMaker


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, classes: list[str]
) -> dict[str, Any]:
    """Fractions in 0..1, rounded to 6 digits so the JSON is stable and readable."""
    k = min(5, logits.shape[1])
    top5 = logits.topk(k, dim=1).indices.eq(labels[:, None]).any(dim=1)
    predicted = logits.argmax(dim=1)
    n_classes = len(classes)
    confusion = torch.bincount(labels * n_classes + predicted, minlength=n_classes**2)
    confusion = confusion.view(n_classes, n_classes)
    per_class_total = confusion.sum(dim=1)
    per_class = {
        name: (
            round(confusion[i, i].item() / total, 6)
            if (total := per_class_total[i].item())
            else None
        )
        for i, name in enumerate(classes)
    }
    return {
        "test_acc": round(predicted.eq(labels).double().mean().item(), 6),
        "test_top5": round(top5.double().mean().item(), 6),
        "test_loss": round(F.cross_entropy(logits.double(), labels).item(), 6),
        "test_images": len(labels),
        "per_class_acc": per_class,
        "confusion": confusion.tolist(),
    }


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for the running loss sums; MPS has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


@torch.inference_mode()
def evaluate_batches(
    model: nn.Module, batches: BatchMaker, batch_size: int, span: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (a 0-dim tensor on the batches' device), logits and labels (on the
    CPU) over the images ``span`` of a split (all by default): no host read per batch."""
    model.eval()
    begin, end = span or (0, len(batches))
    loss_sum = torch.zeros((), dtype=sum_dtype(batches.device), device=batches.device)
    logits_parts, label_parts = [], []
    for start in range(begin, end, batch_size):
        x, y = batches.batch(slice(start, min(start + batch_size, end)))
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").to(loss_sum.dtype)
        logits_parts.append(logits)
        label_parts.append(y)
    if not label_parts:  # an empty share of a split under DDP
        return loss_sum, torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return loss_sum, torch.cat(logits_parts).cpu(), torch.cat(label_parts).cpu()
