"""Interrupted training: killed at a random point, resumed, the same bytes as never killed."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, built_once, clean_params_text, digits_prepared
from e2e import finish, wait_for

from cnnlab.data.prepare import save_prepared

#: Every test trains LeNet in the train stage's own process, killed and resumed: about 15 s
#: each on 2 quiet cores, minutes together; `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

OUTPUTS = (
    "models/lenet-digits/best.pt",
    "models/lenet-digits/last.pt",
    "plots/train/lenet-digits/plots/metrics/val/acc.tsv",
    "plots/train/lenet-digits/plots/metrics/train/loss.tsv",
)


def _workdir(path: Path, epochs: int = 6) -> Path:
    path.mkdir()
    params = yaml.safe_load(clean_params_text())
    params.update(datasets=["digits"], models=["lenet"], epochs=epochs, batch_size=16, threads=1)
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    save_prepared(digits_prepared(max_train=1000), path / "data/prepared/digits")
    return path


def _train(cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "CI": "true"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py"), "lenet", "digits"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _outputs(cwd: Path) -> dict[str, bytes]:
    return {name: (cwd / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every test compares with: trained once per test run, for both
    workers (`built_once`); tests only read it."""

    def build(folder: Path) -> None:
        cwd = _workdir(folder / "straight")
        process = _train(cwd)
        output, _ = finish(process, 300, "train.py lenet digits")
        assert process.returncode == 0, output
        # Kept, complete, until evaluate@lenet-digits starts (DVC has recorded train by then).
        assert (cwd / "checkpoints" / "lenet-digits.pt").exists()

    folder, _ = built_once(tmp_path_factory, "resume-straight", build)
    return folder / "straight"


@pytest.fixture(scope="module")
def uninterrupted(straight_run: Path) -> dict[str, bytes]:
    return _outputs(straight_run)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_identical_bytes(tmp_path: Path, uninterrupted, sig) -> None:
    cwd = _workdir(tmp_path / "killed")
    process = _train(cwd)
    checkpoint = cwd / "checkpoints" / "lenet-digits.pt"
    wait_for(checkpoint.exists, "the first epoch's resume state", 120, process=process)
    time.sleep(random.Random(os.getpid()).uniform(0, 0.2))  # somewhere inside a later epoch
    process.send_signal(sig)
    output, _ = finish(process, 60, "train.py lenet digits")
    assert process.returncode != 0, f"finished before the signal; output:\n{output}"
    if sig == signal.SIGTERM:
        assert "interrupted" in output and "Traceback" not in output
    assert not (cwd / "models/lenet-digits/best.pt").exists()
    rerun = _train(cwd)
    output, _ = finish(rerun, 300, "train.py lenet digits")
    assert rerun.returncode == 0, output
    assert "lenet-digits: resuming after epoch" in output
    assert _outputs(cwd) == uninterrupted


def test_resume_state_from_other_params_is_discarded(tmp_path: Path, uninterrupted) -> None:
    cwd = _workdir(tmp_path / "changed")
    process = _train(cwd)
    checkpoint = cwd / "checkpoints" / "lenet-digits.pt"
    wait_for(checkpoint.exists, "the first epoch's resume state", 120, process=process)
    process.send_signal(signal.SIGKILL)
    finish(process, 60, "train.py lenet digits, killed")
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    (cwd / "params.yaml").write_text(yaml.safe_dump({**params, "lr": 0.002}))
    rerun = _train(cwd)
    output, _ = finish(rerun, 300, "train.py lenet digits")
    assert rerun.returncode == 0, output
    assert "discarded a resume state from different params, data or code" in output
    assert "epoch 1/6" in output


def test_a_kill_after_training_but_before_dvc_recorded_it_costs_no_retraining(
    tmp_path: Path, uninterrupted
) -> None:
    """DVC deletes the outputs of a stage it has not recorded before rerunning it; the
    complete resume state rewrites them, byte for byte, without a training epoch."""
    cwd = _workdir(tmp_path / "late")
    process = _train(cwd)
    output, _ = finish(process, 300, "train.py lenet digits")
    assert process.returncode == 0, output
    shutil.rmtree(cwd / "models")
    shutil.rmtree(cwd / "plots")
    rerun = _train(cwd)
    output, _ = finish(rerun, 300, "train.py lenet digits")
    assert rerun.returncode == 0, output
    assert "lenet-digits: resuming after epoch 6" in output
    assert "epoch 1/6" not in output and "epoch 6/6" not in output  # nothing trained
    assert _outputs(cwd) == uninterrupted


def test_damaged_resume_state_is_discarded(tmp_path: Path, uninterrupted) -> None:
    cwd = _workdir(tmp_path / "damaged")
    (cwd / "checkpoints").mkdir()
    (cwd / "checkpoints" / "lenet-digits.pt").write_bytes(b"not a checkpoint")
    process = _train(cwd)
    output, _ = finish(process, 300, "train.py lenet digits")
    assert process.returncode == 0, output
    assert "discarded an unreadable resume state" in output
    assert _outputs(cwd) == uninterrupted
    shutil.rmtree(cwd)


def _not_a_state(complete: dict) -> object:
    return [1, 2, 3]


def _no_history(complete: dict) -> dict:
    del complete["state"]["history"]
    return complete


def _wrong_shape(complete: dict) -> dict:
    name = next(iter(complete["model"]))
    complete["model"][name] = torch.zeros(3, 1, 2, 2)
    return complete


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (_not_a_state, "a list, not a dict"),
        (_no_history, "state.history missing"),
        (_wrong_shape, "this model's is torch.float32"),
    ],
)
def test_resume_state_that_does_not_fit_is_discarded_and_training_starts_over(
    tmp_path: Path, straight_run: Path, uninterrupted, tamper, why: str
) -> None:
    """A state that loads but is no state of this run (planted, or from a bug) would break
    every later run of the stage; it is dropped with one line and the run trains from epoch 1."""
    cwd = _workdir(tmp_path / "planted")
    checkpoint = cwd / "checkpoints" / "lenet-digits.pt"
    checkpoint.parent.mkdir()
    complete = torch.load(straight_run / "checkpoints" / "lenet-digits.pt", weights_only=True)
    torch.save(tamper(complete), checkpoint)
    for attempt in range(2):  # and the next run does not meet it again
        process = _train(cwd)
        output, _ = finish(process, 300, "train.py lenet digits")
        assert process.returncode == 0, output
        assert "Traceback" not in output
        if attempt == 0:
            line = next(x for x in output.splitlines() if "discarded" in x)
            assert line.startswith("lenet-digits: discarded a resume state that does not fit")
            assert why in line and line.endswith("starting from epoch 1")
            assert "epoch 1/6" in output
            assert _outputs(cwd) == uninterrupted
        else:
            assert "resuming after epoch 6" in output
