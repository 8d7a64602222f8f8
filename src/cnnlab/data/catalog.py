"""The datasets the pipeline knows, and the per-dataset defaults that recipes rely on.

Torch-free on purpose: params validation reads it at every stage start.

Besides these built-in datasets, any other name declared under ``dataset:`` in params.yaml is
a folder of the user's own images (``cnnlab.data.folders``); :func:`title` and
:func:`stored_channels` answer for both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    #: Mirrored images are still valid samples (true for objects, false for digits and letters).
    hflip_ok: bool
    #: Random-crop padding of the usual recipe (0: no crop).
    crop_padding: int
    #: Channels of the stored images: params validation checks per-channel values against it
    #: (``data.mean`` with three values cannot normalise gray images) before any data is read.
    channels: int = 1


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST", hflip_ok=False, crop_padding=0),
    "fashion_mnist": DatasetInfo("fashion_mnist", "Fashion-MNIST", hflip_ok=False, crop_padding=0),
    "cifar10": DatasetInfo("cifar10", "CIFAR-10", hflip_ok=True, crop_padding=4, channels=3),
    "digits": DatasetInfo("digits", "scikit-learn digits", hflip_ok=False, crop_padding=0),
    # Photos of flowers: mirrored flowers are still flowers. No crop by default: the images
    # are resized in prepare to a size of the user's choosing, so no fixed padding fits all.
    "flowers102": DatasetInfo(
        "flowers102", "Oxford Flowers-102", hflip_ok=True, crop_padding=0, channels=3
    ),
}

#: Folder datasets are decoded to RGB, whatever the files hold (gray, palette, RGBA).
FOLDER_CHANNELS = 3


def title(name: str) -> str:
    """The name shown in reports and figure titles: a folder dataset is shown by its name."""
    info = DATASETS.get(name)
    return info.title if info is not None else name


def stored_channels(name: str) -> int:
    """Channels of the prepared images of ``name``, built-in or folder."""
    info = DATASETS.get(name)
    return info.channels if info is not None else FOLDER_CHANNELS
