"""Cross-experiment comparison without DVC: labels, the table, the GIF, offline DVC plots.

The DVC side (listing experiments, reading their files from the cache) is exercised end to
end in tests/test_experiments_e2e.py.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml
from conftest import clean_params_text
from PIL import Image
from test_experiment_page import experiments_table
from test_reporting import table_rows

from cnnlab.figures import plot_learning_curves
from cnnlab_compare import figures, reporting, stats
from cnnlab_compare.experiments import (
    Experiment,
    ExperimentError,
    flatten_params,
    list_experiments,
    run_labels,
    varying_params,
)

ROOT = Path(__file__).resolve().parents[1]


def starts_a_row(text: str, *cells: str) -> bool:
    """Some row of the pipe tables in ``text`` begins with these cells."""
    return any(row[: len(cells)] == list(cells) for row in table_rows(text))


def in_a_cell(text: str, cell: str) -> bool:
    return any(cell in row for row in table_rows(text))


def experiment(name: str, **changes: object) -> Experiment:
    params = yaml.safe_load(clean_params_text())
    for key, value in changes.items():
        *path, last = key.split("__")
        target = params
        for part in path:
            target = target[part]
        target[last] = value
    return Experiment(name=name, rev=f"{name:0<40}", timestamp="", params=params)


def test_labels_name_what_varies_and_leave_out_run_choices() -> None:
    exps = [
        experiment("a", optimizer="sgd", lr=0.05, datasets=["digits"]),
        experiment("b", optimizer="adam", lr=0.05, datasets=["digits", "mnist"]),
        experiment("c", optimizer="adam", lr=None, model__alexnet__dropout=0.3),
    ]
    varied = varying_params(exps)
    assert varied == ["optimizer", "lr", "model.alexnet.dropout"]
    assert run_labels(exps, varied)[0] == {
        "a": "optimizer=sgd, lr=0.05, model.alexnet.dropout=0.5",
        "b": "optimizer=adam, lr=0.05, model.alexnet.dropout=0.5",
        "c": "optimizer=adam, lr=null, model.alexnet.dropout=0.3",
    }


def test_identical_params_are_told_apart_by_name() -> None:
    exps = [experiment("first"), experiment("again")]
    assert varying_params(exps) == []
    assert run_labels(exps, [])[0] == {"first": "first", "again": "again"}
    exps = [experiment("x", optimizer="sgd"), experiment("y", optimizer="sgd"), experiment("z")]
    labels = run_labels(exps, varying_params(exps))[0]
    assert labels == {"x": "x: optimizer=sgd", "y": "y: optimizer=sgd", "z": "z: optimizer=adam"}


def test_not_a_dvc_repository_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="is not inside a DVC repository"):
        list_experiments(tmp_path)


def run_metrics(
    model: str, dataset: str, acc: float, diverged: bool = False, status: str | None = None
) -> dict:
    """A run's record (cnnlab.record, as evaluate writes it) and its training time."""
    classes = [str(c) for c in range(10)]
    return {
        "model": model,
        "dataset": dataset,
        "model_title": model,
        "dataset_title": dataset,
        "status": status or ("diverged" if diverged else "ok"),
        "test_acc": acc,
        "test_top5": 0.99,
        "test_loss": 0.3,
        "best_val_acc": acc + 0.001,
        "best_epoch": 2,
        "final_val_acc": acc - 0.002,
        "epochs": 3,
        "epochs_completed": 3,
        "train_seconds": 12.5,
        "diverged": diverged,
        "diverged_epoch": 1 if diverged else None,
        "params": 61706,
        "macs": 429456,
        "test_images": 100,
        "recipe": {},
        "classes": classes,
        "confusion": None,
        "per_class_acc": None,
        "test_predictions": None,
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
    rows = table_rows(text)
    assert ["Experiment", "MNIST LeNet", "MNIST AlexNet"] in rows
    assert ["optimizer=sgd", "90.12", "95.00"] in rows
    assert ["optimizer=adam", "98.00", "diverged at epoch 1"] in rows
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
    from cnnlab_compare.plots import render_specs

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
    svgs, page = render_specs(shown, ["sgd"])
    assert list(svgs) == ["train_lenet-mnist_plots_metrics_val_acc.tsv.svg"]
    svg = next(iter(svgs.values()))
    assert svg.lstrip().startswith("<svg") and "<path" in svg
    assert "<script" not in page and svg in page  # inline, nothing to fetch
    assert "Not rendered" in page and "revision &#x27;adam&#x27;: error: missing" in page


def test_what_dvc_could_not_load_is_one_sentence_each() -> None:
    """DVC's error records and a revision DVC left out of its JSON altogether (a directory
    of curves whose listing is not in the cache): which revision, which file, why; never a
    Python repr."""
    from cnnlab_compare.plots import not_rendered

    acc = "plots/train/lenet-digits/plots/metrics/val/acc.tsv"
    shown = {
        "errors": [
            {
                "name": acc,
                "rev": "main",
                "source": acc,
                "type": "FileNotFoundError",
                "msg": f"[Errno 2] No storage files available: '{acc}'",
            },
            {"name": "plots/eval/x/classes.json", "rev": "sgd", "type": "FileNotFoundError",
             "msg": "[Errno 2] No such file or directory"},
            {"rev": "old", "type": "YAMLFileCorruptedError", "msg": "unable to read dvc.yaml"},
        ],
        "data": {acc: [{"type": "vega", "revisions": ["sgd"], "content": {}}]},
    }  # fmt: skip
    assert not_rendered(shown, ["main", "sgd", "old", "mom"]) == [
        f"revision 'main', {acc}: not in this machine's DVC cache; "
        "`dvc exp pull <remote> main` fetches an experiment's, `dvc pull` a commit's",
        "revision 'sgd', plots/eval/x/classes.json: no such file in that revision",
        "revision 'old': YAMLFileCorruptedError: unable to read dvc.yaml",
        "revision 'mom': DVC found none of its plots: it has none, or its outputs are not in "
        "this machine's DVC cache; `dvc exp pull <remote> mom` fetches an experiment's, "
        "`dvc pull` a commit's",
    ]
    assert not_rendered({}, ["workspace"]) == [
        "the workspace: DVC found none of its plots: it has none, or its outputs are not in "
        "this machine's DVC cache; `dvc repro` makes them, `dvc pull` fetches them"
    ]


# --------------------------------------------------------------------------------------------
# seeds, intervals and the tuned choice (cnnlab_compare.stats)


def lenet_run(test: float | None, val: float | None = None, diverged: bool = False) -> dict:
    """LeNet-on-MNIST metrics; ``test=None`` with ``diverged`` is a diverged run, without it a
    failed one (no metrics file: the comparison passes ``failed``)."""
    if test is None and not diverged:
        return {"model": "lenet", "dataset": "mnist", "failed": True}
    return {
        **run_metrics("lenet", "mnist", test if test is not None else 0.1, diverged=diverged),
        "best_val_acc": val if val is not None else (test or 0.1) + 0.001,
    }


def sweep(specs: list[tuple[str, dict, dict]], tune: str | None = None) -> tuple:
    """The comparison's per-experiment table of these experiments, as the stage builds it:
    (name, param changes, LeNet-on-MNIST metrics) each; returns (table, varied)."""
    exps = [experiment(name, datasets=["mnist"], models=["lenet"], **p) for name, p, _ in specs]
    varied = varying_params(exps)
    labels = run_labels(exps, varied)[0]
    rows = [
        {
            "experiment": exp.name,
            "rev": exp.rev,
            "label": labels[exp.name],
            "params": flatten_params(exp.params),
            "run": run,
        }
        for exp, (_, _, run) in zip(exps, specs, strict=True)
    ]
    columns = [*varied, *([tune] if tune and tune not in varied else [])]
    return reporting.experiment_table(rows, columns), varied


def test_experiments_that_differ_only_in_seed_are_one_configuration() -> None:
    table, varied = sweep(
        [
            ("sgd-1", {"optimizer": "sgd", "seed": 1}, lenet_run(0.90)),
            ("adam-1", {"optimizer": "adam", "seed": 1}, lenet_run(0.97)),
            ("sgd-2", {"optimizer": "sgd", "seed": 2}, lenet_run(0.92)),
            ("sgd-bs", {"optimizer": "sgd", "seed": 3, "batch_size": 64}, lenet_run(0.93)),
        ]
    )
    assert varied == ["seed", "batch_size", "optimizer"]
    by = stats.group_columns(varied)
    groups = stats.group_table(table, by)
    # seeds pooled; a different batch size or optimizer is another configuration
    assert groups[["group", "n", "experiments", "seeds"]].values.tolist() == [
        ["batch_size=32, optimizer=sgd", 2, ["sgd-1", "sgd-2"], ["1", "2"]],
        ["batch_size=32, optimizer=adam", 1, ["adam-1"], ["1"]],
        ["batch_size=64, optimizer=sgd", 1, ["sgd-bs"], ["3"]],
    ]
    assert groups["test_acc_mean_pct"].tolist() == [91.0, 97.0, 93.0]
    # one seed has no spread and no interval, and the page says so
    assert np.isnan(groups["test_acc_sd_pct"].iloc[1])
    assert np.isnan(groups["test_acc_ci_low_pct"].iloc[1])
    text = reporting.group_markdown(groups)
    assert starts_a_row(
        text, "batch_size=32, optimizer=adam", "MNIST", "LeNet", "1", "97.00", "–",
        "n=1: no interval",
    )  # fmt: skip


def test_equal_numbers_are_one_setting_whatever_their_type() -> None:
    """`-S lr=1` writes an int, adadelta's row holds `lr: 1.0`: training reads one value, so
    they are one configuration (not two that differ in lr) and the row's default."""
    assert varying_params([experiment("a", lr=1), experiment("b", lr=1.0)]) == []
    specs = [
        (f"{lr}-{seed}", {"optimizer": "adadelta", "lr": lr, "seed": seed},
         lenet_run(acc + seed / 1000, val=acc))
        for lr, acc, seeds in ((1, 0.97, (1, 2)), (0.1, 0.9, (1, 2)), (1.0, 0.97, (3, 4)))
        for seed in seeds
    ]  # fmt: skip
    table, varied = sweep(specs, tune="lr")
    by = stats.group_columns(varied)
    groups = stats.group_table(table, by)
    assert groups[["group", "n", "seeds"]].values.tolist() == [
        ["lr=1", 4, ["1", "2", "3", "4"]],
        ["lr=0.1", 2, ["1", "2"]],
    ]
    (pair,) = stats.difference_table(table, by).to_dict("records")
    assert (pair["a"], pair["b"]) == ("lr=1", "lr=0.1")
    defaults = dict.fromkeys(table["experiment"], "1.0")  # the row's lr, as the CLI reads it
    (tuned,) = stats.tuned_table(table, varied, "lr", defaults).to_dict("records")
    assert (tuned["lr"], tuned["is_default"]) == ("1", True)
    assert tuned["candidates"] == "1 (default), 0.1"
    assert tuned["gain_verdict"] == "the default was the best by validation"


def test_a_default_chosen_in_its_second_spelling_is_no_gain_over_itself() -> None:
    """lr=null and lr=0.001 are both Adam's default: the better of the two by validation is
    "the default was the best", not a tuned value compared with the default."""
    specs = [
        (f"{lr}-{seed}", {"optimizer": "adam", "lr": lr, "seed": seed},
         lenet_run(0.97 + seed / 1000, val=val + seed / 1000))
        for lr, val in ((None, 0.975), (0.001, 0.977), (0.003, 0.974))
        for seed in (1, 2)
    ]  # fmt: skip
    table, varied = sweep(specs, tune="lr")
    defaults = dict.fromkeys(table["experiment"], "0.001")
    (row,) = stats.tuned_table(table, varied, "lr", defaults).to_dict("records")
    assert (row["lr"], row["is_default"], row["default_lr"]) == ("0.001", True, "0.001")
    assert row["gain_verdict"] == "the default was the best by validation"
    assert pd.isna(row["gain_points"])


def test_mean_sd_and_interval_are_students_t() -> None:
    values = [0.9, 0.92, 0.94]
    s = stats.summarize(values)
    assert (s.n, s.mean, s.sd) == (3, pytest.approx(0.92), pytest.approx(0.02))
    half = scipy.stats.t.ppf(0.975, 2) * 0.02 / np.sqrt(3)
    assert half == pytest.approx(0.0496826, abs=1e-6)
    assert (s.low, s.high) == (pytest.approx(0.92 - half), pytest.approx(0.92 + half))
    low, high = scipy.stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy.stats.sem(values))
    assert (s.low, s.high) == (pytest.approx(low), pytest.approx(high))
    one = stats.summarize([0.9])
    assert one.n == 1 and one.mean == 0.9 and np.isnan(one.sd) and np.isnan(one.low)
    # in the table, in percent: 92.00 ± 4.97
    table, varied = sweep(
        [(f"s{i}", {"seed": i}, lenet_run(v)) for i, v in enumerate(values, start=1)]
    )
    (row,) = stats.group_table(table, stats.group_columns(varied)).to_dict("records")
    assert row["group"] == "every experiment" and row["n"] == 3
    assert row["test_acc_mean_pct"] == pytest.approx(92.0)
    assert row["test_acc_sd_pct"] == pytest.approx(2.0)
    assert row["test_acc_ci95_pct"] == pytest.approx(half * 100, abs=1e-4)


