"""Runs counted once and timings bound to their run, with the real `dvc exp run` and its run
cache: a no-op experiment (its params equal to the baseline's) is the baseline's run, not a
second seed, and does not show the time of the run the workspace held before it; after
`dvc gc -w` an experiment whose outputs left the cache is skipped with one line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from e2e import TINY_PARAMS, copy_repository, dvc, run
from test_experiments_e2e import compare_experiments

from cnnlab.runs import lock_keys

pytestmark = pytest.mark.e2e

RUN = "lenet-digits"
LENET_ONLY = ["-S", "models=[lenet]"]  # AlexNet's stages are not even defined: quick


def train_keys(project: Path, rev: str | None = None) -> dict[str, str]:
    text = (
        run(["git", "show", f"{rev}:dvc.lock"], project).stdout
        if rev
        else (project / "dvc.lock").read_text()
    )
    return {k: v for k, v in lock_keys(yaml.safe_load(text)).items() if k.startswith("train@")}


@pytest.fixture(scope="module")
def project(reproduced_digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's reproduced tiny project (Adam), then an SGD experiment in the
    workspace and a no-op one (back to Adam and the baseline's epochs) after it, both LeNet
    only. SGD's run trains three times as many epochs: its time never rounds to the
    baseline's."""
    source, _ = reproduced_digits
    path = copy_repository(source, tmp_path_factory.mktemp("runs") / "repo")
    sgd = ["-S", "optimizer=sgd", "-S", f"epochs={3 * TINY_PARAMS['epochs']}"]
    dvc("exp", "run", "-n", "sgd", *sgd, *LENET_ONLY, cwd=path, timeout=600)
    noop = ["-S", "optimizer=adam", "-S", f"epochs={TINY_PARAMS['epochs']}"]  # the baseline's
    dvc("exp", "run", "-n", "noop", *noop, *LENET_ONLY, cwd=path, timeout=600)
    return path


def test_train_records_the_key_dvc_files_its_run_under(project: Path) -> None:
    """The key train writes next to its time is the one dvc.lock gives, and DVC's run cache
    holds that run under it."""
    timings = json.loads(run(["git", "show", "main:timings.json"], project).stdout)
    keys = train_keys(project, "main")
    assert set(keys) == {"train@lenet-digits", "train@alexnet-digits"}
    for stage, key in keys.items():
        assert timings[stage.removeprefix("train@")]["train_run"] == key
        assert (project / ".dvc" / "cache" / "runs" / key[:2] / key).is_dir()


def test_a_no_op_experiment_is_the_baselines_run_and_not_the_previous_runs_time(
    project: Path,
) -> None:
    result = compare_experiments(project, "--exp", "main", "noop", "sgd")
    assert "experiment 'noop' reached the same runs as 'main'" in result.stderr
    out = project / "reports" / "experiments"
    rows = {
        (r["experiment"], r["model"]): r for r in csv.DictReader((out / "experiments.csv").open())
    }
    main, noop, sgd = rows["main", "lenet"], rows["noop", "lenet"], rows["sgd", "lenet"]
    assert noop["run_id"] == main["run_id"] != sgd["run_id"]
    assert noop["test_acc_pct"] == main["test_acc_pct"]
    # noop's committed timings.json is the workspace's, which the SGD run had written; its
    # own run was timed by the baseline, and that time is the one shown
    assert noop["train_seconds"] == main["train_seconds"] != sgd["train_seconds"]
    page = (out / "experiments.md").read_text()
    assert "`main`, `noop`" in page


def test_without_the_run_that_timed_it_the_time_is_not_measured_here(project: Path) -> None:
    compare_experiments(project, "--exp", "noop", "sgd")
    out = project / "reports" / "experiments"
    rows = {r["experiment"]: r for r in csv.DictReader((out / "experiments.csv").open())}
    assert rows["noop"]["train_seconds"] == ""  # not sgd's
    assert float(rows["sgd"]["train_seconds"]) > 0
    assert "not measured here" in (out / "experiments.md").read_text()


def test_experiments_whose_outputs_left_the_cache_are_skipped_by_name(project: Path) -> None:
    """`dvc gc -w` keeps the workspace's outputs (noop's, the baseline's) and drops sgd's."""
    dvc("gc", "-w", "-f", cwd=project, timeout=120)
    result = compare_experiments(project)
    assert result.returncode == 0
    skipped = [line for line in result.stderr.splitlines() if "skipping experiment" in line]
    assert len(skipped) == 1 and "'sgd'" in skipped[0]
    assert "not in this machine's DVC cache" in skipped[0]
    assert "compared 1 experiments (noop" in result.stdout
    named = compare_experiments(project, "--exp", "sgd", check=False)
    assert named.returncode == 2
    (line,) = named.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: none of the chosen experiments has results to compare")
    assert "Traceback" not in named.stderr
