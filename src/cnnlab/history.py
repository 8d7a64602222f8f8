"""A training run's per-epoch history, from DVCLive's TSV files into one DataFrame: one
reader for the workspace's files (compare stage) and an experiment's (cnnlab_compare).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pandas as pd

#: The columns of a history besides ``epoch``: ``<split>_<metric>`` as DVCLive logs them.
HISTORY_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc")


def tsv_path(log_dir: str | Path, column: str) -> Path:
    """Where DVCLive writes one metric of a run whose DVCLive directory is ``log_dir``:
    ``log_dir/plots/metrics/<split>/<metric>.tsv`` (``val_acc`` -> ``val/acc.tsv``)."""
    split, metric = column.split("_")
    return Path(log_dir) / "plots" / "metrics" / split / f"{metric}.tsv"


def history_from_texts(read: Callable[[str], str | None]) -> pd.DataFrame:
    """One row per epoch with ``epoch`` and :data:`HISTORY_COLUMNS`, from ``read(column)``: a
    TSV's text, or None for no file (a run that diverged in its first epoch logged none)."""
    frame: pd.DataFrame | None = None
    for column in HISTORY_COLUMNS:
        metric = column.split("_")[1]
        text = read(column)
        if text is None:
            part = pd.DataFrame({"epoch": pd.Series(dtype="int64"), column: []})
        else:
            part = pd.read_csv(io.StringIO(text), sep="\t", usecols=["step", metric])
            part = part.rename(columns={"step": "epoch", metric: column})
        frame = part if frame is None else frame.merge(part, on="epoch", how="outer")
    assert frame is not None
    return frame.sort_values("epoch").reset_index(drop=True)


def read_history(log_dir: str | Path) -> pd.DataFrame:
    """The history of the run whose DVCLive directory is ``log_dir`` on the local disk."""

    def read(column: str) -> str | None:
        path = tsv_path(log_dir, column)
        return path.read_text() if path.exists() else None

    return history_from_texts(read)
