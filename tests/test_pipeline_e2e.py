"""End to end through the real `dvc` CLI, in a temporary git repository copy of the project.

Small real data (scikit-learn's digits, no network) and one or two epochs keep it to about a
minute; the assertions are what a user sees: stage names, metrics files, what reruns.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from e2e import copy_repository, dvc, run, stages_run
from test_reporting import table_rows

pytestmark = pytest.mark.e2e

METRIC_KEYS = {
    "test_acc",
    "test_top5",
    "test_loss",
    "best_val_acc",
    "best_epoch",
    "epochs",
    "params",
    "macs",
    "diverged",
}


@pytest.fixture(scope="module")
def project(reproduced_digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's copy of the shared tiny project, reproduced and committed."""
    source, _ = reproduced_digits
    return copy_repository(source, tmp_path_factory.mktemp("project") / "repo")


@pytest.fixture(scope="module")
def first_repro(reproduced_digits) -> subprocess.CompletedProcess:
    """The first `dvc repro` of the shared project (its output)."""
    return reproduced_digits[1]


def test_repro_runs_every_stage_by_name(project: Path, first_repro) -> None:
    ran = stages_run(first_repro.stdout)
    assert sorted(ran) == sorted(
        [
            "validate",
            "download@digits",
            "prepare@digits",
            "train@lenet-digits",
            "evaluate@lenet-digits",
            "train@alexnet-digits",
            "evaluate@alexnet-digits",
            "compare",
        ]
    )
    assert ran[:3] == ["validate", "download@digits", "prepare@digits"]
    assert ran[-1] == "compare"
    assert ran.index("train@lenet-digits") < ran.index("evaluate@lenet-digits")


def test_metrics_files_hold_the_documented_keys(project: Path, first_repro) -> None:
    for model in ("lenet", "alexnet"):
        metrics = json.loads((project / "metrics" / f"{model}-digits.json").read_text())
        assert set(metrics) >= METRIC_KEYS
        assert 0 <= metrics["test_acc"] <= metrics["test_top5"] <= 1
        assert metrics["epochs"] == 2 and metrics["diverged"] is False
    lenet = json.loads((project / "metrics" / "lenet-digits.json").read_text())
    assert lenet["test_acc"] > 0.5  # chance is 0.1
    assert lenet["params"] == 61_706  # LeNet with 1 input channel, 10 classes
    assert "train_seconds" not in lenet  # a measurement, not a result: timings.json
    # the run's record: its status, confusion matrix and recipe, from which compare renders
    assert lenet["status"] == "ok" and lenet["classes"] == [str(i) for i in range(10)]
    assert sum(map(sum, lenet["confusion"])) == lenet["test_images"]
    assert lenet["recipe"]["epochs"] == 2 and lenet["recipe"]["train_images"] > 0
    classes = json.loads((project / "plots/eval/lenet-digits/classes.json").read_text())
    assert [row["class"] for row in classes] == [str(i) for i in range(10)]
    assert sum(row["images"] for row in classes) == lenet["test_images"]
    shown = json.loads(dvc("metrics", "show", "--json", cwd=project).stdout)
    files = next(iter(shown.values()))["data"]
    assert set(files) == {"metrics.json", "timings.json"}
    accuracy = files["metrics.json"]["data"]
    assert accuracy["lenet-digits"] == {"test_acc": lenet["test_acc"], "best_val_acc": lenet[
        "best_val_acc"]}  # fmt: skip
    timing = files["timings.json"]["data"]["alexnet-digits"]
    assert timing["train_seconds"] > 0 and timing["device"] == "cpu"


def test_outputs_of_every_stage_exist(project: Path, first_repro) -> None:
    for path in (
        "data/prepared/digits/train_images.npy",
        "data/prepared/digits/meta.json",
        "models/lenet-digits/best.pt",
        "models/lenet-digits/last.pt",
        "plots/train/lenet-digits/plots/metrics/val/acc.tsv",
        "plots/eval/alexnet-digits/predictions.json",
        "plots/compare/curves-digits.png",
        "reports/report.md",
    ):
        assert (project / path).is_file(), path
    report = (project / "reports" / "report.md").read_text()
    assert {"LeNet", "AlexNet"} <= {row[1] for row in table_rows(report)}


