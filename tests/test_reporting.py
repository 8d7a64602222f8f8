"""Fast tests of the comparison tables, summary JSON, Markdown report and figures.

The figures are DVC outputs: byte-for-byte stability is the property that matters, so it is
tested directly (two renders, same bytes), alongside the awkward inputs a real sweep produces
(a diverged run with NaN losses, a one-epoch run).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest

import cnnlab.files
from cnnlab import figures, reporting

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(model: str, dataset: str, acc: float | None, **extra: object) -> dict:
    run = {
        "model": model,
        "dataset": dataset,
        "test_acc": acc,
        "test_top5": 0.9998,
        "test_loss": 0.041,
        "best_val_acc": 0.985,
        "best_epoch": 3,
        "final_val_acc": 0.984,
        "epochs": 3,
        "epochs_completed": 3,
        "params": 61706 if model == "lenet" else 58_299_082,
        "macs": 429_128 if model == "lenet" else 170_000_000,
        "train_seconds": 12.0 if model == "lenet" else 96.0,
        "train_images_per_second": 13000.0,
        "diverged": False,
        "diverged_epoch": None,
        "per_class_acc": {"0": 0.99, "1": 0.98},
    }
    run.update(extra)
    return run


@pytest.fixture
def runs() -> list[dict]:
    # Deliberately out of order: datasets appear mnist first, models lenet first.
    return [
        make_run("lenet", "mnist", 0.9871),
        make_run("lenet", "cifar10", 0.6123),
        make_run("alexnet", "mnist", 0.9921),
        make_run(
            "alexnet",
            "cifar10",
            float("nan"),
            diverged=True,
            diverged_epoch=2,
            best_val_acc=0.1,
            test_top5=None,
            test_loss=float("inf"),
        ),
        make_run("alexnet", "digits", 0.97),  # no LeNet partner: no comparison row
    ]


def table_rows(text: str) -> list[list[str]]:
    r"""The cells of every row of the pipe tables in ``text``, header rows included and
    alignment rows left out, without the padding pandas' writer adds (an escaped ``\|``
    stays inside its cell)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            if not all(cell and set(cell) <= set(":-") for cell in cells):
                rows.append(cells)
    return rows


# --------------------------------------------------------------------------------------------
# run_table: the one table of the compare stage


def test_run_table_rows_order_and_units(runs: list[dict]) -> None:
    table = reporting.run_table(runs)
    assert list(zip(table["dataset"], table["model"], strict=True)) == [
        ("mnist", "lenet"),
        ("mnist", "alexnet"),
        ("cifar10", "lenet"),
        ("cifar10", "alexnet"),
        ("digits", "alexnet"),
    ]
    row = table.iloc[0]
    # the evaluate stage's units (fractions), which summary.json keeps; Markdown shows percent
    assert row["test_acc"] == 0.9871
    assert row["test_top5"] == 0.9998
    assert row["best_val_acc"] == 0.985
    assert row["final_val_acc"] == 0.984
    assert row["params"] == 61706
    assert row["macs"] == 429_128
    assert (row["model_title"], row["dataset_title"]) == ("LeNet", "MNIST")
    # Measured times differ from run to run: kept out of the reproducible report (timings/).
    assert "train_seconds" not in table.columns and "images_per_second" not in table.columns
    assert row["status"] == "ok"
    assert str(table["params"].dtype) == "Int64"


def test_run_table_blanks_diverged_accuracies(runs: list[dict]) -> None:
    table = reporting.run_table(runs).set_index(["dataset", "model"])
    row = table.loc[("cifar10", "alexnet")]
    assert row["status"] == "diverged at epoch 2"
    for column in ("best_val_acc", "test_acc", "test_top5", "final_val_acc", "test_loss"):
        assert math.isnan(row[column]), column
    assert row["params"] == 58_299_082  # the model is still the model


def test_duplicate_run_is_an_error() -> None:
    with pytest.raises(ValueError, match="lenet-mnist"):
        reporting.run_table([make_run("lenet", "mnist", 0.9), make_run("lenet", "mnist", 0.8)])


