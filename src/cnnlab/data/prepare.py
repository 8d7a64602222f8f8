"""Decoded images -> the train / val / test splits training reads, decoded once here.

Each split is an uncompressed ``.npy`` written a chunk at a time, the same bytes on every run
(DVC compares them); :func:`load_prepared` memory-maps the images, so a large split never
lands on the heap and DDP processes share the page cache. Images may come from a source that
decodes on demand (a folder of photos): then only the chosen rows are fetched, a chunk at a
time, while they are written and summed. Torch-free (numpy only): ``import torch`` alone
takes about 600 MB, the whole budget of a large folder's prepare; only
:func:`load_prepared` (train, evaluate) imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import numpy as np
from tqdm import tqdm

from cnnlab.data.progress import ProgressMode, track
from cnnlab.errors import UserError
from cnnlab.files import atomic_directory, write_json

if TYPE_CHECKING:
    import torch

#: The single file of the format before memory-mapped splits (refused with a fix).
TENSORS_FILE = "tensors.pt"
META_FILE = "meta.json"
SPLITS = ("train", "val", "test")
#: Images fetched, written and freed at a time (at 224x224 RGB, about 10 MB).
WRITE_CHUNK = 64


def images_file(split: str) -> str:
    return f"{split}_images.npy"


def labels_file(split: str) -> str:
    return f"{split}_labels.npy"


class Rows(Protocol):
    """Images a split can be drawn from without holding them all: ``rows[index]`` returns
    the uint8 images [len(index), C, H, W] of an index array; ``shape`` is [N, C, H, W]."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: np.ndarray) -> np.ndarray: ...


class Selection:
    """Rows ``index`` of ``source``, fetched only when saved, ``WRITE_CHUNK`` at a time."""

    def __init__(self, source: Rows, index: np.ndarray) -> None:
        self.source, self.index = source, index

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.source.shape[1:])

    def __len__(self) -> int:
        return len(self.index)

    def chunks(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.index), WRITE_CHUNK):
            yield np.asarray(self.source[self.index[start : start + WRITE_CHUNK]])


@dataclass
class PreparedData:
    """uint8 images [N, C, H, W] and int64 labels per split, plus what training needs to know:
    numpy arrays (or :class:`Selection` objects) from :func:`split_dataset`, tensors from
    :func:`load_prepared`."""

    images: dict[str, Any]
    labels: dict[str, Any]
    meta: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.meta["image_shape"]
        return c, h, w


def _randperm(n: int, bits: np.random.MT19937) -> np.ndarray:
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``, the same numbers
    from the same Mersenne Twister stream (``_mt19937(seed)``): torch's CPU randperm swaps
    ``i`` with ``i + raw % (n - i)`` for 32-bit raw draws (tests/test_prepare.py checks it
    against torch), and importing torch to draw it would cost prepare 600 MB."""
    if n >= (1 << 32) // 20:  # torch draws 64 bits from here on
        raise ValueError(f"{n} images: more than this draw supports")
    order = np.arange(n, dtype=np.int64)
    if n > 1:
        swap = np.arange(n - 1) + bits.random_raw(n - 1).astype(np.int64) % np.arange(n, 1, -1)
        for i, j in enumerate(swap.tolist()):
            order[i], order[j] = order[j], order[i]
    return order


def _mt19937(seed: int) -> np.random.MT19937:
    """The Mersenne Twister torch's ``manual_seed(seed)`` starts (seeded from the low 32 bits,
    as torch's CPU generator is)."""
    bits = np.random.MT19937()
    bits.state = np.random.RandomState(seed & 0xFFFFFFFF).get_state(legacy=False)
    return bits