def test_welch_difference_interval() -> None:
    a, b = [0.90, 0.92, 0.94], [0.88, 0.89, 0.93, 0.86]
    d = stats.welch_difference(a, b)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)  # Welch-Satterthwaite
    half = scipy.stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    diff = np.mean(a) - np.mean(b)
    assert d.diff == pytest.approx(diff) and d.df == pytest.approx(df)
    assert (d.low, d.high) == (pytest.approx(diff - half), pytest.approx(diff + half))
    assert d.includes_zero
    assert stats.verdict(d, "A", "B") == "not distinguishable with n=3 and n=4 seeds"
    apart = stats.welch_difference([0.97, 0.975, 0.98], [0.90, 0.91, 0.905])
    assert apart.low > 0 and stats.verdict(apart, "adam", "sgd") == "adam higher"
    assert stats.verdict(stats.welch_difference([0.9], [0.8, 0.85]), "A", "B").startswith(
        "no interval: n=1 and n=2"
    )


def test_differences_between_configurations_of_a_run() -> None:
    table, varied = sweep(
        [
            ("a1", {"optimizer": "sgd", "seed": 1}, lenet_run(0.90)),
            ("a2", {"optimizer": "sgd", "seed": 2}, lenet_run(0.92)),
            ("b1", {"optimizer": "adam", "seed": 1}, lenet_run(0.91)),
            ("b2", {"optimizer": "adam", "seed": 2}, lenet_run(0.915)),
        ]
    )
    diffs = stats.difference_table(table, stats.group_columns(varied))
    (row,) = diffs.to_dict("records")
    expected = scipy.stats.ttest_ind([90, 92], [91, 91.5], equal_var=False)
    interval = expected.confidence_interval(0.95)
    assert (row["a"], row["b"], row["differs_in"]) == (
        "optimizer=sgd",
        "optimizer=adam",
        "optimizer",
    )
    assert row["diff_points"] == pytest.approx(-0.25)
    assert row["ci_low_points"] == pytest.approx(interval.low, abs=1e-4)
    assert row["verdict"] == "not distinguishable with n=2 seeds"
    text = reporting.difference_markdown(diffs)
    (pair,) = (row for row in table_rows(text) if row[:2] == ["MNIST", "LeNet"])
    assert pair[:5] == ["MNIST", "LeNet", "optimizer=sgd", "optimizer=adam", "-0.25"]
    assert pair[-1] == "not distinguishable with n=2 seeds"