def test_empty_runs_give_empty_outputs() -> None:
    table = reporting.run_table([])
    assert table.empty
    assert reporting.comparison(table, "lenet", "alexnet").empty
    assert reporting.summary_json(table, "lenet", "alexnet") == {"runs": {}, "comparison": {}}
    assert "_No runs._" in reporting.report_markdown(table, {}, "lenet", "alexnet")


# --------------------------------------------------------------------------------------------
# comparison: the run table's baseline vs challenger per dataset


def compared(runs: list[dict], baseline: str = "lenet", challenger: str = "alexnet"):
    return reporting.comparison(reporting.run_table(runs), baseline, challenger)


def test_comparison_gain_in_points_and_ratios(runs: list[dict]) -> None:
    table = compared(runs)
    assert list(table["dataset"]) == ["mnist", "cifar10"]  # digits has no LeNet run
    mnist = table.set_index("dataset").loc["mnist"]
    assert mnist["lenet_test_acc"] == pytest.approx(0.9871)
    assert mnist["alexnet_test_acc"] == pytest.approx(0.9921)
    assert mnist["gain_points"] == pytest.approx(0.5)
    assert mnist["lenet_params"] == 61706
    assert mnist["alexnet_params"] == 58_299_082
    assert mnist["params_ratio"] == pytest.approx(58_299_082 / 61706, abs=1e-4)
    assert mnist["macs_ratio"] == pytest.approx(170_000_000 / 429_128, abs=1e-4)
    assert "train_time_ratio" not in mnist.index


def test_comparison_with_diverged_challenger_has_no_gain(runs: list[dict]) -> None:
    cifar = compared(runs).set_index("dataset").loc["cifar10"]
    assert math.isnan(cifar["gain_points"])
    assert math.isnan(cifar["alexnet_test_acc"])
    assert cifar["alexnet_status"] == "diverged at epoch 2"
    assert cifar["lenet_status"] == "ok"


def test_comparison_baseline_and_challenger_are_parameters(runs: list[dict]) -> None:
    table = compared(runs, baseline="alexnet", challenger="lenet")
    mnist = table.set_index("dataset").loc["mnist"]
    assert mnist["gain_points"] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="both"):
        compared(runs, baseline="lenet", challenger="lenet")


# --------------------------------------------------------------------------------------------
# summary_json


def test_summary_json_is_strict_json_and_stable(runs: list[dict]) -> None:
    table = reporting.run_table(runs)
    summary = reporting.summary_json(table, "lenet", "alexnet")
    text = json.dumps(summary, allow_nan=False)  # raises on NaN/inf
    again = reporting.summary_json(reporting.run_table(runs), "lenet", "alexnet")
    assert json.dumps(again, allow_nan=False) == text
    assert list(summary) == ["runs", "comparison"]
    assert list(summary["runs"]) == [
        "lenet-mnist",
        "alexnet-mnist",
        "lenet-cifar10",
        "alexnet-cifar10",
        "alexnet-digits",
    ]
    lenet = summary["runs"]["lenet-mnist"]
    assert lenet["test_acc"] == 0.9871  # evaluate-stage units and keys, unchanged
    assert lenet["status"] == "ok"
    assert "per_class_acc" not in lenet
    assert "model_title" not in lenet  # the titles are for the report and the figures

    diverged = summary["runs"]["alexnet-cifar10"]
    assert diverged["diverged"] is True
    assert diverged["diverged_epoch"] == 2
    assert diverged["status"] == "diverged at epoch 2"
    assert diverged["test_acc"] is None
    assert diverged["test_loss"] is None
    assert diverged["best_val_acc"] is None

    assert list(summary["comparison"]) == ["mnist", "cifar10"]
    mnist = summary["comparison"]["mnist"]
    assert (mnist["baseline"], mnist["challenger"]) == ("lenet", "alexnet")
    assert mnist["gain_points"] == pytest.approx(0.5)
    assert mnist["params_ratio"] == round(58_299_082 / 61706, 4)
    assert summary["comparison"]["cifar10"]["gain_points"] is None


