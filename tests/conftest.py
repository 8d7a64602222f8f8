"""Shared fixtures: small real data (scikit-learn's digits) prepared the pipeline's way.

torch is imported where it is used, not here: the torch-free test modules
(test_downloads_hostile.py) also run in a small environment without it (see .ci/run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from pydantic import BaseModel

from cnnlab.params import Params, validate_params

if TYPE_CHECKING:
    from cnnlab.data.prepare import PreparedData

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on 2 cores: two OpenMP threads each would run many times
    # slower, so in-process torch takes one (stages set their own from params' `threads`).
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip, with the reason shown, on a machine without CUDA."""
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu:
        return  # torch-free modules (see the module docstring) never import it here
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu:
        item.add_marker(skip)


def digits_prepared(max_train: int | None = 600, seed: int = 0) -> PreparedData:
    """sklearn's 8x8 digits as uint8 [N, 1, 8, 8]; the models' batch code upsamples them."""
    import torch
    from sklearn.datasets import load_digits

    from cnnlab.data.prepare import split_dataset

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


#: Files that `dvc exp run` and `dvc repro` rewrite in the workspace: tests take them as
#: committed, so that a suite run after a workspace experiment tests the project, not it.
EXPERIMENT_FILES = ("params.yaml", "dvc.lock")


def committed_text(name: str) -> str | None:
    """``name`` as committed (HEAD), or the file on disk outside a git checkout; None when
    neither exists (dvc.lock before the first commit of one)."""
    result = subprocess.run(
        ["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return result.stdout
    path = ROOT / name
    inside = subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True, check=False)
    return path.read_text() if inside.returncode != 0 and path.exists() else None


def clean_params_text() -> str:
    """The committed params.yaml, whatever a workspace experiment left on disk."""
    text = committed_text("params.yaml")
    assert text is not None, "params.yaml is not committed"
    return text


def copy_clean_checkout(dest: Path) -> Path:
    """A copy of the project as a fresh clone would have it, plus uncommitted work on code:
    the files git tracks or would track (never ignored outputs, caches or the venv), with
    params.yaml and dvc.lock as committed."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if name in EXPERIMENT_FILES or not source.is_file():
            continue  # deleted in the workspace but not yet in git
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    for name in EXPERIMENT_FILES:
        text = committed_text(name)
        if text is not None:
            (dest / name).write_text(text)
    return dest


def load_clean_params() -> Params:
    """The committed params.yaml, read and validated as the stages do."""
    from cnnlab.params import read_yaml

    return validate_params(read_yaml(clean_params_text()))


def model_options(name: str, changes: dict[str, Any] | None = None) -> BaseModel:
    """Model ``name``'s options as the committed params.yaml gives them, with ``changes``
    (params.yaml is the one place the defaults are written)."""
    from cnnlab.models.options import resolve_options

    defaults = yaml.safe_load(clean_params_text())["model"][name]
    return resolve_options(name, {**defaults, **(changes or {})})


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied as ``-S`` applies them: nested keys not named stay."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merged(base[key], value)
        else:
            out[key] = value
    return out


def make_params(**changes) -> Params:
    """The committed params with ``changes`` (nested dicts change only the keys they name)."""
    return validate_params(merged(yaml.safe_load(clean_params_text()), changes))


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]
) -> tuple[Path, Any]:
    """A folder filled by ``build(folder)`` once per test run, and what that returned (JSON).
    Under pytest-xdist (`make test` runs two workers) the first worker to ask builds it and the
    others wait for it under a file lock, with a deadline, then share the folder: tests only
    read it or copy it."""
    from e2e import DEADLINE
    from filelock import FileLock, Timeout

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, shared by its workers
    folder, record = base / name, base / f"{name}.json"
    try:
        with FileLock(base / f"{name}.lock", timeout=2 * DEADLINE):
            if not record.exists():
                shutil.rmtree(folder, ignore_errors=True)  # a worker's failed attempt
                folder.mkdir()
                record.write_text(json.dumps(build(folder)))
    except Timeout:
        pytest.fail(f"{name} was not built within {2 * DEADLINE} s by another worker", False)
    return folder, json.loads(record.read_text())


@pytest.fixture(scope="session")
def reproduced_digits(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny project (digits, LeNet + AlexNet, 2 epochs) after its first `dvc repro`,
    committed, and that run's output: built once per test run (`built_once`). The end-to-end
    modules that start from a reproduced project copy it (e2e.copy_repository: git, cache and
    outputs) instead of each paying for the run; none changes this one.
    """
    from e2e import TINY_DATA, TINY_PARAMS, commit, dvc, tiny_project

    def build(folder: Path) -> dict[str, Any]:
        path = tiny_project(folder / "repo", TINY_PARAMS, TINY_DATA)
        first = dvc("repro", cwd=path)
        commit(path, "baseline")
        return {k: getattr(first, k) for k in ("args", "returncode", "stdout", "stderr")}

    folder, first = built_once(tmp_path_factory, "reproduced-digits", build)
    return folder / "repo", subprocess.CompletedProcess(**first)
