"""No result under params that did not produce it: params.yaml checked at each stage's start
(against what the dvc run began with) and end (against what the stage began with)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from e2e import DEADLINE, commit, copy_repository, dvc, finish, run
from e2e import env as e2e_env
from test_resume import _workdir
from test_writers import _holder_pid

sys.path.insert(0, str(ROOT / "stages"))
from common import params_changes

#: Stands in for `dvc`: runs each command it reads, one per line, as DVC does
#: (`$SHELL -c`, DVC_STAGE set), and prints its exit status; one process, one dvc run.
FAKE_DVC = """
import os, subprocess, sys
for line in sys.stdin:
    env = {**os.environ, "DVC_STAGE": "stage", "CI": "true"}
    done = subprocess.run(["/bin/sh", "-c", line], env=env, capture_output=True, text=True)
    print(done.returncode, done.stderr.replace(chr(10), " | "), flush=True)
"""


class FakeDvc:
    def __init__(self, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", FAKE_DVC],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def stage(self, script: str, *args: str) -> tuple[int, str]:
        command = " ".join([sys.executable, str(ROOT / "stages" / script), *args])
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], 300)
        assert ready, f"{script} did not finish within 300 s"
        code, _, stderr = self.process.stdout.readline().partition(" ")
        return int(code), stderr.rstrip("\n")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _set_seed(cwd: Path, seed: int) -> None:
    """params.yaml with another seed, replaced in one step: a stage reading it meanwhile
    reads the old or the new values, never a half-written file (a truncated params.yaml
    read at the stage's start failed the run with a different error now and then)."""
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    new = cwd / "params.yaml.new"
    new.write_text(yaml.safe_dump({**params, "seed": seed}))
    os.replace(new, cwd / "params.yaml")


def test_a_stage_refuses_to_start_when_params_changed_since_its_dvc_run_began(
    tmp_path: Path,
) -> None:
    """What a second `dvc exp run -S seed=...` in the same workspace does to the first."""
    cwd = _workdir(tmp_path / "run", epochs=1)
    first = FakeDvc(cwd)
    try:
        assert first.stage("validate.py") == (0, "")
        _set_seed(cwd, 6)  # the other `dvc exp run` writes its -S values
        code, stderr = first.stage("train.py", "lenet", "digits")
    finally:
        first.close()
    assert code == 2
    assert stderr.startswith(
        "error: params.yaml changed since this dvc run began (seed: 42 -> 6): "
    ), stderr
    assert "`dvc exp run --queue` or `--temp`" in stderr
    assert not (cwd / "models").exists()
    second = FakeDvc(cwd)  # a new dvc run starts from the params it finds
    try:
        assert second.stage("validate.py") == (0, "")
        code, stderr = second.stage("train.py", "lenet", "digits")
        assert code == 0, stderr
    finally:
        second.close()
    assert (cwd / "models/lenet-digits/best.pt").is_file()


def test_a_stage_fails_when_params_change_while_it_runs(tmp_path: Path) -> None:
    cwd = _workdir(tmp_path / "run", epochs=40)
    stage = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py"), "lenet", "digits"],
        cwd=cwd,
        env={**os.environ, "CI": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _holder_pid(cwd)  # it has read params.yaml by then
        _set_seed(cwd, 6)
        _, stderr = finish(stage, DEADLINE, "train.py lenet digits")
    finally:
        if stage.poll() is None:
            stage.kill()
            stage.communicate(timeout=60)
    assert stage.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: params.yaml changed while this stage ran (seed: 42 -> 6): "
        "its outputs were made with the old values, and DVC must not record them"
    ), stderr
    assert "Traceback" not in stderr


def test_only_changed_values_count_and_are_named_by_their_dotted_keys() -> None:
    text = (ROOT / "params.yaml").read_text()
    assert params_changes(text, text + "# a note\n") is None
    values = yaml.safe_load(text)
    values["model"]["lenet"]["dropout"] = 0.5
    values["datasets"] = ["mnist"]
    assert params_changes(text, yaml.safe_dump(values)) == (
        "datasets: ['digits'] -> ['mnist'], model.lenet.dropout: 0.0 -> 0.5"
    )
    assert params_changes(text, "seed: [") == "the whole file"


@pytest.mark.e2e
def test_dvc_records_nothing_under_params_changed_mid_run_and_temp_experiments_still_run(
    reproduced_digits, tmp_path: Path
) -> None:
    """The real `dvc`: a second `dvc exp run` writes its -S values while the first trains
    (simulated by writing them); then the way to run experiments in parallel, `--temp`,
    which runs in a copy of the workspace, where the check must not get in the way.

    On a copy of the session's reproduced tiny project (see conftest), LeNet alone and long
    enough to be caught training; the data stages stay as they were."""
    repo = copy_repository(reproduced_digits[0], tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(
        yaml.safe_dump({**params, "models": ["lenet"], "epochs": 30}, sort_keys=False)
    )
    commit(repo, "lenet alone, 30 epochs")
    # The finished run's lock file still names its last holder (a released lock keeps its
    # text): without it, the pid read below is the new train stage's.
    (repo / "data/locks/run-lenet-digits.lock").unlink()
    repro = subprocess.Popen(
        [str(Path(sys.executable).parent / "dvc"), "repro"],
        cwd=repo,
        env=e2e_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _holder_pid(repo)  # train@lenet-digits is running
        _set_seed(repo, 6)
        output, _ = finish(repro, DEADLINE, "dvc repro")
    finally:
        if repro.poll() is None:
            repro.kill()
            repro.communicate(timeout=60)
    assert repro.returncode != 0
    assert "error: params.yaml changed while this stage ran (seed: 42 -> 6)" in output
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    recorded = lock.get("train@lenet-digits", {}).get("params", {}).get("params.yaml", {})
    assert recorded.get("seed") != 6

    run(["git", "checkout", "params.yaml"], repo)
    dvc("exp", "run", "--temp", "-n", "parallel", "-S", "epochs=2", cwd=repo)
    assert "parallel" in dvc("exp", "show", "--csv", cwd=repo).stdout