def test_summary_json_converts_numpy_scalars() -> None:
    run = make_run("lenet", "mnist", np.float32(0.5), params=np.int64(10), diverged=np.bool_(0))
    table = reporting.run_table([run])
    entry = reporting.summary_json(table, "lenet", None)["runs"]["lenet-mnist"]
    json.dumps(entry, allow_nan=False)
    assert type(entry["params"]) is int
    assert entry["diverged"] is False


# --------------------------------------------------------------------------------------------
# report_markdown


def test_report_markdown_rows_and_formatting(runs: list[dict]) -> None:
    text = reporting.report_markdown(
        reporting.run_table(runs),
        {"mnist": "plots/mnist.png", "cifar10": "plots/cifar 10.png", "extra": "x.png"},
        "lenet",
        "alexnet",
    )
    assert text.startswith("# LeNet vs AlexNet\n")
    rows = table_rows(text)
    assert ["MNIST", "LeNet", "98.50", "98.71", "99.98", "98.40", "61,706", "429,128", "ok"] in rows
    diverged_row = next(row for row in rows if row[:2] == ["CIFAR-10", "AlexNet"])
    assert "diverged (epoch 2)" in diverged_row
    assert "10.00" not in diverged_row  # its best_val_acc of 0.1 is not shown as a result
    assert "58,299,082" in diverged_row

    comparison = next(row for row in rows if row[:3] == ["MNIST", "98.71", "99.21"])
    assert "+0.50" in comparison
    assert "944.8×" in comparison
    cifar = next(row for row in rows if row[:2] == ["CIFAR-10", "61.23"])
    assert "diverged (epoch 2)" in cifar and "n/a" in cifar
    assert "- **MNIST**: AlexNet 99.21%, LeNet 98.71% (+0.50 points for AlexNet)" in text
    assert "_Each run is one seed: a gain smaller than the seed-to-seed spread is no" in text

    assert "![Learning curves on MNIST](plots/mnist.png)" in text
    assert "![Learning curves on CIFAR-10](<plots/cifar 10.png>)" in text
    assert "(x.png)" in text
    assert "nan" not in text.lower()
    assert text.endswith("\n")


def test_report_markdown_escapes_what_markdown_would_not_show_as_typed() -> None:
    """A folder dataset is named by its folder: a '|' or a newline must not break the table,
    and text between two '$' must not turn into maths on GitHub."""
    name = "cost $5$ | a\\b\nc"
    table = reporting.run_table([make_run("lenet", name, 0.9), make_run("alexnet", name, 0.8)])
    text = reporting.report_markdown(table, {name: "curves.png"}, "lenet", "alexnet")
    escaped = "cost \\$5\\$ \\| a\\\\b c"
    assert [escaped, "LeNet"] == table_rows(text)[1][:2]
    assert [escaped, "90.00", "80.00"] == table_rows(text)[4][:3]
    assert "\nc" not in text  # the newline ends no row, and no heading
    assert "- **cost \\$5\\$ | a\\\\b c**" in text  # in prose a '|' is harmless
    assert "### Learning curves on cost \\$5\\$ | a\\\\b c\n" in text


def test_report_markdown_without_pairs_says_so() -> None:
    table = reporting.run_table([make_run("lenet", "mnist", 0.9)])
    text = reporting.report_markdown(table, {}, "lenet", "alexnet")
    assert "No dataset has runs of both LeNet and AlexNet" in text
    assert "## Figures" not in text


def test_report_of_one_model_compares_nothing_and_names_it() -> None:
    table = reporting.run_table([make_run("lenet5", "mnist", 0.9)])
    text = reporting.report_markdown(table, {}, baseline="lenet5", challenger=None)
    assert text.startswith("# LeNet-5 (1998)\n") and " vs " not in text
    assert reporting.summary_json(table, baseline="lenet5", challenger=None)["comparison"] == {}


def test_report_compares_the_models_it_is_given() -> None:
    runs = [make_run("lenet5", "mnist", 0.9), make_run("alexnet_bn", "mnist", 0.95)]
    table = reporting.run_table(runs)
    text = reporting.report_markdown(table, {}, baseline="lenet5", challenger="alexnet_bn")
    assert text.startswith("# LeNet-5 (1998) vs AlexNet-BN\n")
    assert "+5.00" in text
    rows = table_rows(text)
    assert [row[1] for row in rows[1:3]] == ["LeNet-5 (1998)", "AlexNet-BN"]
    assert rows[3][1:3] == ["LeNet-5 (1998) test acc (%)", "AlexNet-BN test acc (%)"]
    assert "- **MNIST**: AlexNet-BN 95.00%, LeNet-5 (1998) 90.00%" in text
    assert not {"LeNet", "AlexNet"} & {cell for row in rows for cell in row}