def test_a_diverged_or_failed_seed_is_counted_and_left_out_of_the_mean() -> None:
    table, varied = sweep(
        [
            ("s1", {"optimizer": "sgd", "seed": 1}, lenet_run(0.90)),
            ("s2", {"optimizer": "sgd", "seed": 2}, lenet_run(0.92)),
            ("s3", {"optimizer": "sgd", "seed": 3}, lenet_run(None, diverged=True)),
            ("s4", {"optimizer": "sgd", "seed": 4}, lenet_run(None)),
            ("n1", {"optimizer": "nag", "seed": 1}, lenet_run(None, diverged=True)),
            ("n2", {"optimizer": "nag", "seed": 2}, lenet_run(None, diverged=True)),
        ]
    )
    assert (
        table["status"].tolist()
        == ["ok", "ok", "diverged at epoch 1", "failed"] + ["diverged at epoch 1"] * 2
    )
    groups = stats.group_table(table, stats.group_columns(varied)).set_index("group")
    sgd = groups.loc["optimizer=sgd"]
    assert (sgd["n"], sgd["n_diverged"], sgd["n_failed"]) == (2, 1, 1)
    assert sgd["test_acc_mean_pct"] == pytest.approx(91.0)  # 0.90 and 0.92 only
    assert sgd["status"] == "1 diverged and 1 failed of 4, not in the mean"
    nag = groups.loc["optimizer=nag"]
    assert nag["n"] == 0 and np.isnan(nag["test_acc_mean_pct"])
    assert nag["status"] == "no result: 2 diverged of 2"
    text = reporting.group_markdown(groups.reset_index())
    assert in_a_cell(text, "1 diverged and 1 failed of 4, not in the mean")
    (nag,) = (row for row in table_rows(text) if row[0] == "optimizer=nag")
    assert nag[:9] == ["optimizer=nag", "MNIST", "LeNet", "0", "–", "–", "–", "–", "1 2"]
    assert nag[9].startswith("no result: 2 diverged")
    # the failed experiment is a row of the per-experiment page too
    page = reporting.experiment_markdown(table, varied, [])
    assert ["seed=4, optimizer=sgd", "failed"] in table_rows(page)


