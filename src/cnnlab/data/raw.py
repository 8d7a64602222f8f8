"""What the dataset modules share: ``Source``, ``RawDataset`` and ``DataError``. Torch-free,
so that fetching and checking files never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnlab.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from cnnlab.data.prepare import Rows


class DataError(UserError, RuntimeError):
    """A dataset could not be fetched, verified or decoded; the message says what to do."""


@dataclass(frozen=True)
class TarLimits:
    """The most a tar archive may unpack to: the sum of its members' sizes, and their count."""

    max_bytes: int
    max_members: int


@dataclass(frozen=True)
class Source:
    """A downloadable dataset: ``archives`` are the files as published (md5 by name),
    ``contents`` what torchvision decodes, in ``folder`` where torchvision leaves them;
    ``sizes`` bounds every one of those files in bytes, ``unpacked`` each tar archive."""

    name: str
    mirrors: tuple[str, ...]
    archives: Mapping[str, str]
    contents: Mapping[str, str]
    folder: str
    sizes: Mapping[str, int]
    unpacked: Mapping[str, TarLimits]


@dataclass
class RawDataset:
    """The dataset as published: its own train/test split, uint8 pixels, int64 labels (a
    folder's images are :class:`~cnnlab.data.prepare.Rows`, read on demand)."""

    train_images: np.ndarray | Rows  # uint8, [N, C, H, W]
    train_labels: np.ndarray  # int64, [N]
    test_images: np.ndarray | Rows  # uint8, [M, C, H, W]
    test_labels: np.ndarray  # int64, [M]
    classes: list[str]
    #: The dataset's own validation split (Flowers-102, a folder with val/), if any.
    val_images: np.ndarray | Rows | None = None
    val_labels: np.ndarray | None = None


def redownload_hint(name: str) -> str:
    return f"run the download of '{name}' again (it rebuilds the raw folder from verified files)"