def test_reporting_does_not_import_matplotlib_at_module_level() -> None:
    source = Path(reporting.__file__).read_text(encoding="utf-8")
    assert "matplotlib" not in source


# --------------------------------------------------------------------------------------------
# figures


def history(epochs: int, start: float = 0.9, end: float = 0.99) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    acc = start + (end - start) * (1 - np.exp(-e / 2))
    return pd.DataFrame(
        {
            "epoch": e,
            "train_loss": 1.5 * np.exp(-e / 2) + 0.05,
            "train_acc": acc + 0.003,
            "val_loss": 1.5 * np.exp(-e / 2) + 0.08,
            "val_acc": acc,
        }
    )


def diverged_history() -> pd.DataFrame:
    h = history(4, 0.3, 0.5)
    h.loc[h["epoch"] == 2, "train_loss"] = 1e8
    h.loc[h["epoch"] >= 3, ["train_loss", "val_loss"]] = [np.nan, np.inf]
    h.loc[h["epoch"] >= 3, ["train_acc", "val_acc"]] = np.nan
    return h


def assert_png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data.endswith(b"IEND\xaeB`\x82")
    assert b"Software" not in data and b"matplotlib" not in data
    return data


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_learning_curves_png_is_byte_identical(tmp_path: Path) -> None:
    histories = {"lenet": history(5), "alexnet": history(5, 0.92, 0.995)}
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    figures.plot_learning_curves(histories, "LeNet vs AlexNet", first)
    figures.plot_learning_curves(histories, "LeNet vs AlexNet", second)
    assert assert_png(first) == assert_png(second)
    assert no_temp_files(tmp_path)


def test_learning_curves_ignore_global_rcparams(tmp_path: Path) -> None:
    histories = {"lenet": history(3)}
    figures.plot_learning_curves(histories, "t", tmp_path / "a.png")
    with mpl.rc_context({"lines.linewidth": 7, "font.size": 20, "axes.facecolor": "black"}):
        figures.plot_learning_curves(histories, "t", tmp_path / "b.png")
        assert mpl.rcParams["font.size"] == 20  # and ours did not leak out
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_learning_curves_nan_single_epoch_and_percent(tmp_path: Path) -> None:
    percent = history(3)
    percent[["train_acc", "val_acc"]] *= 100
    histories = {
        "lenet": history(1),
        "alexnet": diverged_history(),
        "adam": percent,
        "empty": history(0),
    }
    path = tmp_path / "sub" / "curves.png"  # parent is created
    figures.plot_learning_curves(histories, "awkward", path, diverged={"empty": None})
    assert_png(path)
    assert no_temp_files(path.parent)


def test_learning_curves_helpers() -> None:
    assert figures._first_nonfinite_epoch(diverged_history()) == 3
    assert figures._first_nonfinite_epoch(history(3)) is None
    logged_nan = history(3)
    logged_nan.loc[logged_nan["epoch"] == 2, "val_loss"] = np.nan  # val_acc still logged
    assert figures._first_nonfinite_epoch(logged_nan) == 2
    missing = history(3)
    missing[["val_loss", "val_acc"]] = np.nan  # a metric file never written: not divergence
    assert figures._first_nonfinite_epoch(missing) is None
    assert figures._accuracy_scale(history(3)) == 100.0
    top = figures._loss_top([np.array([1.0, 0.5, 0.4, 1e8])])
    assert top == pytest.approx(1.05)  # a blow-up does not flatten the other curves