def test_seeds_that_all_agree_give_no_interval_and_no_verdict() -> None:
    """Digits has 360 test images: two seeds at 355 right is common. Their spread is not
    measured, so no zero-width interval, and no "higher" that rests on the other side's
    spread alone."""
    table, varied = sweep(
        [
            ("adam-1", {"seed": 1}, lenet_run(355 / 360)),
            ("adam-2", {"seed": 2}, lenet_run(355 / 360)),
            *[(f"sgd-{s}", {"optimizer": "sgd", "seed": s}, lenet_run((350 + s) / 360))
              for s in (1, 2, 3)],
        ]
    )  # fmt: skip
    by = stats.group_columns(varied)
    groups = stats.group_table(table, by)
    adam = groups.to_dict("records")[0]
    assert (adam["n"], adam["test_acc_sd_pct"]) == (2, 0.0)
    assert np.isnan(adam["test_acc_ci_low_pct"]) and np.isnan(adam["test_acc_ci95_pct"])
    assert in_a_cell(reporting.group_markdown(groups), "n=2, every seed the same: no interval")
    (pair,) = stats.difference_table(table, by).to_dict("records")
    assert np.isnan(pair["ci_low_points"])
    assert pair["verdict"] == (
        "no interval: a side's seeds all gave the same accuracy (no spread measured)"
    )


