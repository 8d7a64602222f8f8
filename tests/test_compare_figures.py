"""Cross-experiment figures stay readable from 2 to 30 experiments: lines labelled by what
differs and what the run reads, a legend that is never cut off, short stage output."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib as mpl
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image
from test_experiments import compare_main, experiment, fake_sweep, history, lenet_run

from cnnlab import figures
from cnnlab_compare import figures as compare_figures
from cnnlab_compare.experiments import run_labels, varying_params


def test_lines_show_only_the_params_this_run_reads() -> None:
    exps = [
        experiment("a", optimizer="sgd"),
        experiment("b", optimizer="adam"),
        experiment("c", optimizer="adam", model__lenet__activation="tanh"),
        experiment("d", optimizer="adam", optimizers__sgd__lr=0.5),
    ]
    varied = varying_params(exps)
    assert varied == ["optimizer", "optimizers.sgd.lr", "model.lenet.activation"]
    # AlexNet never reads LeNet's activation; adam runs never read the sgd row
    labels, shown = run_labels(exps[:3], varied, "alexnet", "digits")
    assert shown == ["optimizer"]
    assert labels == {"a": "optimizer=sgd", "b": "optimizer=adam", "c": "optimizer=adam"} or (
        labels == {"a": "a: optimizer=sgd", "b": "b: optimizer=adam", "c": "c: optimizer=adam"}
    )
    labels, shown = run_labels(exps[:3], varied, "lenet", "digits")
    assert shown == ["optimizer", "model.lenet.activation"]
    assert labels["c"] == "optimizer=adam, model.lenet.activation=tanh"
    # the sgd row's lr differs only where no run reads it (d uses adam)
    labels, shown = run_labels([exps[0], exps[3]], varied, "lenet", "digits")
    assert shown == ["optimizer"]
    assert labels == {"a": "optimizer=sgd", "d": "optimizer=adam"}


@pytest.mark.parametrize("count", [2, 9, 10, 30])
def test_the_legend_is_never_cut_off_and_the_panels_keep_their_room(count: int) -> None:
    label = "optimizer=adamw, lr=0.003, weight_decay=0.05, model.alexnet.dropout=0.3, seed={}"
    histories = {label.format(i): history(i, epochs=3) for i in range(count)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied" would be one
        with mpl.style.context(["default", figures._STYLE]):
            fig, _ = figures._curves_figure(
                histories, "AlexNet on digits", None, mark_best=False, dpi=100
            )
            FigureCanvasAgg(fig).draw()
    (legend,) = fig.legends
    box, page = legend.get_window_extent(), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == list(histories)  # every entry, in full
    for ax in fig.axes:
        assert ax.get_window_extent().height > 150  # pixels at 100 dpi: 1.5 inches
        assert ax.get_window_extent().y0 > box.y1  # no panel under the legend


def test_nine_experiments_give_one_readable_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [
        (f"exp-{i}", {"optimizer": opt, "lr": lr}, lenet_run(0.9 + i / 100))
        for i, (opt, lr) in enumerate(
            (o, lr) for o in ("sgd", "adam", "rmsprop") for lr in (0.001, 0.01, 0.1)
        )
    ]
    fake_sweep(monkeypatch, specs)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        compare_main()(["--out", str(out)])
    said = capsys.readouterr().out
    assert "compared 9 experiments (exp-0: optimizer=sgd, lr=0.001; " in said
    assert "and 4 more)" in said  # a long list shortened with a count
    width, height = Image.open(out / "curves-lenet-mnist.png").size
    assert width == 1200 and height >= 900


def test_a_folder_of_many_classes_is_listed_in_one_short_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    import yaml
    from conftest import clean_params_text

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    import download

    params = yaml.safe_load(clean_params_text())
    params["datasets"], params["dataset"]["big"] = ["big"], {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for i in range(2000):
        folder = tmp_path / "datasets" / "big" / f"class_{i:04d}"
        folder.mkdir(parents=True)
        (folder / "a.png").write_bytes(b"not decoded here")
    monkeypatch.chdir(tmp_path)
    download.main("big")
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("big: 2000 files in 2000 classes (class_0000, class_0001, ")
    assert "class_0007 and 1992 more) listed from datasets/big/" in line
    assert len(line) < 250


def drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures cnnlab_compare.figures saves (through cnnlab.figures), laid out as in the
    PNG."""
    saved: list = []
    real = figures._save_png

    def keep(fig, path) -> None:
        real(fig, path)
        saved.append(fig)

    monkeypatch.setattr(figures, "_save_png", keep)
    return saved


