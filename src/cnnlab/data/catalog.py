"""The built-in datasets (``DATASETS``); any other name is a folder of the user's own images
(:mod:`cnnlab.data.folders`). Torch-free: params validation reads it at every stage start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cnnlab.data.options import DatasetOptions, FixedSizeOptions, FolderOptions, ResizedOptions

#: Names end up in paths, DVC stage names (``train@lenet-<name>``) and report headings.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline knows about one built-in dataset."""

    #: Shown in reports and figure titles.
    title: str
    #: Mirrored images are still valid samples (true for objects, false for digits and letters).
    hflip_ok: bool
    #: Random-crop padding of the usual recipe (0: no crop).
    crop_padding: int
    #: Channels of the stored images: params validation checks per-channel values against it
    #: (``data.mean`` with three values cannot normalise gray images) before any data is read.
    channels: int = 1
    #: The schema of ``dataset.<name>`` in params.yaml.
    options: type[DatasetOptions] = FixedSizeOptions


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("MNIST", hflip_ok=False, crop_padding=0),
    "fashion_mnist": DatasetSpec("Fashion-MNIST", hflip_ok=False, crop_padding=0),
    "cifar10": DatasetSpec("CIFAR-10", hflip_ok=True, crop_padding=4, channels=3),
    "digits": DatasetSpec("scikit-learn digits", hflip_ok=False, crop_padding=0),
    # Photos of flowers: mirrored flowers are still flowers. No crop by default: the images
    # are resized in prepare to a size of the user's choosing, so no fixed padding fits all.
    "flowers102": DatasetSpec(
        "Oxford Flowers-102",
        hflip_ok=True,
        crop_padding=0,
        channels=3,
        options=ResizedOptions,
    ),
}

#: Folder datasets are decoded to RGB, whatever the files hold (gray, palette, RGBA).
FOLDER_CHANNELS = 3


def is_folder(name: str) -> bool:
    """True for a dataset of the user's own images (any name that is not built in)."""
    return name not in DATASETS


def title(name: str) -> str:
    """The name shown in reports and figure titles: a folder dataset is shown by its name."""
    spec = DATASETS.get(name)
    return spec.title if spec is not None else name


def stored_channels(name: str) -> int:
    """Channels of the prepared images of ``name``, built-in or folder."""
    spec = DATASETS.get(name)
    return spec.channels if spec is not None else FOLDER_CHANNELS


def options_class(name: str) -> type[DatasetOptions]:
    """The schema of ``dataset.<name>``: the spec's, or a folder's."""
    spec = DATASETS.get(name)
    return spec.options if spec is not None else FolderOptions
