"""Turn decoded images into the compact tensors training reads: train / val / test splits.

Decoding happens once here, so training never touches an image file or a PIL object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import UserError
from cnnlab.files import atomic_directory, load_torch, save_torch, write_json

TENSORS_FILE = "tensors.pt"
META_FILE = "meta.json"
SPLITS = ("train", "val", "test")
#: Values per channel summed at a time by :func:`channel_stats` (float64: 32 MB a channel).
STATS_CHUNK = 1 << 22


@dataclass
class PreparedData:
    """uint8 images [N, C, H, W] and int64 labels per split, plus what training needs to know."""

    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.meta["image_shape"]
        return c, h, w


def _subsample(n: int, keep: int | None, generator: torch.Generator) -> torch.Tensor:
    order = torch.randperm(n, generator=generator)
    return order if keep is None else order[: min(keep, n)]


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images on the 0..1 scale, accumulated in float64.

    float64 sums make the numbers independent of how the work is split across threads.
    """
    c = images.shape[1]
    pixels = images[0].numel() // c if len(images) else 0
    count = len(images) * pixels
    by_image = images.reshape(len(images), c, pixels)
    sums = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    # Chunks of STATS_CHUNK values per channel of the channel-major pixels, as one
    # ``images.transpose(0, 1).reshape(c, -1).split(STATS_CHUNK, dim=1)`` would cut them (so
    # the sums are the same bits), but built from the images each chunk spans: never a
    # transposed copy of the whole split.
    for start in range(0, count, STATS_CHUNK):
        stop = min(start + STATS_CHUNK, count)
        first, last = start // pixels, (stop - 1) // pixels + 1
        block = by_image[first:last].transpose(0, 1).reshape(c, -1)
        chunk = block[:, start - first * pixels : stop - first * pixels]
        chunk = chunk.to(torch.float64) / 255.0
        sums += chunk.sum(dim=1)
        squares += (chunk * chunk).sum(dim=1)
    mean = sums / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def split_dataset(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    classes: list[str],
    *,
    name: str,
    seed: int,
    val_fraction: float,
    max_train: int | None = None,
    max_test: int | None = None,
    val_images: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
) -> PreparedData:
    """Hold out a seeded validation split and optionally subsample, deterministically.

    ``max_train`` caps the pool the validation split is drawn from, so a quick run keeps the
    same train/val proportions as a full one. A dataset with a validation split of its own
    (``val_images``/``val_labels``: Flowers-102's official one) keeps it whole instead, and
    ``max_train`` caps the training split alone.
    """
    generator = torch.Generator().manual_seed(seed)
    pool = _subsample(len(train_labels), max_train, generator)
    if val_images is not None and val_labels is not None:
        train_idx = pool.sort().values
        val_source, val_source_labels = val_images, val_labels
        val_idx = torch.arange(len(val_labels))
    else:
        n_val = max(1, round(len(pool) * val_fraction))
        if n_val >= len(pool):
            raise UserError(
                f"data.val_fraction={val_fraction} leaves no training images out of "
                f"{len(pool)}; lower data.val_fraction or raise data.max_train"
            )
        val_idx, train_idx = pool[:n_val].sort().values, pool[n_val:].sort().values
        val_source, val_source_labels = train_images, train_labels
    test_idx = _subsample(len(test_labels), max_test, generator).sort().values
    images = {
        "train": train_images[train_idx].contiguous(),
        "val": val_source[val_idx].contiguous(),
        "test": test_images[test_idx].contiguous(),
    }
    labels = {
        "train": train_labels[train_idx].to(torch.int64),
        "val": val_source_labels[val_idx].to(torch.int64),
        "test": test_labels[test_idx].to(torch.int64),
    }
    mean, std = channel_stats(images["train"])
    meta = {
        "dataset": name,
        "classes": list(classes),
        "image_shape": list(images["train"].shape[1:]),
        "counts": {split: len(labels[split]) for split in SPLITS},
        "class_counts": {
            split: torch.bincount(labels[split], minlength=len(classes)).tolist()
            for split in SPLITS
        },
        "mean": mean,
        "std": std,
        "seed": seed,
        # null: the dataset's own validation split was kept, not drawn from train.
        "val_fraction": None if val_labels is not None else val_fraction,
        # the subsampling params (data.max_train/max_test), for the reports' recipe
        "max_train": max_train,
        "max_test": max_test,
    }
    return PreparedData(images, labels, meta)


def save_prepared(data: PreparedData, directory: Path) -> None:
    """Tensors and metadata are replaced together, so they always describe the same split."""
    tensors = {}
    for split in SPLITS:
        tensors[f"{split}_images"] = data.images[split]
        tensors[f"{split}_labels"] = data.labels[split]
    with atomic_directory(directory) as tmp:
        save_torch(tmp / TENSORS_FILE, tensors)
        write_json(tmp / META_FILE, data.meta)


def load_prepared(directory: Path) -> PreparedData:
    import json

    meta_path = directory / META_FILE
    if not meta_path.exists():
        raise UserError(f"{directory}: no prepared data; run `dvc repro prepare@<dataset>` first")
    meta = json.loads(meta_path.read_text())
    tensors = load_torch(directory / TENSORS_FILE)
    images = {split: tensors[f"{split}_images"] for split in SPLITS}
    labels = {split: tensors[f"{split}_labels"] for split in SPLITS}
    return PreparedData(images, labels, meta)
