"""Shared fixtures: small real data (scikit-learn's digits) prepared the pipeline's way."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from cnnlab.data.prepare import PreparedData, split_dataset
from cnnlab.params import Params, validate_params

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip, with the reason shown, on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


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


@pytest.fixture(scope="session")
def reproduced_digits(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny project (digits, LeNet + AlexNet, 2 epochs) after its first `dvc repro`,
    committed, and that run's output. The end-to-end modules that start from a reproduced
    project copy it (test_pipeline_e2e.copy_repository) instead of each paying for the run.
    """
    from test_pipeline_e2e import COMMIT, TINY_DATA, TINY_PARAMS, dvc, run, tiny_project

    path = tiny_project(tmp_path_factory.mktemp("shared") / "repo", TINY_PARAMS, TINY_DATA)
    first = dvc("repro", cwd=path)
    run(["git", "add", "-A"], path)
    run([*COMMIT, "baseline"], path)
    return path, first
