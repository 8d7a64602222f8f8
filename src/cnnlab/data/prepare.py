"""Decoded images -> the train / val / test splits training reads, decoded once here.

Each split is an uncompressed ``.npy`` written a chunk at a time, the same bytes on every run
(DVC compares them); :func:`load_prepared` memory-maps the images, so a large split never
lands on the heap and DDP processes share the page cache. Images may come from a source that
decodes on demand (a folder of photos): then only the chosen rows are fetched, a chunk at a
time, while they are written and summed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import torch
from tqdm import tqdm

from cnnlab.data.progress import ProgressMode, track
from cnnlab.errors import UserError
from cnnlab.files import atomic_directory, write_json

#: The single file of the format before memory-mapped splits (refused with a fix).
TENSORS_FILE = "tensors.pt"
META_FILE = "meta.json"
SPLITS = ("train", "val", "test")
#: Values per channel summed at a time (float64: 8 MB a channel).
STATS_CHUNK = 1 << 20
#: Images fetched, written and freed at a time (at 224x224 RGB, about 10 MB).
WRITE_CHUNK = 64


def images_file(split: str) -> str:
    return f"{split}_images.npy"


def labels_file(split: str) -> str:
    return f"{split}_labels.npy"


class Rows(Protocol):
    """Images a split can be drawn from without holding them all: ``rows[index]`` returns
    the uint8 images [len(index), C, H, W] of an index tensor; ``shape`` is [N, C, H, W]."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor: ...


class Selection:
    """Rows ``index`` of ``source``, fetched only when saved, ``WRITE_CHUNK`` at a time."""

    def __init__(self, source: Rows, index: torch.Tensor) -> None:
        self.source, self.index = source, index

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.source.shape[1:])

    def __len__(self) -> int:
        return len(self.index)

    def chunks(self) -> Iterator[torch.Tensor]:
        for part in self.index.split(WRITE_CHUNK):
            yield self.source[part]


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


class _ChannelSums:
    """Per-channel float64 sums of uint8 images fed in order, a block at a time.

    Summed over chunks of ``STATS_CHUNK`` channel-major values, cut as
    ``images.transpose(0, 1).reshape(c, -1).split(STATS_CHUNK, dim=1)`` would cut them (the
    same bits however the images arrive), without a transposed copy of the whole split.
    """

    def __init__(self, n_images: int, image_shape: tuple[int, ...]) -> None:
        self.c = image_shape[0]
        self.pixels = int(np.prod(image_shape[1:])) if n_images else 0
        self.count = n_images * self.pixels
        self.sums = torch.zeros(self.c, dtype=torch.float64)
        self.squares = torch.zeros(self.c, dtype=torch.float64)
        self.held: torch.Tensor | None = None  # images [held_first, ...), as [k, c, pixels]
        self.held_first = 0
        self.start = 0  # the next value (per channel) to sum

    def add(self, block: torch.Tensor) -> None:
        block = block.reshape(len(block), self.c, self.pixels)
        self.held = block if self.held is None else torch.cat([self.held, block])
        held_end = self.held_first + len(self.held)
        while self.start < self.count:
            stop = min(self.start + STATS_CHUNK, self.count)
            first, last = self.start // self.pixels, (stop - 1) // self.pixels + 1
            if last > held_end:
                break
            spanned = self.held[first - self.held_first : last - self.held_first]
            chunk = spanned.transpose(0, 1).reshape(self.c, -1)
            chunk = chunk[:, self.start - first * self.pixels : stop - first * self.pixels]
            chunk = chunk.to(torch.float64).div_(255.0)  # in place: one float64 chunk held
            self.sums += chunk.sum(dim=1)
            self.squares += chunk.mul_(chunk).sum(dim=1)
            self.start = stop
        done = self.start // self.pixels if self.pixels else 0
        self.held = self.held[done - self.held_first :]
        self.held_first = done

    def result(self) -> tuple[list[float], list[float]]:
        mean = self.sums / self.count
        std = (self.squares / self.count - mean * mean).clamp_min(1e-12).sqrt()
        return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images on the 0..1 scale; float64 sums make them
    independent of how the work is split across threads."""
    sums = _ChannelSums(len(images), tuple(images.shape[1:]))
    sums.add(images)
    return sums.result()


def split_dataset(
    train_images: torch.Tensor | Rows,
    train_labels: torch.Tensor,
    test_images: torch.Tensor | Rows,
    test_labels: torch.Tensor,
    classes: list[str],
    *,
    name: str,
    seed: int,
    val_fraction: float,
    max_train: int | None = None,
    max_test: int | None = None,
    val_images: torch.Tensor | Rows | None = None,
    val_labels: torch.Tensor | None = None,
) -> PreparedData:
    """Hold out a seeded validation split and optionally subsample, deterministically.

    ``max_train`` caps the pool the validation split is drawn from (a quick run keeps the
    proportions of a full one), or the training split alone where the dataset has its own
    validation split (``val_images``: Flowers-102's). Images given as :class:`Rows` come back
    as :class:`Selection` objects, ``mean``/``std`` left for :func:`save_prepared` to fill.
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
    sources = [train_images, val_source, test_images]
    on_demand = not all(isinstance(x, torch.Tensor) for x in sources)
    images: dict[str, Any] = {
        split: Selection(source, idx) if on_demand else source[idx].contiguous()
        for split, source, idx in zip(SPLITS, sources, (train_idx, val_idx, test_idx), strict=True)
    }
    labels = {
        "train": train_labels[train_idx].to(torch.int64),
        "val": val_source_labels[val_idx].to(torch.int64),
        "test": test_labels[test_idx].to(torch.int64),
    }
    mean, std = (None, None) if on_demand else channel_stats(images["train"])
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


def _write_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> BinaryIO:
    """``path`` opened for writing, past the header ``np.save`` would write for an array of
    ``shape`` and ``dtype``: the rows appended then make the same bytes as ``np.save``."""
    f = open(path, "wb")  # noqa: SIM115 - the caller closes it
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(n) for n in shape),
    }
    np.lib.format.write_array_header_1_0(f, header)
    return f


