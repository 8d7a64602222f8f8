"""A DVC remote round trip: push from one clone, reproduce nothing in fresh clones.

The remote is a local directory (DVC treats it like any other remote: content-addressed
files under files/md5/); the commands are the README's, "Beyond one machine".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pipeline_e2e import copy_repository, dvc, run, stages_run

pytestmark = pytest.mark.e2e

OUTPUTS = (
    "models/lenet-digits/best.pt",
    "data/prepared/digits/tensors.pt",
    "plots/eval/lenet-digits/predictions.json",
    "reports/summary.json",
)


def _commit(path: Path, message: str) -> None:
    run(["git", "add", "-A"], path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], path)


def _metrics(path: Path) -> dict:
    shown = json.loads(dvc("metrics", "show", "--json", cwd=path).stdout)
    return next(iter(shown.values()))["data"]


@pytest.fixture(scope="module")
def pushed(reproduced_digits, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A reproduced project (a copy of the session's, see conftest) given a local-directory
    remote, committed and pushed."""
    base = tmp_path_factory.mktemp("remote")
    origin, remote = copy_repository(reproduced_digits[0], base / "origin"), base / "store"
    dvc("remote", "add", "-d", "store", str(remote), cwd=origin)
    _commit(origin, "the remote")  # the remote's config travels with git, as dvc.lock does
    result = dvc("push", cwd=origin)
    assert "pushed" in result.stdout, result.stdout
    return origin, remote


def test_push_fills_the_remote(pushed) -> None:
    _origin, remote = pushed
    assert any(p.is_file() for p in (remote / "files" / "md5").rglob("*"))


def test_repro_pull_in_a_fresh_clone_reruns_nothing(pushed, tmp_path: Path) -> None:
    origin, _remote = pushed
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "models").exists()
    result = dvc("repro", "--pull", cwd=clone)
    assert stages_run(result.stdout) == []
    for name in OUTPUTS:
        assert (clone / name).read_bytes() == (origin / name).read_bytes(), name
    assert _metrics(clone) == _metrics(origin)


def test_pull_then_repro_reruns_nothing(pushed, tmp_path: Path) -> None:
    origin, _remote = pushed
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    dvc("pull", cwd=clone)
    assert json.loads(dvc("status", "--json", cwd=clone).stdout or "{}") == {}
    again = dvc("repro", cwd=clone)
    assert stages_run(again.stdout) == []
    assert _metrics(clone) == _metrics(origin)