def test_the_tuned_lr_is_chosen_on_validation_never_on_test() -> None:
    """lr 0.01 has the best validation accuracy, lr 0.03 the best test accuracy: 0.01 is
    the choice, and the test accuracy reported is lr 0.01's."""
    specs = []
    for seed in (1, 2):
        specs += [
            (f"sgd-003-{seed}", {"optimizer": "sgd", "lr": 0.003, "seed": seed},
             lenet_run(0.80 + seed / 100, val=0.90)),
            (f"sgd-01-{seed}", {"optimizer": "sgd", "lr": 0.01, "seed": seed},
             lenet_run(0.90 + seed / 100, val=0.97 + seed / 1000)),
            (f"sgd-03-{seed}", {"optimizer": "sgd", "lr": 0.03, "seed": seed},
             lenet_run(0.95 + seed / 100, val=0.95)),
            # the best validation of all, but a seed diverged: not a candidate
            (f"sgd-1-{seed}", {"optimizer": "sgd", "lr": 0.1, "seed": seed},
             lenet_run(0.99, val=0.99, diverged=seed == 2)),
            (f"adam-{seed}", {"optimizer": "adam", "lr": 0.003, "seed": seed},
             lenet_run(0.93 + seed / 100, val=0.96)),
        ]  # fmt: skip
    table, varied = sweep(specs, tune="lr")
    defaults = {name: "0.01" if name.startswith("sgd") else "0.001" for name, _, _ in specs}
    tuned = stats.tuned_table(table, varied, "lr", defaults).set_index("family")
    sgd = tuned.loc["optimizer=sgd"]
    assert (sgd["lr"], sgd["is_default"]) == ("0.01", True)
    assert sgd["choice"] == "optimizer=sgd, lr=0.01 (default)"
    assert sgd["best_val_acc_mean_pct"] == pytest.approx(97.15)
    assert sgd["test_acc_mean_pct"] == pytest.approx(91.5)  # not lr 0.03's 96.5
    assert sgd["n"] == 2
    assert sgd["test_acc_ci95_pct"] == pytest.approx(
        scipy.stats.t.ppf(0.975, 1) * scipy.stats.sem([91, 92]), abs=1e-4
    )
    assert sgd["gain_verdict"] == "the default was the best by validation"
    assert sgd["candidates"] == (
        "0.003, 0.01 (default), 0.03, 0.1 (not a candidate: 1 of 2 diverged)"
    )
    adam = tuned.loc["optimizer=adam"]
    assert adam["lr"] == "0.003" and pd.isna(adam["default_n"])  # its default was not run
    diffs = stats.tuned_differences(table, tuned.reset_index())
    (pair,) = diffs.to_dict("records")
    assert (pair["a"], pair["b"]) == (
        "optimizer=sgd, lr=0.01 (default)",
        "optimizer=adam, lr=0.003",
    )
    assert pair["diff_points"] == pytest.approx(91.5 - 94.5)
    text = reporting.tuned_markdown(tuned.reset_index(), "lr")
    assert starts_a_row(
        text, "optimizer=sgd", "MNIST", "LeNet", "0.01 (default)", "97.15", "91.50 ± 6.35 (n=2)"
    )
    assert starts_a_row(
        text, "optimizer=adam", "MNIST", "LeNet", "0.003", "96.00", "94.50 ± 6.35 (n=2)",
        "not run",
    )  # fmt: skip


