"""Cross-experiment comparison without DVC: labels, the table, the GIF, offline DVC plots.

The DVC side (listing experiments, reading their files from the cache) is exercised end to
end in tests/test_experiments_e2e.py.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import clean_params_text
from PIL import Image

from cnnlab import figures, reporting
from cnnlab.experiments import (
    Experiment,
    ExperimentError,
    experiment_labels,
    list_experiments,
    varying_params,
)

ROOT = Path(__file__).resolve().parents[1]


def experiment(name: str, **changes: object) -> Experiment:
    params = yaml.safe_load(clean_params_text())
    for key, value in changes.items():
        *path, last = key.split("__")
        target = params
        for part in path:
            target = target[part]
        target[last] = value
    return Experiment(name=name, rev=f"{name:0<40}", baseline=False, timestamp="", params=params)


def test_labels_name_what_varies_and_leave_out_run_choices() -> None:
    exps = [
        experiment("a", optimizer="sgd", lr=0.05, datasets=["digits"]),
        experiment("b", optimizer="adam", lr=0.05, datasets=["digits", "mnist"]),
        experiment("c", optimizer="adam", lr=None, model__alexnet__dropout=0.3),
    ]
    varied = varying_params(exps)
    assert varied == ["optimizer", "lr", "model.alexnet.dropout"]
    assert experiment_labels(exps, varied) == {
        "a": "optimizer=sgd, lr=0.05, model.alexnet.dropout=0.5",
        "b": "optimizer=adam, lr=0.05, model.alexnet.dropout=0.5",
        "c": "optimizer=adam, lr=null, model.alexnet.dropout=0.3",
    }


def test_identical_params_are_told_apart_by_name() -> None:
    exps = [experiment("first"), experiment("again")]
    assert varying_params(exps) == []
    assert experiment_labels(exps, []) == {"first": "first", "again": "again"}
    exps = [experiment("x", optimizer="sgd"), experiment("y", optimizer="sgd"), experiment("z")]
    labels = experiment_labels(exps, varying_params(exps))
    assert labels == {"x": "x: optimizer=sgd", "y": "y: optimizer=sgd", "z": "z: optimizer=adam"}


def test_not_a_dvc_repository_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="is not inside a DVC repository"):
        list_experiments(tmp_path)


def run_metrics(model: str, dataset: str, acc: float, diverged: bool = False) -> dict:
    return {
        "model": model,
        "dataset": dataset,
        "test_acc": acc,
        "test_top5": 0.99,
        "best_val_acc": acc + 0.001,
        "best_epoch": 2,
        "final_val_acc": acc - 0.002,
        "epochs_completed": 3,
        "train_seconds": 12.5,
        "diverged": diverged,
        "diverged_epoch": 1 if diverged else None,
    }


def test_experiment_table_and_markdown() -> None:
    rows = []
    for name, optimizer, accs in (("e1", "sgd", (0.9012, 0.95)), ("e2", "adam", (0.98, None))):
        for (model, dataset), acc in zip(
            (("lenet", "mnist"), ("alexnet", "mnist")), accs, strict=True
        ):
            rows.append(
                {
                    "experiment": name,
                    "rev": "abcdef0123",
                    "label": f"optimizer={optimizer}",
                    "params": {"optimizer": optimizer},
                    "run": run_metrics(model, dataset, acc or 0.1, diverged=acc is None),
                }
            )
    table = reporting.experiment_table(rows, ["optimizer"])
    assert list(table.columns[:5]) == ["experiment", "rev", "label", "optimizer", "dataset"]
    # grouped by run (dataset, model), experiments in the given order inside each
    assert list(zip(table["model"], table["experiment"], strict=True)) == [
        ("lenet", "e1"),
        ("lenet", "e2"),
        ("alexnet", "e1"),
        ("alexnet", "e2"),
    ]
    assert table["test_acc_pct"].tolist()[:3] == [90.12, 98.0, 95.0]
    assert np.isnan(table["test_acc_pct"].iloc[3])  # diverged: no accuracy
    assert table["status"].iloc[3] == "diverged at epoch 1"
    assert table["rev"].iloc[0] == "abcdef0"

    text = reporting.experiment_markdown(table, ["optimizer"], ["curves-lenet-mnist.png"])
    assert "| Experiment | MNIST LeNet | MNIST AlexNet |" in text
    assert "| optimizer=sgd | 90.12 | 95.00 |" in text
    assert "| optimizer=adam | 98.00 | diverged at epoch 1 |" in text
    assert "![curves-lenet-mnist.png](curves-lenet-mnist.png)" in text


def history(seed: int, epochs: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    e = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": e,
            "train_loss": 2.0 / e + rng.random(epochs) * 0.1,
            "val_loss": 2.1 / e + rng.random(epochs) * 0.1,
            "train_acc": 1 - 0.8 / e,
            "val_acc": 1 - 0.85 / e - rng.random(epochs) * 0.01,
        }
    )


def test_gif_grows_one_epoch_per_frame_and_repeats_its_bytes(tmp_path: Path) -> None:
    histories = {"optimizer=sgd": history(0), "optimizer=adam": history(1)}
    first, second = tmp_path / "a.gif", tmp_path / "b.gif"
    figures.animate_learning_curves(histories, "LeNet on MNIST", first)
    figures.animate_learning_curves(histories, "LeNet on MNIST", second)
    data = first.read_bytes()
    assert hashlib.sha256(data).digest() == hashlib.sha256(second.read_bytes()).digest()
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.n_frames == 4 and gif.size == (800, 600)
    frames = []
    for index in range(gif.n_frames):
        gif.seek(index)
        frames.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
    assert gif.info["duration"] == 3000  # the last frame is held
    # every frame adds ink (the next epoch's segments); none is a repeat of the one before
    changed = [int((np.abs(b - a).sum(axis=2) > 0).sum()) for a, b in itertools.pairwise(frames)]
    assert all(n > 500 for n in changed), changed


def test_gif_needs_an_epoch(tmp_path: Path) -> None:
    empty = history(0).iloc[:0]
    with pytest.raises(ValueError, match="at least one logged epoch"):
        figures.animate_learning_curves({"x": empty}, "t", tmp_path / "x.gif")


def test_dvc_plot_specs_render_to_svg_without_network() -> None:
    from cnnlab.dvcplots import render_specs

    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": [{"step": "1", "acc": "0.5", "rev": "sgd"}]},
        "mark": "line",
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "y": {"field": "acc", "type": "quantitative"},
            "color": {"field": "rev", "type": "nominal"},
        },
    }
    shown = {
        "data": {
            "plots/train/lenet-mnist/plots/metrics/val/acc.tsv": [
                {"type": "vega", "revisions": ["sgd"], "content": spec}
            ]
        },
        "errors": [{"rev": "adam", "msg": "missing"}],
    }
    svgs, page = render_specs(shown)
    assert list(svgs) == ["train_lenet-mnist_plots_metrics_val_acc.tsv.svg"]
    svg = next(iter(svgs.values()))
    assert svg.lstrip().startswith("<svg") and "<path" in svg
    assert "<script" not in page and svg in page  # inline, nothing to fetch
    assert "Not rendered" in page and "missing" in page
