"""Helpers of the end-to-end tests (not a test module): run a command or the real `dvc` in a
project copy, wait for something with a deadline, build the tiny project they share.

Every wait here has a deadline, and past it the test fails loudly, naming what it waited for
and the tail of what the command printed (a hung `dvc` never hangs the suite).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from conftest import copy_clean_checkout

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
#: The default deadline of one command (seconds): a `dvc repro` of the tiny project takes well
#: under a minute on 2 quiet cores; this is for a loaded machine, not for a hang.
DEADLINE = 600
COMMIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm"]

#: The tiny configuration of the shared reproduced project (conftest's ``reproduced_digits``).
TINY_PARAMS = {
    "datasets": ["digits"],
    "models": ["lenet", "alexnet"],
    "epochs": 2,
    "batch_size": 32,
    "eval_batch_size": 100,
    "threads": 1,  # `make test` runs two workers on 2 cores: one thread each
}
TINY_DATA = {"max_train": 400, "max_test": 200}


def _tail(text: str | bytes | None, chars: int = 4000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-chars:]


def env() -> dict[str, str]:
    """The environment of a command: the venv first on PATH (`python` in dvc.yaml is the
    venv's), CI set (no progress bars), no PYTHONPATH."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    out = {**os.environ, "CI": "true", "PATH": path}
    out.pop("PYTHONPATH", None)
    return out


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: float | None = DEADLINE
) -> subprocess.CompletedProcess:
    """``cmd`` in ``cwd`` with the venv first on PATH. ``timeout`` (seconds) is a deadline:
    past it the command is killed and the test fails, naming it and the tail of its output.
    With ``check``, a non-zero exit fails the test the same way."""
    try:
        result = subprocess.run(
            cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(
            f"{' '.join(map(str, cmd))} (in {cwd}) did not finish within {timeout} s and was "
            f"killed; the tail of its output:\n{_tail(expired.stdout)}\n{_tail(expired.stderr)}",
            pytrace=False,
        )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
            f"{_tail(result.stdout)}\n{_tail(result.stderr)}"
        )
    return result


def dvc(
    *args: str, cwd: Path, check: bool = True, timeout: float | None = DEADLINE
) -> subprocess.CompletedProcess:
    """The real `dvc` of this venv, as :func:`run` runs commands (the same deadline)."""
    return run([str(Path(sys.executable).parent / "dvc"), *args], cwd, check, timeout)


def finish(process: subprocess.Popen, timeout: float, what: str) -> tuple[str, str]:
    """``process``'s output once it ends; past ``timeout`` seconds it is killed and the test
    fails, naming ``what`` and the tail of its output."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=60)
        pytest.fail(
            f"{what} did not finish within {timeout} s and was killed; the tail of its "
            f"output:\n{_tail(out)}\n{_tail(err)}",
            pytrace=False,
        )
    return out or "", err or ""


def wait_for(
    condition: Callable[[], T],
    what: str,
    deadline_s: float = 120,
    interval_s: float = 0.01,
    process: subprocess.Popen | None = None,
) -> T:
    """Poll ``condition`` until it returns something true, and return that. Past
    ``deadline_s`` seconds, or once ``process`` has ended without it, the test fails naming
    ``what`` (and ``process`` is killed: no stray training run outlives its test)."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None and not condition():
            out, err = process.communicate()
            pytest.fail(
                f"{what}: the process ended ({process.returncode}) before it happened; the "
                f"tail of its output:\n{_tail(out)}\n{_tail(err)}",
                pytrace=False,
            )
        if time.monotonic() >= deadline:
            if process is not None:
                process.kill()
                process.communicate(timeout=60)
            pytest.fail(f"{what}: not within {deadline_s} s", pytrace=False)
        time.sleep(interval_s)


def stages_run(output: str) -> list[str]:
    """The stages a `dvc repro` or `dvc exp run` ran, in order, from its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def commit(path: Path, message: str) -> None:
    run(["git", "add", "-A"], path)
    run([*COMMIT, message], path)


def tiny_project(path: Path, params: dict, data: dict) -> Path:
    """A git repository holding a copy of the project with these params, committed."""
    copy_clean_checkout(path)
    values = yaml.safe_load((path / "params.yaml").read_text())
    values.update(params)
    values["data"].update(data)
    (path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], path)
    commit(path, "tiny")
    return path


def copy_repository(source: Path, dest: Path) -> Path:
    """A copy of a reproduced repository: git, DVC cache and outputs, as they are (a test that
    changes it starts from the finished run, no retraining)."""
    shutil.copytree(source, dest, symlinks=True)
    return dest
