"""One writer per run: a second one is refused at once, and a stage ends with its `dvc`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import ROOT
from test_resume import _workdir

TRAIN = [sys.executable, str(ROOT / "stages" / "train.py"), "lenet", "digits"]
LOCK = Path("data/locks/run-lenet-digits.lock")


def _holder_pid(cwd: Path, deadline_s: float = 120) -> int:
    """The pid the running stage wrote into its lock file, once it holds the lock."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        text = (cwd / LOCK).read_text() if (cwd / LOCK).exists() else ""
        if text.startswith("pid ") and text.endswith("\n"):
            return int(text.split()[1].rstrip(":"))
        time.sleep(0.05)
    raise AssertionError(f"no process took {cwd / LOCK} within {deadline_s} s")


def _gone(pid: int, deadline_s: float) -> bool:
    """True once ``pid`` has ended (an unreaped zombie counts as ended)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _set_epochs(cwd: Path, epochs: int) -> None:
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    (cwd / "params.yaml").write_text(yaml.safe_dump({**params, "epochs": epochs}))


def _run(cwd: Path, command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_second_writer_of_a_run_is_refused_at_once_and_the_lock_dies_with_its_holder(
    tmp_path: Path,
) -> None:
    cwd = _workdir(tmp_path / "run", epochs=200)
    env = {**os.environ, "CI": "true"}
    holder = subprocess.Popen(TRAIN, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    try:
        pid = _holder_pid(cwd)
        assert pid == holder.pid
        for command in (TRAIN, [*TRAIN[:1], str(ROOT / "stages" / "evaluate.py"), *TRAIN[2:]]):
            second = _run(cwd, command)
            assert second.returncode == 2, second.stderr
            assert second.stderr.count("\n") == 1, second.stderr  # one line, no traceback
            assert second.stderr.startswith(
                f"error: run lenet-digits is being written by another process right now "
                f"(pid {pid}: `python {ROOT / 'stages' / 'train.py'} lenet digits`, since "
            ), second.stderr
            assert f"stop it (kill {pid}) and rerun" in second.stderr
            assert "--queue" in second.stderr
        assert holder.poll() is None  # the holder was not disturbed
    finally:
        holder.kill()
        holder.wait(timeout=60)
    _set_epochs(cwd, 1)  # SIGKILL left the lock file, not the lock
    after = _run(cwd, TRAIN)
    assert after.returncode == 0, after.stderr
    assert (cwd / "models/lenet-digits/best.pt").is_file()


@pytest.mark.parametrize("shell", ["/bin/sh", "bash"])
def test_a_stage_stops_when_the_dvc_that_started_it_is_killed(tmp_path: Path, shell) -> None:
    """DVC runs `$SHELL -c '<cmd>'`: bash becomes the stage, dash (/bin/sh) waits on it."""
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"no {shell} here")
    cwd = _workdir(tmp_path / "orphan", epochs=200)
    log = cwd / "stage.log"
    fake_dvc = (
        "import os, subprocess, sys; "
        "subprocess.run([sys.argv[1], '-c', sys.argv[2]], "
        "env={**os.environ, 'DVC_STAGE': 'train@lenet-digits', 'CI': 'true'})"
    )
    command = f"{sys.executable} {ROOT / 'stages' / 'train.py'} lenet digits"
    with log.open("w") as out:
        dvc = subprocess.Popen(
            [sys.executable, "-c", fake_dvc, path, command], cwd=cwd, stdout=out, stderr=out
        )
    stage = None
    try:
        stage = _holder_pid(cwd)
        os.kill(dvc.pid, signal.SIGKILL)
        dvc.wait(timeout=60)
        assert _gone(stage, 60), f"stage {stage} still running 60 s after its dvc was killed"
    finally:
        if dvc.poll() is None:
            dvc.kill()
        if stage is not None and not _gone(stage, 0):
            os.kill(stage, signal.SIGKILL)
    output = log.read_text()
    assert f"the dvc process that started this stage (pid {dvc.pid}) is gone: stopping" in output
    assert "interrupted: this stage did not finish" in output
    assert "Traceback" not in output
