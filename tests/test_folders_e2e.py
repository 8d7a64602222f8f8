"""A folder of the user's own images through the whole pipeline, with the real `dvc` CLI.

Generated PNGs and JPEGs of many sizes in three classes, plus a truncated JPEG and a text file
named .png, next to scikit-learn's digits: the folder's class names reach the metrics and the
report, the bad files are named and skipped, and adding one image reruns that dataset's
stages (and compare) while the digits' stages stay as they were.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from e2e import commit, copy_repository, dvc, stages_run
from fake_datasets import FOLDER_COLOURS, image_bytes, write_image_folder
from test_reporting import table_rows

pytestmark = pytest.mark.e2e

CLASSES = sorted(FOLDER_COLOURS)
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def project(reproduced_digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's reproduced digits project (see conftest) given a folder of
    images as a second dataset, LeNet alone: the digits' stages are DVC's cached ones."""
    path = copy_repository(reproduced_digits[0], tmp_path_factory.mktemp("folders") / "repo")
    write_image_folder(path / "datasets" / "pics", per_class=6)
    (path / "datasets" / "pics" / "README.md").write_text("Three colours, generated.\n")
    params = yaml.safe_load((path / "params.yaml").read_text())
    params.update(datasets=["digits", "pics"], models=["lenet"])
    params["dataset"]["pics"] = {"size": 48, "resize": "letterbox", "on_bad_file": "skip"}
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(path, "photos")
    return path


@pytest.fixture(scope="module")
def first_repro(project: Path):
    start = time.perf_counter()
    result = dvc("repro", cwd=project)
    TIMINGS["first"] = time.perf_counter() - start
    return result


def test_the_folder_runs_through_every_stage(project: Path, first_repro) -> None:
    ran = stages_run(first_repro.stdout)
    assert {"download@pics", "prepare@pics", "train@lenet-pics", "evaluate@lenet-pics"} <= set(ran)
    assert ran[-1] == "compare"
    assert not {"prepare@digits", "train@lenet-digits"} & set(ran)  # as they were
    assert "20 files in 3 classes (apple, leaf, sky)" in first_repro.stdout
    assert "ignored (not in a class folder): README.md" in first_repro.stdout


def test_bad_files_are_named_and_skipped(project: Path, first_repro) -> None:
    output = first_repro.stdout + first_repro.stderr
    assert "skipped datasets/pics/apple/corrupt.jpg: cannot decode it" in output
    assert "skipped datasets/pics/apple/notes.png: not an image" in output
    meta = json.loads((project / "data/prepared/pics/meta.json").read_text())
    assert [s["path"] for s in meta["skipped_files"]] == ["apple/corrupt.jpg", "apple/notes.png"]
    # 18 good images, one per class held out for test (6 * 0.2 rounds to 1), the rest split
    # into train and val: every image is 48x48 RGB whatever its file's size and format.
    assert meta["classes"] == CLASSES
    assert meta["image_shape"] == [3, 48, 48]
    assert meta["counts"]["test"] == 3 and sum(meta["counts"].values()) == 18


def test_class_names_reach_metrics_predictions_and_report(project: Path, first_repro) -> None:
    metrics = json.loads((project / "metrics/lenet-pics.json").read_text())
    per_class = json.loads((project / "plots/eval/lenet-pics/classes.json").read_text())
    assert [row["class"] for row in per_class] == CLASSES
    assert all(0 <= row["accuracy"] <= 1 and row["images"] == 1 for row in per_class)
    assert metrics["test_images"] == 3
    # LeNet fed 32x32 (the 48x48 images shrunk per batch) with 3 channels, 3 outputs.
    assert metrics["params"] == 62_006 - 7 * 85  # 10 outputs -> 3: 7 fewer rows of 84 + bias
    predictions = json.loads((project / "plots/eval/lenet-pics/predictions.json").read_text())
    assert {p["actual"] for p in predictions} == set(CLASSES)
    report = (project / "reports/report.md").read_text()
    assert ["pics", "LeNet"] in [row[:2] for row in table_rows(report)]
    assert "Learning curves on pics" in report
    assert (project / "plots/compare/confusion-lenet-pics.png").stat().st_size > 0


def test_adding_an_image_reruns_only_that_dataset(project: Path, first_repro) -> None:
    image = project / "datasets/pics/leaf/new_leaf.png"
    image.write_bytes(image_bytes(FOLDER_COLOURS["leaf"], (70, 50), "PNG", seed=123))
    status = dvc("status", cwd=project).stdout
    assert "download@pics" in status and "datasets/pics" in status
    assert "digits" not in status
    start = time.perf_counter()
    again = dvc("repro", cwd=project)
    TIMINGS["after adding an image"] = time.perf_counter() - start
    assert sorted(stages_run(again.stdout)) == sorted(
        ["download@pics", "prepare@pics", "train@lenet-pics", "evaluate@lenet-pics", "compare"]
    )
    meta = json.loads((project / "data/prepared/pics/meta.json").read_text())
    assert sum(meta["counts"].values()) == 19
    print(f"dvc repro wall times: {TIMINGS}")
