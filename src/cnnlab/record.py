"""One run's record: what evaluate measured, in metrics/<run>.json, read by every report so
none recomputes a number or a status. torch-free: readers import it without the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from cnnlab.errors import UserError

Status = Literal["ok", "diverged", "did not learn"]

#: A run whose test accuracy is within this many points of chance (one over the number of
#: classes) trained without error and learned nothing.
CHANCE_MARGIN_POINTS = 5.0
#: What to try then (the report, summary.json, the cross-experiment pages).
DID_NOT_LEARN_ADVICE = (
    "try a larger lr (`-S lr=...`, e.g. ten times the row's), another optimizer "
    "(`-S optimizer=adam`), or more epochs (`-S epochs=...`)"
)


class RecordError(UserError):
    """A run's record is missing or unreadable."""


def status_of(test_acc: float | None, num_classes: int, diverged: bool) -> Status:
    """The one place a run's status is decided."""
    if diverged:
        return "diverged"
    if test_acc is not None and test_acc * 100 < 100 / num_classes + CHANCE_MARGIN_POINTS:
        return "did not learn"
    return "ok"


class RunRecord(BaseModel):
    """metrics/<run>.json. Accuracies are fractions 0..1, null where a run that diverged in
    its first epoch left no weights to test."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str
    dataset: str
    model_title: str
    dataset_title: str
    status: Status
    test_acc: float | None
    test_top5: float | None
    test_loss: float | None
    best_val_acc: float | None
    best_epoch: int | None
    final_val_acc: float | None
    epochs: int
    epochs_completed: int
    diverged: bool
    diverged_epoch: int | None
    params: int
    macs: int
    test_images: int
    #: What the run was trained with (train's checkpoint header) and the split sizes.
    recipe: dict[str, Any]
    classes: list[str]
    #: Test images by actual class (rows) and predicted class (columns); null if none.
    confusion: list[list[int]] | None
    per_class_acc: dict[str, float | None] | None
    #: Each test image's predicted class index, in test-set order (`make verify`).
    test_predictions: list[int] | None

    @property
    def name(self) -> str:
        return f"{self.model}-{self.dataset}"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def parse_record(text: str, where: str) -> RunRecord:
    """A record from its JSON text; ``where`` names it in the error."""
    try:
        return RunRecord.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise RecordError(
            f"{where}: not a run record ({first}); rerun its evaluate stage "
            "(`dvc repro evaluate@<run>`)"
        ) from None


def read_record(path: str | Path) -> RunRecord:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecordError(f"{path}: missing; run `dvc repro` to evaluate this run") from None
    return parse_record(text, str(path))
