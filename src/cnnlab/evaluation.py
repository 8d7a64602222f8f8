"""Test-set metrics from a model's logits: accuracy, top-5, loss, per class, confusion."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


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
