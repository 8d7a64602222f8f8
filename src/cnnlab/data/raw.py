"""What the dataset modules share: where a built-in dataset is published (``Source``), what
any dataset decodes to (``RawDataset``), and the error a user can act on (``DataError``).

Torch-free (torch appears in annotations only), so that fetching and checking files never
imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnlab.errors import UserError

if TYPE_CHECKING:
    import torch

    from cnnlab.data.prepare import Rows

__all__ = ["DataError", "RawDataset", "Source", "TarLimits", "redownload_hint"]


class DataError(UserError, RuntimeError):
    """A dataset could not be fetched, verified or decoded; the message says what to do."""


@dataclass(frozen=True)
class TarLimits:
    """The most a tar archive may unpack to: the sum of its members' sizes, and their count."""

    max_bytes: int
    max_members: int


@dataclass(frozen=True)
class Source:
    """A downloadable dataset: where it is published and the md5 of every file that matters.

    ``archives`` are the files as published (what a mirror serves); ``contents`` are the files
    torchvision decodes from, inside ``folder`` (relative to the download directory), which is
    where torchvision itself leaves them so its dataset classes can read them unchanged.
    ``sizes`` bounds every one of those files in bytes, ``unpacked`` each tar archive.
    """

    name: str
    mirrors: tuple[str, ...]
    archives: Mapping[str, str]
    contents: Mapping[str, str]
    folder: str
    sizes: Mapping[str, int]
    unpacked: Mapping[str, TarLimits]


@dataclass
class RawDataset:
    """The dataset as published: its own train/test split, uint8 pixels, int64 labels.

    A folder's images are :class:`~cnnlab.data.prepare.Rows`, read on demand, not tensors.
    """

    train_images: torch.Tensor | Rows  # uint8, [N, C, H, W]
    train_labels: torch.Tensor  # int64, [N]
    test_images: torch.Tensor | Rows  # uint8, [M, C, H, W]
    test_labels: torch.Tensor  # int64, [M]
    classes: list[str]
    #: The dataset's own validation split, where it has one (Flowers-102, a folder with
    #: val/); otherwise prepare draws it from the training split.
    val_images: torch.Tensor | Rows | None = None
    val_labels: torch.Tensor | None = None


def redownload_hint(name: str) -> str:
    return f"run the download of '{name}' again (it rebuilds the raw folder from verified files)"