def test_lines_on_top_of_each_other_are_told_apart() -> None:
    same = history(1)
    apart = history(2).assign(val_acc=lambda h: h["val_acc"] - 0.05)  # 5 points lower
    assert compare_figures.overlapping({"a": same, "b": same.copy(), "c": apart}) == [("a", "b")]
    assert not compare_figures.needs_small_multiples({"a": same, "c": apart})
    assert compare_figures.needs_small_multiples({"a": same, "b": same.copy()})
    # past eight lines one panel is a tangle even when none overlap
    spread = {f"x{i}": history(i).assign(val_acc=0.1 * i) for i in range(9)}
    assert compare_figures.needs_small_multiples(spread)


@pytest.mark.parametrize("count", [2, 10, 30])
def test_small_multiples_give_every_line_its_panel_inside_the_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    saved = drawn(monkeypatch)
    label = "optimizer=adamw, lr=0.003, weight_decay=0.05, seed={}"
    histories = {label.format(i): history(0) for i in range(count)}  # all on one line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare_figures.plot_small_multiples(
            histories, "LeNet on MNIST", tmp_path / "p.png", {label.format(0): 3}
        )
    (fig,) = saved
    panels = [ax for ax in fig.axes if ax.get_visible()]
    titles = [ax.get_title(loc="left").replace("\n", " ") for ax in panels]
    assert titles[0] == label.format(0) + " (diverged at epoch 3)"
    assert titles[1:] == [label.format(i) for i in range(1, count)]  # every line, in full
    page = fig.bbox
    for ax in panels:
        box = ax.get_tightbbox()  # the panel with its title and tick labels
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
        assert ax.get_window_extent().height > 80  # pixels at 120 dpi: two thirds of an inch
    assert Image.open(tmp_path / "p.png").size[0] >= 1200


def test_a_ten_experiment_comparison_separates_lines_that_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten optimizers, two of which trained alike: the 2x2 curves draw one over the other,
    so the comparison adds one panel per line and lists it with the figures."""
    optimizers = ["sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam", "adamw"]
    specs = [
        (f"exp-{i}", {"optimizer": opt, "lr": lr}, lenet_run(0.9 + i / 100))
        for i, (opt, lr) in enumerate([*((o, 0.01) for o in optimizers), ("sgd", 0.1),
                                       ("adam", 0.1)])
    ]  # fmt: skip
    curves = [history(i).assign(val_acc=0.5 + 0.04 * i) for i in range(10)]
    curves[9] = curves[0].copy()  # exp-9 lies on exp-0
    fake_sweep(monkeypatch, specs, curves)
    saved = drawn(monkeypatch)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        compare_main()(["--out", str(out)])
    panels = out / "curves-lenet-mnist-panels.png"
    assert panels.is_file() and Image.open(panels).size[0] >= 1200
    assert (
        "![curves-lenet-mnist-panels.png](curves-lenet-mnist-panels.png)"
        in (out / "experiments.md").read_text()
    )
    (fig,) = [f for f in saved if len([a for a in f.axes if a.get_visible()]) == 10]
    titles = {ax.get_title(loc="left").replace("\n", " ") for ax in fig.axes if ax.get_visible()}
    assert "optimizer=sgd, lr=0.01" in titles and "optimizer=adam, lr=0.1" in titles