def test_second_repro_runs_nothing(project: Path, first_repro) -> None:
    again = dvc("repro", cwd=project)
    assert stages_run(again.stdout) == []
    assert "Data and pipelines are up to date." in again.stdout


def test_a_diverging_run_is_reported_and_the_pipeline_goes_on(
    reproduced_digits, tmp_path: Path
) -> None:
    """In its own copy of the reproduced project: the experiment's results stay there."""
    project = copy_repository(reproduced_digits[0], tmp_path / "repo")
    result = dvc(
        "exp", "run", "-S", "optimizer=sgd", "-S", "lr=1e6", "-S", "models=[lenet]", cwd=project
    )
    assert "loss is not finite; the run diverged" in result.stderr + result.stdout
    assert {"evaluate@lenet-digits", "compare"} <= set(stages_run(result.stdout))
    metrics = json.loads((project / "metrics" / "lenet-digits.json").read_text())
    assert metrics["diverged"] is True and metrics["diverged_epoch"] == 1
    assert metrics["test_acc"] is None
    report = (project / "reports" / "report.md").read_text()
    assert ["LeNet", "–", "diverged (epoch 1)"] in [row[1:4] for row in table_rows(report)]


def test_a_typo_fails_before_any_work(project: Path, first_repro) -> None:
    params = project / "params.yaml"
    saved = params.read_text()
    try:
        params.write_text(yaml.safe_dump({**yaml.safe_load(saved), "optimizer": "adamm"}))
        result = dvc("repro", cwd=project, check=False)
        assert result.returncode != 0
        assert "optimizer: got 'adamm': Input should be 'sgd'" in result.stderr + result.stdout
        assert "Traceback" not in result.stderr
    finally:
        params.write_text(saved)


def test_a_bad_s_value_is_stopped_before_dvc_deletes_an_output(project: Path, first_repro):
    """validate runs first: DVC has not removed the outputs of the stages the value reaches,
    and every problem is listed, top-level and per-model alike."""
    before = {p: p.read_bytes() for p in (project / "models").rglob("*.pt")}
    try:
        result = dvc(
            "exp", "run", "-S", "optimizer=adamm", "-S", "epochs=0",
            "-S", "model.alexnet.dropout=2", cwd=project, check=False,
        )  # fmt: skip
        text = result.stdout + result.stderr
        assert result.returncode != 0 and "(3 problems)" in text
        for key in ("optimizer: got 'adamm'", "epochs: got 0", "model.alexnet.dropout: got 2"):
            assert key in text
        assert stages_run(result.stdout) == ["validate"]
        assert {p: p.read_bytes() for p in (project / "models").rglob("*.pt")} == before
    finally:
        run(["git", "checkout", "--", "params.yaml"], project)


def test_a_params_change_never_runs_a_command(project: Path, first_repro) -> None:
    """A dataset name made to break out of the stage command: refused by validate before
    any stage that interpolates it, and quoted in the commands anyway."""
    params = project / "params.yaml"
    saved = params.read_text()
    name = "x;echo INJECTED>injected.txt"
    try:
        values = yaml.safe_load(saved)
        values["datasets"] = ["digits", name]
        values["dataset"][name] = {}
        params.write_text(yaml.safe_dump(values))
        result = dvc("repro", cwd=project, check=False)
        assert result.returncode != 0
        assert "not a usable dataset name" in result.stdout + result.stderr
        assert stages_run(result.stdout) == ["validate"]
        assert not (project / "injected.txt").exists()
        shown = dvc("stage", "list", cwd=project).stdout
        assert "download@x;echo" in shown  # DVC built the stage, and its command is quoted:
        yaml_text = (project / "dvc.yaml").read_text()
        assert "python stages/download.py '${item}'" in yaml_text
    finally:
        params.write_text(saved)
