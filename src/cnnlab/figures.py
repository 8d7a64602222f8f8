"""The comparison figures (2x2 learning curves, a confusion matrix) as byte-stable PNGs.

A PNG is a DVC output: a byte that changes for no reason reruns everything downstream. So
figures use the object API (``Figure`` + Agg, never ``pyplot``: no global state), draw inside
``matplotlib.style.context(["default", _STYLE])`` (no user's rcParams in, none of ours out),
have constant sizes and dpi, and are saved without matplotlib's version (``Software``) and
atomically (cnnlab.files.write_bytes). Every user string goes through :func:`_literal`: text
between two ``$`` would be drawn as mathtext, or stop the stage.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from cnnlab.files import write_bytes
from cnnlab.history import HISTORY_COLUMNS

#: Okabe & Ito's colour-blind-safe palette, reordered so that the first colours are the most
#: distinct on white (yellow last: it is hard to see as a thin line).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
#: Markers make lines tell apart in greyscale and make a one-epoch history visible at all.
_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")

_DPI = 120
_GIF_DPI = 80  # 800x600 px frames: a 20-epoch animation stays a few MB
_CURVES_SIZE = (10.0, 7.5)  # inches -> 1200x900 px
_CONFUSION_SIZE = (7.5, 6.5)  # inches -> 900x780 px
_PNG_METADATA: dict[str, str | None] = {"Software": None}

_STYLE: dict[str, object] = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs on every machine
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 4.0,
    "savefig.bbox": None,  # "tight" would make the pixel size depend on the text extents
    "path.simplify": False,
}  # on top of matplotlib's "default" style: white, no TeX


def _literal(text: object) -> str:
    """``text`` drawn character for character: every ``$`` escaped, so none is mathtext."""
    return str(text).replace("$", r"\$")


def diverged_text(epoch: int | None) -> str:
    return "(diverged)" if epoch is None else f"(diverged at epoch {epoch})"


def _save_png(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)  # attach the Agg canvas: no backend switch, no pyplot
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    write_bytes(path, buffer.getvalue())


@contextmanager
def _figure(path: Path, title: str, size: tuple[float, float], **style: object) -> Iterator[Figure]:
    """A figure drawn in our style (plus ``style``), titled and saved as ``path`` at the end."""
    with mpl.style.context(["default", _STYLE, style]):
        fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
        yield fig
        fig.suptitle(_literal(title), fontsize=12)
        _save_png(fig, path)


# --------------------------------------------------------------------------------------------
# learning curves


def _finite(epochs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(epochs) & np.isfinite(values)
    return epochs[keep], values[keep]


def _column(history: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(history[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _accuracy_scale(history: pd.DataFrame) -> float:
    """100 for fractions (evaluate's), 1 for a history already in percent (another tool's):
    a fraction never exceeds 1."""
    values = np.concatenate([_column(history, "train_acc"), _column(history, "val_acc")])
    values = values[np.isfinite(values)]
    return 1.0 if values.size and values.max() > 1.0 else 100.0


def _first_nonfinite_epoch(history: pd.DataFrame) -> int | None:
    """The first epoch whose loss went non-finite: how a diverged run shows in its history.
    A NaN loss counts only next to a logged accuracy of the same split (a NaN loss *and*
    accuracy is a metric file never written, not divergence); an infinite loss always."""
    epochs = _column(history, "epoch")
    bad = np.zeros(len(history), dtype=bool)
    for split in ("train", "val"):
        loss, acc = _column(history, f"{split}_loss"), _column(history, f"{split}_acc")
        bad |= np.isinf(loss) | (np.isnan(loss) & np.isfinite(acc))
    hits = np.flatnonzero(bad & np.isfinite(epochs))
    return int(epochs[hits[0]]) if hits.size else None


def _loss_top(values: list[np.ndarray]) -> float | None:
    """An upper y-limit that keeps a blown-up loss (1e6 before the NaN) from flattening every
    other curve into the x-axis; the clipped line visibly leaves the panel at the top."""
    curves = [v[np.isfinite(v)] for v in values]
    finite = np.concatenate(curves) if curves else np.array([])
    if finite.size == 0:
        return None
    # Losses fall by orders of magnitude in healthy training, so the scale is set by where
    # the curves start, not by their median: only a blow-up far above every start is cut.
    start = max(float(c[0]) for c in curves if c.size)
    inliers = finite[finite <= 10.0 * start] if start > 0 else finite
    top = float(inliers.max()) if inliers.size else float(finite.max())
    return top * 1.05 if top > 0 else None


def _band(
    ax: Axes, band: tuple[pd.DataFrame, pd.DataFrame], column: str, scale: float, colour: str
) -> None:
    """Shade between the lowest and highest value per epoch, under the lines."""
    low, high = band
    merged = low[["epoch", column]].merge(high[["epoch", column]], on="epoch")
    x = _column(merged, "epoch")
    lo, hi = _column(merged, f"{column}_x") * scale, _column(merged, f"{column}_y") * scale
    keep = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    ax.fill_between(x[keep], lo[keep], hi[keep], color=colour, alpha=0.18, lw=0, zorder=1.2)


def _best_labels(ax: Axes, bests: list[tuple[float, int, str]]) -> None:
    """Dashed line at each best accuracy, labelled "best 98.7% (epoch 3)" in its colour, just
    above the line at the left (where curves are still low). Close bests' labels are stacked
    upwards and the y-limit raised to make room, then frozen against later autoscaling."""
    if not bests:
        return
    for value, _epoch, colour in bests:
        ax.axhline(value, color=colour, linestyle="--", linewidth=1.0, alpha=0.9, zorder=1.5)
    low, high = ax.get_ylim()
    step = 0.065 * (high - low or 1.0)  # one label's height, in data units, with padding
    placed: list[tuple[float, float, int, str]] = []
    floor = -math.inf
    for value, epoch, colour in sorted(bests, key=lambda b: b[0]):
        y = max(value + 0.1 * step, floor)
        floor = y + step
        placed.append((y, value, epoch, colour))
    ax.set_ylim(low, max(high, floor + 0.2 * step))
    box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    where = ax.get_yaxis_transform()  # x in axes fraction, y in data units
    for y, value, epoch, colour in placed:
        text = f"best {value:.1f}% (epoch {epoch})"
        # zorder under the lines (2): a label may be crossed, a data point never hidden
        ax.text(0.015, y, text, transform=where, ha="left", va="bottom", color=colour,
                fontsize=8.5, bbox=box, zorder=1.8)  # fmt: skip


def plot_learning_curves(
    histories: dict[str, pd.DataFrame],
    title: str,
    path: Path,
    diverged: Mapping[str, int | None] | None = None,
    *,
    mark_best: bool = True,
    bands: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]] | None = None,
) -> None:
    """Save a 2x2 figure (train/val loss on top, train/val accuracy below), one line per label
    of ``histories`` (its order fixes the colours); non-finite points are skipped.

    ``diverged`` (label -> epoch or None) marks runs "diverged" in the legend, as does a
    non-finite loss in the history (which alone cannot always tell: the trainer stops before
    logging the epoch that went NaN). ``mark_best`` labels each best validation accuracy;
    ``bands`` (label -> lowest and highest history, of a mean line's seeds) shades a band.
    One legend below the panels: every panel shows the same runs.
    """
    with mpl.style.context(["default", _STYLE]):
        fig, _ = _curves_figure(
            histories, title, diverged, mark_best=mark_best, dpi=_DPI, bands=bands
        )
        _save_png(fig, path)


def _curves_figure(
    histories: dict[str, pd.DataFrame],
    title: str,
    diverged: Mapping[str, int | None] | None,
    *,
    mark_best: bool,
    dpi: float,
    bands: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]] | None = None,
) -> tuple[Figure, list[tuple[Line2D, np.ndarray, np.ndarray]]]:
    """Build the 2x2 learning-curve figure; also return every drawn line with its full data
    (the animation redraws them cut at each epoch). Call inside the style context."""
    if not histories:
        raise ValueError("a learning-curve figure needs at least one history")
    for label, history in histories.items():
        missing = [c for c in ("epoch", *HISTORY_COLUMNS) if c not in history.columns]
        if missing:
            raise ValueError(f"history {label!r} lacks column(s) {', '.join(missing)}")
    diverged = dict(diverged or {})

    fig = Figure(figsize=_CURVES_SIZE, dpi=dpi, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    panels = {
        "train_loss": (axes[0, 0], "Training loss", "cross-entropy loss"),
        "val_loss": (axes[0, 1], "Validation loss", "cross-entropy loss"),
        "train_acc": (axes[1, 0], "Training accuracy", "accuracy (%)"),
        "val_acc": (axes[1, 1], "Validation accuracy", "accuracy (%)"),
    }
    handles: list[Line2D] = []
    losses: list[np.ndarray] = []
    bests: list[tuple[float, int, str]] = []
    all_epochs: list[np.ndarray] = []
    traces: list[tuple[Line2D, np.ndarray, np.ndarray]] = []

    for index, (label, history) in enumerate(histories.items()):
        colour = OKABE_ITO[index % len(OKABE_ITO)]
        # Past 8 runs colours repeat; a different dash keeps lines apart.
        linestyle = "-" if index < len(OKABE_ITO) else (0, (4, 1.5))
        look = {"color": colour, "marker": _MARKERS[index % len(_MARKERS)], "linestyle": linestyle}
        epochs = _column(history, "epoch")
        all_epochs.append(epochs[np.isfinite(epochs)])
        acc_scale = _accuracy_scale(history)
        markevery = max(1, len(history) // 20)

        for column, (ax, _, _) in panels.items():
            scale = acc_scale if column.endswith("acc") else 1.0
            x, y = _finite(epochs, _column(history, column) * scale)
            if column.endswith("loss"):
                losses.append(y)
            (line,) = ax.plot(x, y, **look, markevery=markevery, label=label)
            traces.append((line, x, y))
            if bands and label in bands:
                _band(ax, bands[label], column, scale, colour)
            if column == "val_acc" and y.size:
                best = int(np.argmax(y))  # first maximum: the checkpoint rule keeps ties old
                bests.append((float(y[best]), int(x[best]), colour))

        nan_epoch = _first_nonfinite_epoch(history)
        legend_label = _literal(label)
        if label in diverged or nan_epoch is not None:
            epoch = diverged.get(label, nan_epoch)
            epoch = nan_epoch if epoch is None else epoch
            legend_label += " " + diverged_text(epoch)
        legend_label = textwrap.fill(legend_label, _LEGEND_WRAP)
        handles.append(Line2D([], [], **look, label=legend_label))

    for column, (ax, panel_title, ylabel) in panels.items():
        ax.set_title(panel_title)
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if column.endswith("loss"):
            top = _loss_top(losses)
            ax.set_ylim(0.0, top) if top is not None else ax.set_ylim(bottom=0.0)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    finite_epochs = np.concatenate(all_epochs)
    if finite_epochs.size:
        axes[0, 0].set_xlim(finite_epochs.min() - 0.5, finite_epochs.max() + 0.5)
    if mark_best:
        _best_labels(axes[1, 1], bests)

    fig.suptitle(_literal(title), fontsize=12)
    ncols, extra = _legend_layout([str(h.get_label()) for h in handles])
    fig.set_size_inches(_CURVES_SIZE[0], _CURVES_SIZE[1] + extra)
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols)
    return fig, traces


#: Legend labels longer than this many characters wrap onto further lines.
_LEGEND_WRAP = 110
#: Legend metrics at legend.fontsize 8.5 pt, in inches: a character's mean width in DejaVu
#: Sans (a little above its 0.55 em), one entry's handle and spacing, one text line, and the
#: lines a figure of _CURVES_SIZE holds below its panels without growing.
_LEGEND_CHAR = 0.072
_LEGEND_ENTRY = 0.6
_LEGEND_LINE = 0.2
_LEGEND_FREE_LINES = 2


def _legend_layout(labels: list[str]) -> tuple[int, float]:
    """Columns of the legend below the panels (up to 4, as the longest label allows) and the
    height (inches) to add for its lines past the first two: constrained layout makes room
    for a legend inside the figure, never beyond it, so it would cut it off."""
    if not labels:
        return 1, 0.0
    widest = max(len(line) for label in labels for line in label.splitlines())
    width = widest * _LEGEND_CHAR + _LEGEND_ENTRY
    ncols = max(1, min(4, len(labels), int(_CURVES_SIZE[0] * 0.96 // width)))
    lines = 0
    for start in range(0, len(labels), ncols):
        lines += max(label.count("\n") + 1 for label in labels[start : start + ncols])
    return ncols, max(0, lines - _LEGEND_FREE_LINES) * _LEGEND_LINE


# --------------------------------------------------------------------------------------------
# confusion matrix


def plot_confusion_matrix(
    matrix: list[list[int]], classes: list[str], title: str, path: Path
) -> None:
    """Save the confusion matrix: colour is the row percentage (a rare class's mistakes show
    as well as a common one's), the text the raw count (what one checks against the test
    set), which sklearn's ConfusionMatrixDisplay cannot do (one value for both). Counts are
    left out past 30 classes; past :data:`MATRIX_MAX_CLASSES` the most-confused pairs are
    shown instead of an unreadable smear."""
    counts = np.asarray(matrix, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    if counts.shape[0] != len(classes):
        raise ValueError(
            f"confusion matrix is {counts.shape[0]}x{counts.shape[1]} "
            f"but {len(classes)} class names were given"
        )
    if counts.size and (not np.isfinite(counts).all() or (counts < 0).any()):
        raise ValueError("confusion matrix counts must be finite and non-negative")

    n = counts.shape[0]
    if n > MATRIX_MAX_CLASSES:
        _plot_confused_pairs(counts, classes, title, path)
        return
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts * 100.0, totals, out=np.zeros_like(counts), where=totals > 0)
    with _figure(path, title, _CONFUSION_SIZE, **{"axes.grid": False}) as fig:
        ax = fig.subplots()
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=100.0, interpolation="nearest")
        colorbar = fig.colorbar(image, ax=ax, shrink=0.85)
        colorbar.set_label("share of the true class (%)")
        labels = [_literal(c) for c in classes]
        ax.set_xticks(range(n), labels=labels, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), labels=labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        for spine in ax.spines.values():
            spine.set_visible(False)
        if n <= 30:
            fontsize = 9.0 if n <= 10 else 7.0 if n <= 20 else 5.0
            for (row, col), count in np.ndenumerate(counts):
                colour = "white" if share[row, col] > 55.0 else "black"
                text = f"{int(count)}"
                ax.text(col, row, text, ha="center", va="center", fontsize=fontsize, color=colour)
        ax.set_title(_images_text(counts), fontsize=9)


def _images_text(counts: np.ndarray) -> str:
    """ "accuracy 98.10% on 1,797 images", or the count alone without images."""
    total = counts.sum()
    if total <= 0:
        return f"{int(total):,} images"
    return f"accuracy {float(np.trace(counts) / total * 100.0):.2f}% on {int(total):,} images"


#: Above this many classes a matrix's tick labels overlap: the most-confused pairs instead.
MATRIX_MAX_CLASSES = 60
CONFUSED_PAIRS_SHOWN = 25


def most_confused(counts: np.ndarray, shown: int = CONFUSED_PAIRS_SHOWN) -> list[tuple[int, int]]:
    """(true, predicted) class indices of the off-diagonal cells with the most test images."""
    mistakes = np.array(counts, dtype=float)
    np.fill_diagonal(mistakes, 0)
    flat = np.argsort(-mistakes, axis=None, kind="stable")[:shown]
    return [divmod(int(i), mistakes.shape[0]) for i in flat if mistakes.flat[i] > 0]


def _plot_confused_pairs(counts: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    """The off-diagonal cells with the most test images, as labelled horizontal bars."""
    pairs = most_confused(counts)
    with _figure(path, title, (_CONFUSION_SIZE[0], 1.5 + 0.25 * max(1, len(pairs)))) as fig:
        ax = fig.subplots()
        labels = [_literal(f"{classes[a]} → {classes[p]}") for a, p in pairs]
        ax.barh(range(len(pairs)), [counts[a, p] for a, p in pairs], color="#3b75af")
        ax.set_yticks(range(len(pairs)), labels=labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("test images (true class → predicted class)")
        ax.set_title(
            f"the {len(pairs)} most-confused of {len(classes):,} classes; {_images_text(counts)}",
            fontsize=9,
        )
        if not pairs:
            ax.text(0.5, 0.5, "no mistakes", transform=ax.transAxes, ha="center")