def _save_images(
    path: Path,
    images: torch.Tensor | Selection,
    sums: _ChannelSums | None,
    bar: tqdm,
) -> None:
    """Write one split's images, a :class:`Selection` a chunk at a time (summed into ``sums``)."""
    with _write_npy(path, tuple(images.shape), np.dtype(np.uint8)) as f:
        blocks = images.chunks() if isinstance(images, Selection) else [images]
        for block in blocks:
            block = block.contiguous()
            f.write(block.numpy().data)  # no copy: the tensor's own bytes
            if sums is not None:
                sums.add(block)
            bar.update(len(block))


def save_prepared(data: PreparedData, directory: Path, *, progress: ProgressMode = None) -> None:
    """Tensors and metadata are replaced together, so they always describe the same split;
    statistics missing from ``data.meta`` (splits of :class:`Rows`) are filled on the way."""
    on_demand = any(isinstance(data.images[s], Selection) for s in SPLITS)
    total = sum(len(data.images[s]) for s in SPLITS)
    name = data.meta.get("dataset", directory.name)
    sums = None
    if data.meta.get("mean") is None:
        sums = _ChannelSums(len(data.images["train"]), tuple(data.images["train"].shape[1:]))
    with atomic_directory(directory) as tmp:
        with track(progress if on_demand else None, total, f"{name}: prepare", "img") as bar:
            for split in SPLITS:
                split_sums = sums if split == "train" else None
                _save_images(tmp / images_file(split), data.images[split], split_sums, bar)
                labels = data.labels[split].to(torch.int64).contiguous().numpy()
                with _write_npy(tmp / labels_file(split), labels.shape, labels.dtype) as f:
                    f.write(labels.data)
        if sums is not None:
            data.meta["mean"], data.meta["std"] = sums.result()
        write_json(tmp / META_FILE, data.meta)


def _mapped(path: Path) -> torch.Tensor:
    """The array of a ``.npy`` file, memory-mapped copy-on-write: torch warns on a read-only
    array, and as nothing writes to the images every page stays the shared page-cache one."""
    return torch.from_numpy(np.load(path, mmap_mode="c", allow_pickle=False))


def load_prepared(directory: Path) -> PreparedData:
    """The prepared splits: images memory-mapped (see :func:`_mapped`), labels in memory."""
    import json

    meta_path = directory / META_FILE
    if not meta_path.exists():
        raise UserError(f"{directory}: no prepared data; run `dvc repro prepare@<dataset>` first")
    meta = json.loads(meta_path.read_text())
    if not (directory / images_file("train")).exists():
        old = " in the format of an earlier version" if (directory / TENSORS_FILE).exists() else ""
        raise UserError(
            f"{directory}: prepared data{old} without {images_file('train')}; run "
            f"`dvc repro prepare@{meta.get('dataset', '<dataset>')}` to prepare it again"
        )
    images = {split: _mapped(directory / images_file(split)) for split in SPLITS}
    labels = {
        split: torch.from_numpy(np.load(directory / labels_file(split), allow_pickle=False))
        for split in SPLITS
    }
    return PreparedData(images, labels, meta)