def test_a_tuned_lr_is_compared_with_the_default_one() -> None:
    """lr=null is the optimizer's row (Adam's 0.001): the untuned result, next to the pick."""
    specs = []
    for lr, acc in ((None, 0.95), (0.003, 0.97)):
        for seed in (1, 2, 3):
            params = {"optimizer": "adam", "lr": lr, "seed": seed}
            specs.append((f"{lr}-{seed}", params, lenet_run(acc + seed / 1000, val=acc)))
    table, varied = sweep(specs, tune="lr")
    defaults = dict.fromkeys(table["experiment"], "0.001")
    (row,) = stats.tuned_table(table, varied, "lr", defaults).to_dict("records")
    assert (row["lr"], row["is_default"], row["default_lr"], row["default_n"]) == (
        "0.003",
        False,
        "null",
        3,
    )
    assert row["default_test_acc_mean_pct"] == pytest.approx(95.2)
    assert row["gain_points"] == pytest.approx(2.0)
    assert row["gain_ci_low_points"] > 0 and row["gain_verdict"] == "tuned higher"


def interval(label: str, mean: float, low=float("nan"), high=float("nan"), values=(), note=""):
    """A row of the interval chart, as cnnlab_compare.stats.interval_rows gives it."""
    return {"label": label, "mean": mean, "low": low, "high": high, "values": values, "note": note}


def test_mean_curves_with_a_band_and_the_interval_chart(tmp_path: Path) -> None:
    h1, h2 = history(0), history(1)
    mean, low, high = stats.mean_history([h1, h2])
    assert np.allclose(mean["val_acc"], (h1["val_acc"] + h2["val_acc"]) / 2)
    assert (low["val_acc"] <= mean["val_acc"]).all() and (mean["val_acc"] <= high["val_acc"]).all()
    plain, banded = tmp_path / "plain.png", tmp_path / "band.png"
    plot_learning_curves({"sgd (mean of 2)": mean}, "t", plain)
    plot_learning_curves(
        {"sgd (mean of 2)": mean}, "t", banded, bands={"sgd (mean of 2)": (low, high)}
    )
    assert Image.open(banded).size == (1200, 900)
    assert plain.read_bytes() != banded.read_bytes()
    chart = tmp_path / "accuracy.png"
    figures.plot_intervals(
        [
            interval("optimizer=sgd", 91.0, 86.0, 96.0, (90.0, 92.0), "(n=2)"),
            interval("optimizer=adam", 97.0, note="(n=1)"),
            interval("optimizer=nag", float("nan"), note="no result: 2 diverged of 2"),
        ],
        "LeNet on MNIST: test accuracy, 95% CI",
        chart,
    )
    assert Image.open(chart).size[0] == 1200


