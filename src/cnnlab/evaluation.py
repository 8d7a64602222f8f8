"""A model on a whole split: logits, then the test-set metrics (accuracy, top-5, loss, per
class, confusion). Training's validation and the evaluate stage share it."""

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
    model: nn.Module, batches: BatchMaker, batch_size: int
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy, logits and labels (on the CPU) over a whole split, with one host
    read per split, not per batch."""
    model.eval()
    total_loss = torch.zeros((), dtype=sum_dtype(batches.device), device=batches.device)
    logits_parts, label_parts = [], []
    for start in range(0, len(batches), batch_size):
        x, y = batches.batch(slice(start, start + batch_size))
        logits = model(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").to(total_loss.dtype)
        logits_parts.append(logits)
        label_parts.append(y)
    logits = torch.cat(logits_parts).cpu()
    labels = torch.cat(label_parts).cpu()
    return total_loss.item() / max(1, len(labels)), logits, labels
