"""The reproducibility gate: `dvc repro -f` gives a byte-identical dvc.lock, and when a stage
is not reproducible, ci/lock_diff.py names it and the output that changed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from e2e import COMMIT, ROOT, TINY_DATA, copy_repository, dvc, run, tiny_project

pytestmark = pytest.mark.e2e


def _load_lock_diff():
    spec = importlib.util.spec_from_file_location("lock_diff", ROOT / "ci" / "lock_diff.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock_diff = _load_lock_diff()


# Not `slow`, though it reruns every stage of the shared project, AlexNet's training included:
# `make test` builds that project for its other end-to-end tests anyway, while in
# `make test-slow` this test was the only one to need it and paid for a second build.
def test_forced_rerun_gives_the_same_dvc_lock(reproduced_digits, tmp_path: Path) -> None:
    """The gate CI runs: every stage again, and git sees no change in dvc.lock (or in the
    metrics files git tracks; timings.json holds measurements and does change)."""
    project = copy_repository(reproduced_digits[0], tmp_path / "forced")
    dvc("repro", "-f", cwd=project)
    diff = run(
        ["git", "diff", "--exit-code", "--stat", "dvc.lock", "metrics"], project, check=False
    )
    assert diff.returncode == 0, diff.stdout
    assert (
        "same stages and bytes"
        in run(["python", str(ROOT / "ci" / "lock_diff.py")], project).stdout
    )


def test_a_noisy_stage_is_named_with_the_output_that_changed(tmp_path: Path) -> None:
    params = {"datasets": ["digits"], "models": ["lenet"], "epochs": 1, "threads": 1}
    repo = tiny_project(tmp_path / "repo", params, TINY_DATA)
    stage = repo / "stages" / "prepare.py"
    stage.write_text(
        stage.read_text().replace(
            "    save_prepared(data, PREPARED / dataset",
            "    data.meta['noise'] = __import__('os').urandom(4).hex()\n"
            "    save_prepared(data, PREPARED / dataset",
        )
    )
    dvc("repro", "prepare@digits", cwd=repo)
    run(["git", "add", "-A"], repo)
    run([*COMMIT, "noisy"], repo)
    dvc("repro", "-f", "prepare@digits", cwd=repo)
    assert run(["git", "diff", "--exit-code", "dvc.lock"], repo, check=False).returncode == 1
    result = run(["python", str(ROOT / "ci" / "lock_diff.py")], repo, check=False)
    assert result.returncode == 1
    lines = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert len(lines) == 1 and lines[0].startswith(
        "prepare@digits: output data/prepared/digits changed ("
    ), result.stdout