def _draw(source: object, rows: np.ndarray, keep: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``keep`` of ``rows`` (all with None) that ``source`` can use, and the rows
    checked to find them. A folder's drawn files are decoded to check them (``usable``), a
    bad one replaced by the next of the draw, so that files outside a subsample are never
    read."""
    usable = getattr(source, "usable", None)
    if usable is None:
        picked = rows if keep is None else rows[:keep]
        return picked, picked
    picked: list[int] = []
    checked = 0
    for row in rows.tolist():
        if keep is not None and len(picked) == keep:
            break
        checked += 1
        if usable(row):
            picked.append(row)
    return np.asarray(picked, dtype=np.int64), rows[:checked]


def _check_classes(
    name: str, classes: list[str], labels: np.ndarray, picked: np.ndarray, checked: np.ndarray
) -> None:
    """A class whose every training file was drawn, checked and found bad stops here, as
    it stops a folder decoded whole (a class merely left out of a subsample does not): with
    every class empty, the training split would be too."""
    labels = np.asarray(labels)
    n = len(classes)
    listed = np.bincount(labels, minlength=n)
    seen = np.bincount(labels[checked], minlength=n)
    kept = np.bincount(labels[picked], minlength=n)
    empty = [
        c for c, a, b, k in zip(classes, listed, seen, kept, strict=True) if a and a == b and not k
    ]
    if empty:
        raise UserError(
            f"{name}: class(es) {', '.join(empty)} have no readable training images (all "
            "were skipped as bad files): add images or remove the class folder"
        )


class _ChannelSums:
    """Exact per-channel sums of uint8 values and of their squares, fed a block at a time:
    integers, so the statistics are the same bits however the images are split into blocks
    and on any machine."""

    def __init__(self, channels: int) -> None:
        self.counts = np.zeros((channels, 256), dtype=np.int64)  # a histogram per channel

    def add(self, block: np.ndarray) -> None:
        for c in range(len(self.counts)):
            self.counts[c] += np.bincount(block[:, c].reshape(-1), minlength=256)

    def result(self) -> tuple[list[float], list[float]]:
        mean, std = [], []
        for hist in self.counts.tolist():
            n = sum(hist)
            total = sum(v * k for v, k in enumerate(hist))
            squares = sum(v * v * k for v, k in enumerate(hist))
            m = Fraction(total, 255 * n)
            var = Fraction(squares, 255 * 255 * n) - m * m
            mean.append(round(float(m), 6))
            std.append(round(max(float(var), 1e-12) ** 0.5, 6))
        return mean, std


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images on the 0..1 scale, from exact integer sums."""
    images = np.asarray(images)
    sums = _ChannelSums(images.shape[1])
    for start in range(0, len(images), WRITE_CHUNK):
        sums.add(images[start : start + WRITE_CHUNK])
    return sums.result()


def split_dataset(
    train_images: np.ndarray | Rows,
    train_labels: np.ndarray,
    test_images: np.ndarray | Rows,
    test_labels: np.ndarray,
    classes: list[str],
    *,
    name: str,
    seed: int,
    val_fraction: float,
    max_train: int | None = None,
    max_test: int | None = None,
    val_images: np.ndarray | Rows | None = None,
    val_labels: np.ndarray | None = None,
) -> PreparedData:
    """Hold out a seeded validation split and optionally subsample, deterministically.

    ``max_train`` caps the pool the validation split is drawn from (a quick run keeps the
    proportions of a full one), or the training split alone where the dataset has its own
    validation split (``val_images``: Flowers-102's). Images given as :class:`Rows` come back
    as :class:`Selection` objects, ``mean``/``std`` left for :func:`save_prepared` to fill.
    """
    bits = _mt19937(seed)
    pool, checked = _draw(train_images, _randperm(len(train_labels), bits), max_train)
    if hasattr(train_images, "usable"):  # a folder's files, checked only once drawn
        _check_classes(name, classes, train_labels, pool, checked)
    if val_images is not None and val_labels is not None:
        train_idx = np.sort(pool)
        val_source, val_source_labels = val_images, val_labels
        val_idx, _ = _draw(val_images, np.arange(len(val_labels)), None)
        if len(val_idx) == 0:  # else every epoch's val accuracy is 0 and "best" is arbitrary
            raise UserError(
                f"{name}: no validation image can be decoded: add readable images to val/, or "
                "remove val/ to hold out data.val_fraction of the training images instead"
            )
    else:
        n_val = max(1, round(len(pool) * val_fraction))
        if n_val >= len(pool):
            raise UserError(
                f"data.val_fraction={val_fraction} leaves no training images out of "
                f"{len(pool)}; lower data.val_fraction or raise data.max_train"
            )
        val_idx, train_idx = np.sort(pool[:n_val]), np.sort(pool[n_val:])
        val_source, val_source_labels = train_images, train_labels
    test_idx = np.sort(_draw(test_images, _randperm(len(test_labels), bits), max_test)[0])
    if len(test_idx) == 0:
        raise UserError(f"{name}: no test image can be decoded: add readable test images")
    picks = {
        "train": (train_images, train_labels, train_idx),
        "val": (val_source, val_source_labels, val_idx),
        "test": (test_images, test_labels, test_idx),
    }
    on_demand = not all(_in_memory(x) for x, _, _ in picks.values())
    images: dict[str, Any] = {
        split: Selection(x, idx) if on_demand else np.asarray(x)[idx]
        for split, (x, _, idx) in picks.items()
    }
    labels = {split: np.asarray(y)[idx].astype(np.int64) for split, (_, y, idx) in picks.items()}
    mean, std = (None, None) if on_demand else channel_stats(images["train"])
    meta = {
        "dataset": name,
        "classes": list(classes),
        "image_shape": list(images["train"].shape[1:]),
        "counts": {split: len(labels[split]) for split in SPLITS},
        "class_counts": {
            split: np.bincount(labels[split], minlength=len(classes)).tolist() for split in SPLITS
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


def _in_memory(images: object) -> bool:
    """An array (or a tensor) rather than :class:`Rows` decoded on demand."""
    return isinstance(images, np.ndarray) or hasattr(images, "__array__")


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
    images: np.ndarray | Selection,
    sums: _ChannelSums | None,
    bar: tqdm,
) -> None:
    """Write one split's images a chunk at a time (summed into ``sums``)."""
    with _write_npy(path, tuple(images.shape), np.dtype(np.uint8)) as f:
        if isinstance(images, Selection):
            blocks = images.chunks()
        else:
            array = np.asarray(images)
            blocks = (array[i : i + WRITE_CHUNK] for i in range(0, len(array), WRITE_CHUNK))
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=np.uint8)
            f.write(block.data)
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
        sums = _ChannelSums(data.images["train"].shape[1])
    with atomic_directory(directory) as tmp:
        with track(progress if on_demand else None, total, f"{name}: prepare", "img") as bar:
            for split in SPLITS:
                split_sums = sums if split == "train" else None
                _save_images(tmp / images_file(split), data.images[split], split_sums, bar)
                labels = np.ascontiguousarray(data.labels[split], dtype=np.int64)
                with _write_npy(tmp / labels_file(split), labels.shape, labels.dtype) as f:
                    f.write(labels.data)
        if sums is not None:
            data.meta["mean"], data.meta["std"] = sums.result()
        write_json(tmp / META_FILE, data.meta)


def _mapped(path: Path) -> torch.Tensor:
    """The array of a ``.npy`` file, memory-mapped copy-on-write: torch warns on a read-only
    array, and as nothing writes to the images every page stays the shared page-cache one."""
    import torch

    return torch.from_numpy(np.load(path, mmap_mode="c", allow_pickle=False))


def load_prepared(directory: Path) -> PreparedData:
    """The prepared splits as tensors: images memory-mapped (see :func:`_mapped`), labels in
    memory."""
    import json

    import torch

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
