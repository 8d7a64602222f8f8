"""What a killed writer leaves beside its output: the next run of the same stage removes it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT, clean_params_text

from cnnlab.files import atomic_directory, save_torch

#: No process has this pid (Linux's pid_max is at most 2**22); the stale scratch's writer is gone.
DEAD_PID = 2**22 + 1


def _stage(cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / script), *args],
        cwd=cwd,
        env={**os.environ, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_prepare_removes_the_scratch_a_killed_prepare_left(tmp_path: Path) -> None:
    params = yaml.safe_load(clean_params_text())
    params.update(datasets=["digits"], models=["lenet"], threads=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert _stage(tmp_path, "download.py", "digits").returncode == 0
    prepared = tmp_path / "data/prepared"
    stale = prepared / f".digits.{DEAD_PID}.0badc0de.tmp"  # as SIGKILL mid-save leaves it
    stale.mkdir(parents=True)
    (stale / "train_images.npy").write_bytes(b"\0" * 4096)
    running = prepared / f".digits.{os.getpid()}.0123abcd.tmp"  # a writer at work right now
    running.mkdir()
    notes = prepared / ".digits.notes"  # not a name a writer gives: never touched
    notes.write_text("mine")
    fd = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _stage(tmp_path, "prepare.py", "digits")
        assert result.returncode == 0, result.stderr
        assert not stale.exists()
        assert running.is_dir() and notes.read_text() == "mine"
    finally:
        os.close(fd)
    assert (prepared / "digits/train_images.npy").is_file()
    assert _stage(tmp_path, "prepare.py", "digits").returncode == 0
    assert sorted(p.name for p in prepared.iterdir()) == [".digits.notes", "digits"]


def test_a_checkpoint_write_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    """A half-written resume state (hundreds of MB for AlexNet) and a replaced output folder
    that a kill kept from being removed."""
    half = tmp_path / f".lenet-digits.pt.{DEAD_PID}.deadbeef.tmp"
    half.write_bytes(b"half a checkpoint")
    save_torch(tmp_path / "lenet-digits.pt", {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet-digits.pt"]

    (tmp_path / "out").mkdir()
    old = tmp_path / ".out.cafe0123.old"  # killed between the swap and the removal
    (old / "sub").mkdir(parents=True)
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet-digits.pt", "out"]
    assert (tmp_path / "out/f").read_text() == "x"
