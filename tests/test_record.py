"""A run's record: its status decided in one place, and a bad file named with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab import reporting
from cnnlab.record import RecordError, parse_record, read_record, status_of


def record(**changes: object) -> dict:
    base = {
        "model": "lenet",
        "dataset": "digits",
        "model_title": "LeNet",
        "dataset_title": "scikit-learn digits",
        "status": "ok",
        "test_acc": 0.97,
        "test_top5": 1.0,
        "test_loss": 0.1,
        "best_val_acc": 0.96,
        "best_epoch": 8,
        "final_val_acc": 0.96,
        "epochs": 8,
        "epochs_completed": 8,
        "diverged": False,
        "diverged_epoch": None,
        "params": 61706,
        "macs": 429456,
        "test_images": 3,
        "recipe": {"optimizer": "adam", "lr": 0.001, "epochs": 8},
        "classes": ["0", "1", "2"],
        "confusion": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        "per_class_acc": {"0": 1.0, "1": 1.0, "2": 1.0},
        "test_predictions": [0, 1, 2],
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("acc", "classes", "diverged", "status"),
    [
        (0.97, 10, False, "ok"),
        (0.1031, 10, False, "did not learn"),  # AlexNet under the reference's sgd row
        (0.1499, 10, False, "did not learn"),
        (0.1501, 10, False, "ok"),
        (0.36, 3, False, "did not learn"),
        (None, 10, True, "diverged"),
        (0.97, 10, True, "diverged"),
    ],
)
def test_status_is_decided_from_chance_and_divergence(
    acc: float | None, classes: int, diverged: bool, status: str
) -> None:
    assert status_of(acc, classes, diverged) == status


def test_the_compare_table_shows_the_records_status() -> None:
    rows = [record(), record(model="alexnet", status="did not learn", test_acc=0.34)]
    table = reporting.run_table(rows)
    assert table["status"].tolist() == ["ok", "did not learn"]
    assert table["num_classes"].tolist() == [3, 3]


def test_a_damaged_record_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "lenet-digits.json"
    path.write_text("<<<<<<< HEAD\n")
    with pytest.raises(RecordError, match=r"lenet-digits.json: not a run record.*dvc repro"):
        read_record(path)
    path.write_text(json.dumps(record(status="fine")))
    with pytest.raises(RecordError, match="not a run record"):
        read_record(path)
    with pytest.raises(RecordError, match="missing; run `dvc repro`"):
        read_record(tmp_path / "alexnet-digits.json")
    assert parse_record(json.dumps(record()), "x").name == "lenet-digits"