def test_learning_curves_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        figures.plot_learning_curves({}, "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="val_acc"):
        figures.plot_learning_curves(
            {"lenet": history(2).drop(columns="val_acc")}, "t", tmp_path / "x.png"
        )
    assert not (tmp_path / "x.png").exists()


def test_confusion_matrix_png_is_byte_identical(tmp_path: Path) -> None:
    classes = ["airplane", "automobile", "bird"]
    matrix = [[50, 2, 0], [3, 40, 1], [0, 0, 0]]  # an empty row must not divide by zero
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    figures.plot_confusion_matrix(matrix, classes, "Confusion", first)
    figures.plot_confusion_matrix(matrix, classes, "Confusion", second)
    assert assert_png(first) == assert_png(second)
    assert no_temp_files(tmp_path)


def test_confusion_matrix_rejects_mismatched_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class names"):
        figures.plot_confusion_matrix([[1, 0], [0, 1]], ["a"], "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="square"):
        figures.plot_confusion_matrix([[1, 0, 0], [0, 1, 0]], ["a", "b"], "t", tmp_path / "x.png")


def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "cm.png"
    target.write_bytes(b"old")

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cnnlab.files.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        figures.plot_confusion_matrix([[1]], ["a"], "t", target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]


DOLLAR_NAMES = ["cost $\\foo$", "cost 5$ or 6$", "a \\$ b"]


def drawn_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures ``figures`` saves, kept for inspection after the PNG is written."""
    saved: list = []
    save = figures._save_png

    def keep(fig, path: Path) -> None:
        save(fig, path)
        saved.append(fig)

    monkeypatch.setattr(figures, "_save_png", keep)
    return saved


def assert_drawn_literally(fig, text, expected: str) -> None:
    """``text`` takes exactly the room of ``expected`` drawn with mathtext off: the same
    characters, not math (which drops the $ and italicises what lies between)."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    literal = Text(
        text=expected,
        fontproperties=text.get_fontproperties(),
        rotation=text.get_rotation(),
        parse_math=False,
    )
    literal.set_figure(fig)
    got, want = text.get_window_extent(renderer), literal.get_window_extent(renderer)
    assert (got.width, got.height) == pytest.approx((want.width, want.height)), expected


def test_dollar_signs_in_class_names_and_titles_are_drawn_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = drawn_figures(monkeypatch)
    matrix = [[3, 1, 0], [0, 4, 0], [1, 0, 2]]
    title = "pics $\\foo$: LeNet"
    figures.plot_confusion_matrix(matrix, DOLLAR_NAMES, title, tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png")
    (fig,) = saved
    ax = fig.axes[0]
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        for label, name in zip(labels, DOLLAR_NAMES, strict=True):
            assert_drawn_literally(fig, label, name)
    assert_drawn_literally(fig, fig._suptitle, title)


def test_dollar_signs_in_legends_and_titles_of_learning_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = drawn_figures(monkeypatch)
    histories = {name: history(3) for name in DOLLAR_NAMES}
    figures.plot_learning_curves(histories, "$\\foo$ 5$", tmp_path / "c.png")
    assert_png(tmp_path / "c.png")
    (fig,) = saved
    texts = fig.legends[0].get_texts()
    for text, name in zip(texts, DOLLAR_NAMES, strict=True):
        assert_drawn_literally(fig, text, name)
    assert_drawn_literally(fig, fig._suptitle, "$\\foo$ 5$")
    from cnnlab_compare.figures import animate_learning_curves  # cnnlab-compare's GIF

    animate_learning_curves(histories, "$\\foo$", tmp_path / "c.gif")  # no crash
    assert (tmp_path / "c.gif").read_bytes().startswith(b"GIF8")


def test_many_classes_show_the_most_confused_pairs_not_a_smear(tmp_path: Path) -> None:
    from PIL import Image

    n = 2000
    matrix = np.zeros((n, n), dtype=int)
    np.fill_diagonal(matrix, 3)
    matrix[7, 9] = 5  # the worst pair
    matrix[100, 1] = 2
    classes = [f"class_{i}" for i in range(n)]
    path = tmp_path / "cm.png"
    figures.plot_confusion_matrix(matrix.tolist(), classes, "Many classes", path)
    width, height = Image.open(path).size
    assert width < 1500 and height < 1500  # a page, not a 2,000-row poster
    assert figures.most_confused(matrix)[:2] == [(7, 9), (100, 1)]
