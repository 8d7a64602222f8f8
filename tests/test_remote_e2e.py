"""A DVC remote round trip: push from one clone, reproduce nothing in fresh clones.

The remote is a local directory (DVC treats it like any other remote: content-addressed
files under files/md5/); the commands are the README's, "Beyond one machine".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_pipeline_e2e import ROOT, copy_ignore, dvc, run, stages_run

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
def pushed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A project with a local-directory remote, reproduced, committed and pushed."""
    base = tmp_path_factory.mktemp("remote")
    origin, remote = base / "origin", base / "store"
    shutil.copytree(ROOT, origin, ignore=copy_ignore)
    params = yaml.safe_load((origin / "params.yaml").read_text())
    params.update(datasets=["digits"], models=["lenet"], epochs=1, batch_size=32, threads=1)
    params["data"].update(max_train=300, max_test=200)
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], origin)
    dvc("remote", "add", "-d", "store", str(remote), cwd=origin)
    _commit(origin, "tiny project with a remote")
    dvc("repro", cwd=origin)
    _commit(origin, "results")  # dvc.lock and the remote's config travel with git
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