def fake_sweep(
    monkeypatch: pytest.MonkeyPatch,
    specs: list[tuple[str, dict, dict]],
    histories: list[pd.DataFrame] | None = None,
) -> None:
    """Make the comparison script see these experiments (name, param changes, LeNet-on-MNIST
    metrics), as if `dvc exp show` and the DVC cache held them; each experiment's history is
    ``histories[i]`` (default: a history drawn with seed i)."""
    import cnnlab_compare.experiments as module

    exps = [
        experiment(name, datasets=["mnist"], models=["lenet"], **changes)
        for name, changes, _ in specs
    ]
    exps = [
        replace(e, timestamp=str(i), failed=bool(run.get("failed")))
        for i, (e, (_, _, run)) in enumerate(zip(exps, specs, strict=True))
    ]
    runs = [
        module.ExperimentRun(e, "lenet", "mnist", run, histories[i] if histories else history(i))
        for i, (e, (_, _, run)) in enumerate(zip(exps, specs, strict=True))
        if not e.failed
    ]
    monkeypatch.setattr(module, "list_experiments", lambda *a, **k: exps)
    monkeypatch.setattr(module, "collect_runs", lambda *a, **k: runs)


def compare_main():
    from cnnlab_compare.cli import main

    return main


def test_the_comparison_of_seeds_writes_groups_differences_and_the_tuned_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [
        (f"{opt}-{lr}-{seed}", {"optimizer": opt, "lr": lr, "seed": seed},
         lenet_run(acc + seed / 1000, val=val) if seed < 3 or opt == "adam" else lenet_run(None))
        for opt, lr, acc, val in (
            ("sgd", 0.01, 0.90, 0.95), ("sgd", 0.03, 0.93, 0.96), ("adam", 0.001, 0.97, 0.97)
        )
        for seed in (1, 2, 3)
    ]  # fmt: skip
    fake_sweep(monkeypatch, specs)
    out = tmp_path / "out"
    compare_main()(["--out", str(out), "--tune", "lr"])
    said = capsys.readouterr().out
    assert "compared 9 experiments" in said and "groups.csv" in said and "tuned.csv" in said
    assert (out / ".written-by-cnnlab").is_file()  # --out may replace it next time
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "accuracy-lenet-mnist.png",
        "curves-lenet-mnist-panels.png",  # the made-up histories lie within 0.5 points
        "curves-lenet-mnist.gif",
        "curves-lenet-mnist.png",
        "differences.csv",
        "experiments.csv",
        "experiments.md",
        "groups.csv",
        "index.html",
        "tuned-differences.csv",
        "tuned-lenet-mnist.png",
        "tuned.csv",
    ]
    groups = pd.read_csv(out / "groups.csv")
    assert groups[["group", "n", "n_failed"]].values.tolist() == [
        ["optimizer=sgd, lr=0.01", 2, 1],
        ["optimizer=sgd, lr=0.03", 2, 1],
        ["optimizer=adam, lr=0.001", 3, 0],
    ]
    tuned = pd.read_csv(out / "tuned.csv").set_index("family")
    assert tuned.loc["optimizer=sgd", "lr"] == 0.03  # the better validation mean
    page = (out / "experiments.md").read_text()
    for heading in ("Test accuracy over seeds", "Differences between configurations",
                    "Tuned `lr`", "Differences between tuned families", "Every run"):  # fmt: skip
        assert f"## {heading}" in page
    assert in_a_cell(page, "1 failed of 3, not in the mean")
    # the HTML page: every experiment a row (the failed ones too), the same tables
    html = (out / "index.html").read_text()
    headers, rows = experiments_table(html)
    assert len(rows) == 9 and sum(row[-2] == "lenet-mnist: failed" for row in rows) == 2
    assert "LeNet on MNIST: mean over seeds [95% CI]" in headers
    for title in ("Test accuracy over seeds (groups.csv)", "The tuned lr per family (tuned.csv)",
                  "Differences between tuned families (tuned-differences.csv)"):  # fmt: skip
        assert f"<h2>{title}</h2>" in html


def test_without_repeats_the_comparison_is_one_line_per_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sweep(
        monkeypatch,
        [
            ("sgd", {"optimizer": "sgd"}, lenet_run(0.9)),
            ("adam", {"optimizer": "adam"}, lenet_run(0.95)),
        ],
    )
    out = tmp_path / "out"
    compare_main()(["--out", str(out)])
    assert (out / ".written-by-cnnlab").is_file()  # --out may replace it next time
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "curves-lenet-mnist.gif",
        "curves-lenet-mnist.png",
        "experiments.csv",
        "experiments.md",
        "index.html",
    ]
    assert "over seeds" not in (out / "experiments.md").read_text()
    _, rows = experiments_table((out / "index.html").read_text())
    assert [row[:2] for row in rows] == [["sgd", "sgd"], ["adam", "adam"]]


