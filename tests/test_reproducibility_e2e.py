"""The reproducibility check itself catches a noisy stage (CI runs it on the project)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def _load_check():
    spec = importlib.util.spec_from_file_location("check", ROOT / "ci" / "check_reproducible.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_check()
TINY = {
    "datasets": ["digits"],
    "models": ["lenet"],
    "epochs": 1,
    "batch_size": 64,
    "data": {"max_train": 300, "max_test": 100},
}


def _project_repo(tmp_path: Path, noisy: bool) -> Path:
    """A committed copy of the project; ``noisy`` makes prepare write random bytes."""

    from conftest import copy_clean_checkout

    repo = tmp_path / "repo"
    copy_clean_checkout(repo)
    if noisy:
        stage = repo / "stages" / "prepare.py"
        stage.write_text(
            stage.read_text().replace(
                "    save_prepared(data, PREPARED / dataset)\n",
                "    data.meta['noise'] = __import__('os').urandom(4).hex()\n"
                "    save_prepared(data, PREPARED / dataset)\n",
            )
        )
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
    ):
        subprocess.run(cmd, cwd=repo, check=True)
    return repo


def test_check_names_the_stage_that_made_noise(tmp_path: Path) -> None:
    repo = _project_repo(tmp_path, noisy=True)
    with pytest.raises(check.CheckFailed) as info:
        check.check_runs(repo, TINY, fresh_clone=False)
    message = str(info.value)
    assert "prepare@digits (first run vs dvc repro -f): 1 file(s) differ" in message
    assert "data/prepared/digits/meta.json" in message
    assert re.findall(r"^  (\S+) \(", message, re.MULTILINE) == ["prepare@digits"]


def test_lock_mode_reports_stages_that_would_run(tmp_path: Path) -> None:
    repo = _project_repo(tmp_path, noisy=False)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump({**params, "datasets": ["digits"]}))
    with pytest.raises(
        check.CheckFailed, match=r"dvc.lock is not up to date[\s\S]*download@digits"
    ):
        check.check_lock(repo)
