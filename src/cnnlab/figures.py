"""The comparison figures: 2x2 learning curves and a confusion matrix, as byte-stable PNGs.

Reproducibility rules that shape this module (a PNG is a DVC output, so a byte that changes
for no reason reruns everything downstream and makes ``dvc repro`` look non-deterministic):

* figures are built with the object API (``Figure`` + the Agg canvas), never ``pyplot``, so
  no global figure registry or backend is touched and nothing leaks between calls;
* every draw happens inside ``matplotlib.style.context(["default", _STYLE])``, so a user's
  ``matplotlibrc`` or a caller's rcParams cannot change the output, and ours cannot leak out;
* figure size and dpi are constants, and the PNG is saved with ``metadata={"Software": None}``
  so that no matplotlib version string is embedded (PNG gets no date from matplotlib);
* the file is written to a temporary name in the target directory and ``os.replace``-d into
  place, so a killed run leaves either the old file or the new one, never half a PNG, and a
  DVC cache link at the target is replaced rather than written through.

Every string that comes from the user (class names, which are folder names; dataset, model
and optimizer names in titles and legends) goes through :func:`_literal` before it is drawn:
matplotlib reads text between two ``$`` as mathtext, so a class folder named
``cost $\\foo$`` would stop the compare stage and ``cost 5$ or 6$`` would be drawn as
"cost 5*or*6" in italics.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping
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

__all__ = [
    "OKABE_ITO",
    "plot_confusion_matrix",
    "plot_learning_curves",
]

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
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "savefig.bbox": None,  # "tight" would make the pixel size depend on the text extents
    "path.simplify": False,
    "text.usetex": False,
    "svg.hashsalt": "cnnlab",
}

_HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def _literal(text: object) -> str:
    """``text`` as matplotlib should draw it, character for character: every ``$`` escaped,
    so that nothing is read as mathtext (a lone ``\\$`` stays as typed, too)."""
    return str(text).replace("$", r"\$")


# --------------------------------------------------------------------------------------------
# writing


def _save_png(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)  # attach the Agg canvas: no backend switch, no pyplot
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# learning curves


def _finite(epochs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(epochs) & np.isfinite(values)
    return epochs[keep], values[keep]


def _column(history: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(history[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _accuracy_scale(history: pd.DataFrame) -> float:
    """100 for fractions, 1 for histories already in percent.

    The evaluate stage writes fractions, but a history logged by another tool may hold
    percent; a fraction never exceeds 1, so any value above 1 settles which one it is.
    """
    values = np.concatenate([_column(history, "train_acc"), _column(history, "val_acc")])
    values = values[np.isfinite(values)]
    return 1.0 if values.size and values.max() > 1.0 else 100.0


def _first_nonfinite_epoch(history: pd.DataFrame) -> int | None:
    """The first epoch whose loss went non-finite: how a diverged run shows in its history.

    A NaN loss only counts when the same split's accuracy was logged for that epoch (the
    trainer logs a finite accuracy next to a NaN validation loss); a NaN loss *and* accuracy
    is a value that is simply missing, e.g. a metric file that was never written, and must
    not brand a healthy run as diverged. An infinite loss always counts.
    """
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
    """Dashed line at each best accuracy, labelled "best 98.7% (epoch 3)" in the line's colour.

    Each label sits just above its line at the left: no curve rises above its own best, and
    other curves are still low in the first epochs, so that spot is nearly always empty. Close
    bests would print their labels on top of each other, so labels are stacked upwards and
    the y-limit is raised to make room; the limits are then frozen so that nothing computed
    here depends on later autoscaling.
    """
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
    for y, value, epoch, colour in placed:
        ax.text(
            0.015,
            y,
            f"best {value:.1f}% (epoch {epoch})",
            transform=ax.get_yaxis_transform(),  # x in axes fraction, y in data units
            ha="left",
            va="bottom",
            color=colour,
            fontsize=8.5,
            bbox={
                "boxstyle": "round,pad=0.15",
                "facecolor": "white",
                "edgecolor": "none",
                "alpha": 0.85,
            },
            zorder=1.8,  # under the lines (2): a label may be crossed, a data point never hidden
        )


def plot_learning_curves(
    histories: dict[str, pd.DataFrame],
    title: str,
    path: Path,
    diverged: Mapping[str, int | None] | None = None,
    *,
    mark_best: bool = True,
    bands: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]] | None = None,
) -> None:
    """Save a 2x2 figure (train/val loss on top, train/val accuracy below), one line per label.

    ``histories`` maps a label ("lenet", "alexnet", an optimizer name...) to its per-epoch
    history; the dict order fixes the colours, so the same call always draws the same picture.
    Non-finite points are skipped rather than plotted, because matplotlib would either break
    the line or stretch the axes to infinity. A run is marked "diverged" in the legend when its
    history logs a non-finite loss or when ``diverged`` names it (label -> epoch, or None if
    unknown): the trainer stops before logging an epoch whose training loss went NaN, so the
    history alone cannot always tell; pass the evaluate metrics' ``diverged_epoch`` here.
    ``mark_best`` draws each line's best validation accuracy as a dashed, labelled line.
    ``bands`` maps a label to two histories, the lowest and highest values per epoch (of the
    seeds behind a mean line): a shaded band in the line's colour.

    One legend for the whole figure, below the panels, since every panel shows the same runs;
    per-panel legends would repeat it four times and hide data.
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
        missing = [c for c in _HISTORY_COLUMNS if c not in history.columns]
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
        marker = _MARKERS[index % len(_MARKERS)]
        # Past 8 runs colours repeat; a different dash keeps lines apart.
        linestyle = "-" if index < len(OKABE_ITO) else (0, (4, 1.5))
        epochs = _column(history, "epoch")
        all_epochs.append(epochs[np.isfinite(epochs)])
        acc_scale = _accuracy_scale(history)
        markevery = max(1, len(history) // 20)

        for column, (ax, _, _) in panels.items():
            scale = acc_scale if column.endswith("acc") else 1.0
            x, y = _finite(epochs, _column(history, column) * scale)
            if column.endswith("loss"):
                losses.append(y)
            (line,) = ax.plot(
                x,
                y,
                color=colour,
                marker=marker,
                linestyle=linestyle,
                markevery=markevery,
                label=label,
            )
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
            legend_label += " (diverged)" if epoch is None else f" (diverged at epoch {epoch})"
        handles.append(
            Line2D([], [], color=colour, marker=marker, linestyle=linestyle, label=legend_label)
        )

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
    for handle in handles:
        handle.set_label(textwrap.fill(str(handle.get_label()), _LEGEND_WRAP))
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
    """Columns of a figure legend below the panels and the height (inches) to add to the
    figure for it, so that the legend is never cut off and the panels never collapse: as
    many columns (up to 4) as the longest label allows across the figure's width, then one
    more line of height per line of legend past the first two. (matplotlib's constrained
    layout makes room for a legend inside the figure, never beyond it.)"""
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
    """Save the confusion matrix as a heat map of row percentages with the counts written in.

    Colour shows the share of each true class (row-normalised) so that a rare class's mistakes
    are as visible as a common one's; the cell text keeps the raw counts, which is what one
    checks against the test set (sklearn's ConfusionMatrixDisplay colours and labels by one
    and the same value). Counts are omitted beyond 30 classes, where they would not fit, and
    beyond :data:`MATRIX_MAX_CLASSES` the figure shows the most-confused pairs instead, since
    the matrix's labels would be an unreadable smear. A single-hue sequential colour map stays
    readable for colour-blind readers and in greyscale.
    """
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
    total = counts.sum()
    accuracy = float(np.trace(counts) / total * 100.0) if total > 0 else math.nan

    with mpl.style.context(["default", _STYLE, {"axes.grid": False}]):
        fig = Figure(figsize=_CONFUSION_SIZE, dpi=_DPI, layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=100.0, interpolation="nearest")
        colorbar = fig.colorbar(image, ax=ax, shrink=0.85)
        colorbar.set_label("share of the true class (%)")

        ax.set_xticks(
            range(n),
            labels=[_literal(c) for c in classes],
            rotation=45,
            ha="right",
            rotation_mode="anchor",
        )
        ax.set_yticks(range(n), labels=[_literal(c) for c in classes])
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        for spine in ax.spines.values():
            spine.set_visible(False)

        if n <= 30:
            fontsize = 9.0 if n <= 10 else 7.0 if n <= 20 else 5.0
            for row in range(n):
                for col in range(n):
                    ax.text(
                        col,
                        row,
                        f"{int(counts[row, col])}",
                        ha="center",
                        va="center",
                        fontsize=fontsize,
                        color="white" if share[row, col] > 55.0 else "black",
                    )

        fig.suptitle(_literal(title), fontsize=12)
        subtitle = (
            f"{int(total):,} images"
            if math.isnan(accuracy)
            else (f"accuracy {accuracy:.2f}% on {int(total):,} images")
        )
        ax.set_title(subtitle, fontsize=9)
        _save_png(fig, path)


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
    mistakes = counts
    total = counts.sum()
    accuracy = float(np.trace(counts) / total * 100.0) if total > 0 else math.nan
    with mpl.style.context(["default", _STYLE]):
        fig = Figure(figsize=(_CONFUSION_SIZE[0], 1.5 + 0.25 * max(1, len(pairs))), dpi=_DPI)
        fig.set_layout_engine("constrained")
        ax = fig.subplots()
        labels = [_literal(f"{classes[a]} → {classes[p]}") for a, p in pairs]
        ax.barh(range(len(pairs)), [mistakes[a, p] for a, p in pairs], color="#3b75af")
        ax.set_yticks(range(len(pairs)), labels=labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("test images (true class → predicted class)")
        fig.suptitle(_literal(title), fontsize=12)
        ax.set_title(
            f"the {len(pairs)} most-confused of {len(classes):,} classes; "
            + (f"accuracy {accuracy:.2f}% on " if not math.isnan(accuracy) else "")
            + f"{int(total):,} images",
            fontsize=9,
        )
        if not pairs:
            ax.text(0.5, 0.5, "no mistakes", transform=ax.transAxes, ha="center")
        _save_png(fig, path)