def test_failed_queued_runs_are_listed_for_counting_and_unfinished_ones_skipped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import cnnlab_compare.experiments as module

    def entry(name: str, state: str | None, seed: int) -> dict:
        params = {**yaml.safe_load(clean_params_text()), "seed": seed}
        data = {"timestamp": f"2030-01-0{seed}", "params": {"params.yaml": {"data": params}}}
        executor = None if state is None else {"state": state}
        return {"name": name, "executor": executor, "revs": [{"rev": f"{name:0<40}", "data": data}]}

    shown = [
        {"rev": "workspace"},
        {
            "rev": "b" * 40,
            "name": "main",
            "data": {"params": {}},
            "experiments": [
                entry("ok", None, 1),
                entry("broke", "failed", 2),
                entry("waiting", "queued", 3),
            ],
        },
    ]
    monkeypatch.setattr(module, "project_root", lambda root: root)
    monkeypatch.setattr(module, "dvc_json", lambda args, root: shown)
    listed = list_experiments(Path("."))
    assert [(e.name, e.failed, e.params["seed"]) for e in listed] == [
        ("ok", False, 1),
        ("broke", True, 2),
    ]
    assert capsys.readouterr().err == "note: skipping experiment 'waiting' (queued)\n"
    with pytest.raises(ExperimentError, match="experiment 'waiting' is queued, not finished"):
        list_experiments(Path("."), ["waiting"])
    # named twice, by name and by revision (or its start): compared once, not counted twice
    picked = list_experiments(Path("."), ["ok", "broke", "ok000", "ok"])
    assert [e.name for e in picked] == ["ok", "broke"]


def test_a_backtick_in_a_name_stays_in_its_code_span() -> None:
    """Git allows a backtick in a ref name: the lists of experiments.md show the whole name
    as code, never a span that ends early and lets the rest (here <b>) through as HTML."""
    from markdown_it import MarkdownIt

    names = ["x`y<b>z", "`q"]
    table, varied = sweep([(name, {}, lenet_run(0.1, val=0.1)) for name in names])
    table["status"], table["run_id"] = "did not learn", "k" * 12  # listed twice each
    html = MarkdownIt("commonmark").render(reporting.experiment_markdown(table, varied, []))
    assert html.count("<code>x`y&lt;b&gt;z</code>") == 2
    assert html.count("<code>`q</code>") == 2
    assert "<b>" not in html


def test_hostile_experiment_names_stay_text_in_the_page_and_in_a_spreadsheet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names DVC accepts: the page shows them (no script runs, no link appears) and a
    spreadsheet opening experiments.csv reads them as text, not formulas."""
    import csv

    from markdown_it import MarkdownIt

    script, formula = "<script>alert(1)<", '=HYPERLINK("http://x.example","y")'
    fake_sweep(
        monkeypatch, [(script, {}, lenet_run(0.9)), (formula, {}, lenet_run(0.95))]
    )  # same params: the labels are the names
    out = tmp_path / "out"
    compare_main()(["--out", str(out)])
    html = MarkdownIt("commonmark").enable("table").render((out / "experiments.md").read_text())
    assert "<script" not in html and "<a " not in html
    assert ">&lt;script&gt;alert(1)&lt;</td>" in html  # what a browser shows: the name
    assert ">=HYPERLINK(&quot;http://x.example&quot;,&quot;y&quot;)</td>" in html
    rows = list(csv.DictReader((out / "experiments.csv").open()))
    assert {r["experiment"] for r in rows} == {script, "'" + formula}
    assert {r["label"] for r in rows} == {script, "'" + formula}


def test_the_summary_line_names_each_experiment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two experiments of the same params: their labels carry their names to tell them apart,
    and the line printed at the end does not put the name in front a second time."""
    specs = [(name, {"optimizer": "sgd"}, lenet_run(0.9)) for name in ("tanh", "again")]
    specs.append(("adam", {"optimizer": "adam"}, lenet_run(0.95)))
    fake_sweep(monkeypatch, specs)
    compare_main()(["--out", str(tmp_path / "out")])
    said = capsys.readouterr().out
    assert "compared 3 experiments (tanh: optimizer=sgd; again: optimizer=sgd; adam: " in said
    assert "tanh: tanh" not in said
