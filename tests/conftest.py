"""Shared fixtures: small real data (scikit-learn's digits) prepared the pipeline's way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cnnlab.data.prepare import PreparedData, split_dataset
from cnnlab.params import Params, validate_params

ROOT = Path(__file__).resolve().parents[1]


def digits_prepared(max_train: int | None = 600, seed: int = 0) -> PreparedData:
    """sklearn's 8x8 digits as uint8 [N, 1, 8, 8]; the models' batch code upsamples them."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images * 255 / 16).round().to(torch.uint8)[:, None]
    labels = torch.from_numpy(bunch.target).long()
    return split_dataset(
        images[:1400],
        labels[:1400],
        images[1400:],
        labels[1400:],
        [str(i) for i in range(10)],
        name="digits",
        seed=seed,
        val_fraction=0.2,
        max_train=max_train,
    )


@pytest.fixture(scope="session")
def digits() -> PreparedData:
    return digits_prepared()


def make_params(**changes) -> Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(changes)
    return validate_params(raw)
