"""The datasets the pipeline knows, and the per-dataset defaults that recipes rely on.

Torch-free on purpose: params validation reads it at every stage start.
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
}
