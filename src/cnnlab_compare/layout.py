"""Where the pipeline's stages leave what a comparison reads, as stages/common.py names it.

cnnlab itself knows no file layout (the stages do), and this package may not import the
stage scripts; tests/test_experiments.py checks these against stages/common.py.
"""

from __future__ import annotations

from pathlib import Path

#: The evaluate stage's metrics, one file per run (<model>-<dataset>.json).
METRICS = Path("metrics")
#: The train stage's per-epoch logs, one folder per run.
TRAIN_LOGS = Path("plots/train")
#: Training times, one entry per run (git-tracked, no stage output).
TIMINGS = Path("timings.json")


def run_name(model: str, dataset: str) -> str:
    return f"{model}-{dataset}"
