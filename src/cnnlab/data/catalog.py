"""The built-in datasets (``DATASETS``) and the schemas of ``dataset.<name>`` in params.yaml;
any other name is a folder of the user's own images (:mod:`cnnlab.data.folders`). Torch-free:
params validation reads it at every stage start. Every dataset needs its own entry (``{}`` if
nothing to set): DVC refuses a stage whose declared param is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ResizeMode = Literal["center_crop", "letterbox"]


class DatasetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FixedSizeOptions(DatasetOptions):
    """A built-in dataset whose images all have one size already: nothing to choose."""


class ResizedOptions(DatasetOptions):
    """Images of many sizes, resized once in prepare to ``size`` x ``size``: ``center_crop``
    scales the short side and cuts the middle square (loses the edges of elongated images),
    ``letterbox`` scales the long side and pads with black (keeps all, wastes pixels)."""

    size: int = Field(ge=8, le=512)
    resize: ResizeMode


class FolderOptions(ResizedOptions):
    """A folder of the user's own images: the only options with defaults in code, since
    params.yaml cannot list a user's folder in advance (``dataset.my_photos: {}``)."""

    size: int = Field(64, ge=8, le=512)
    resize: ResizeMode = "center_crop"
    #: What to do with a file prepare cannot decode as an image (a corrupt JPEG, a text
    #: file): ``skip`` leaves it out and lists it by name; ``error`` stops the stage.
    on_bad_file: Literal["skip", "error"] = "skip"
    #: Share of each class held out as the test split, drawn by ``seed``, when the folder
    #: has no ``train/`` and ``test/`` sub-folders of its own.
    test_fraction: float = Field(0.2, gt=0, lt=1)


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
