"""The figures of a cross-experiment comparison: the learning curves growing epoch by epoch
(GIF), accuracy with its interval, small multiples. They are drawn like the pipeline's
(cnnlab.figures), so a report and a comparison read alike.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.ticker import MaxNLocator

from cnnlab.figures import (
    _CURVES_SIZE,
    _GIF_DPI,
    _STYLE,
    OKABE_ITO,
    _accuracy_scale,
    _column,
    _curves_figure,
    _figure,
    _literal,
    diverged_text,
)
from cnnlab.files import write_bytes


def animate_learning_curves(
    histories: dict[str, pd.DataFrame],
    title: str,
    path: Path,
    diverged: Mapping[str, int | None] | None = None,
) -> None:
    """Save the 2x2 learning curves (without the best labels, which give the end away) as a
    GIF that grows one epoch per frame (0.7 s), the last held 3 s. Axes are fixed at their
    final limits, so nothing jumps. One palette from the last frame, no dithering, no
    timestamps: the same GIF bytes every time. Not matplotlib's ``PillowWriter``: it writes
    only to a path (no atomic write) and quantises each frame on its own."""
    from PIL import Image

    with mpl.style.context(["default", _STYLE]):
        fig, traces = _curves_figure(histories, title, diverged, mark_best=False, dpi=_GIF_DPI)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()  # lays the figure out and autoscales the axes to the full histories
        fig.set_layout_engine("none")  # freeze the layout: the epoch counter must not move it
        for ax in fig.axes:
            ax.set_xlim(ax.get_xlim())
            ax.set_ylim(ax.get_ylim())
        finite = [x[np.isfinite(x)] for _, x, _ in traces]
        epochs = np.unique(np.concatenate(finite)) if finite else np.array([])
        if epochs.size == 0:
            raise ValueError("animate_learning_curves needs at least one logged epoch")
        counter = fig.text(0.99, 0.99, "", ha="right", va="top", fontsize=10)
        frames = []
        for epoch in epochs:
            for line, x, y in traces:
                keep = x <= epoch
                line.set_data(x[keep], y[keep])
            counter.set_text(f"epoch {epoch:g} of {epochs[-1]:g}")
            canvas.draw()
            rgba = np.asarray(canvas.buffer_rgba())
            frames.append(Image.fromarray(rgba[..., :3].copy(), mode="RGB"))
    palette = frames[-1].quantize(
        colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    indexed = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    buffer = io.BytesIO()
    durations = [700] * (len(indexed) - 1) + [3000]  # ms
    indexed[0].save(
        buffer, format="GIF", save_all=True, append_images=indexed[1:], duration=durations, loop=0
    )
    write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# accuracy with intervals


def plot_intervals(rows: Sequence[Mapping[str, Any]], title: str, path: Path) -> None:
    """Save a dot-and-whisker chart, one row (cnnlab_compare.stats.interval_rows) per label:
    the mean (NaN: no result), its interval (NaN: none, e.g. one seed), each seed as a hollow
    dot, and the numbers (or the note) on the right. Not bars from zero: accuracies of 97-99%
    would all look alike."""
    if not rows:
        raise ValueError("an interval chart needs at least one row")
    finite = [
        v
        for r in rows
        for v in (r["mean"], r["low"], r["high"], *r["values"])
        if isinstance(v, (int, float)) and math.isfinite(v)
    ]
    left, right = (min(finite), max(finite)) if finite else (0.0, 100.0)
    span = max(right - left, 0.5)
    size = (_CURVES_SIZE[0], 1.5 + 0.42 * len(rows))
    with _figure(path, title, size, **{"axes.grid.axis": "x"}) as fig:
        ax = fig.subplots()
        texts = []
        for index, row in enumerate(rows):
            y = -index
            colour = OKABE_ITO[index % len(OKABE_ITO)]
            if row["values"]:
                ax.plot(row["values"], [y] * len(row["values"]), "o", mfc="none", color=colour,
                        alpha=0.7, ms=5, zorder=2)  # fmt: skip
            mean, low, high = row["mean"], row["low"], row["high"]
            if math.isfinite(mean):
                has_bar = math.isfinite(low) and math.isfinite(high)
                err = [[mean - low], [high - mean]] if has_bar else None
                ax.errorbar([mean], [y], xerr=err, fmt="D", color=colour, ms=6,
                            capsize=4, lw=1.6, zorder=3)  # fmt: skip
                text = f"{mean:.2f}" + (f" ± {(high - low) / 2:.2f}" if has_bar else "")
                texts.append(f"{text} {row['note']}".strip())
            else:
                texts.append(row["note"] or "no result")
        ticks = [-i for i in range(len(rows))]
        ax.set_yticks(ticks, labels=[_literal(r["label"]) for r in rows])
        # The numbers as right-hand tick labels: the layout makes room for them.
        right_axis = ax.secondary_yaxis("right")
        right_axis.set_yticks(ticks, labels=[_literal(t) for t in texts])
        right_axis.tick_params(length=0)
        for index, label in enumerate(right_axis.get_yticklabels()):
            label.set_color(OKABE_ITO[index % len(OKABE_ITO)])
        ax.set_ylim(-len(rows) + 0.4, 0.6)
        ax.set_xlim(left - 0.1 * span, right + 0.1 * span)
        ax.set_xlabel("test accuracy (%)")


# --------------------------------------------------------------------------------------------
# small multiples: one panel per line, where lines would hide each other

#: Two lines closer than this many points of validation accuracy at every common epoch are
#: drawn on top of each other at the curves figure's scale.
OVERLAP_POINTS = 0.5
#: Past this many lines one 2x2 figure is a tangle even when none overlap.
MAX_SHARED_LINES = 8
_PANEL_COLUMNS = 5
_PANEL_SIZE = (2.4, 1.9)  # inches per panel: 30 lines -> a 12 x 11.4 inch (1440 px) figure


def _val_acc(history: pd.DataFrame) -> pd.Series:
    """Validation accuracy in percent by epoch (finite values only)."""
    values = _column(history, "val_acc") * _accuracy_scale(history)
    series = pd.Series(values, index=_column(history, "epoch"))
    return series[np.isfinite(series.index) & np.isfinite(series.to_numpy())]


def overlapping(histories: Mapping[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """The pairs of lines whose validation accuracies stay within :data:`OVERLAP_POINTS` of
    each other at every epoch both logged: in one panel, one hides the other."""
    curves = {label: _val_acc(h) for label, h in histories.items()}
    pairs = []
    labels = list(curves)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            both = curves[a].index.intersection(curves[b].index)
            if len(both) and (curves[a][both] - curves[b][both]).abs().max() < OVERLAP_POINTS:
                pairs.append((a, b))
    return pairs


def needs_small_multiples(histories: Mapping[str, pd.DataFrame]) -> bool:
    """Whether the shared curves figure hides lines: too many, or some on top of others."""
    return len(histories) > MAX_SHARED_LINES or bool(overlapping(histories))


def plot_small_multiples(
    histories: Mapping[str, pd.DataFrame],
    title: str,
    path: Path,
    diverged: Mapping[str, int | None] | None = None,
) -> None:
    """Save the validation accuracy as small multiples: one panel per line (in its colour,
    titled with its label: no legend to cut off), the others in light grey behind it, every
    panel on the same axes, so lines on top of each other in the shared figure are seen."""
    if not histories:
        raise ValueError("small multiples need at least one history")
    diverged = dict(diverged or {})
    curves = {label: _val_acc(h) for label, h in histories.items()}
    count = len(curves)
    ncols = min(_PANEL_COLUMNS, count)
    nrows = math.ceil(count / ncols)
    size = (max(_CURVES_SIZE[0], ncols * _PANEL_SIZE[0]), 1.0 + nrows * _PANEL_SIZE[1])
    with _figure(path, title, size) as fig:
        flat = list(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel())
        for index, (label, curve) in enumerate(curves.items()):
            ax = flat[index]
            for other, line in curves.items():
                if other != label:
                    ax.plot(line.index, line.to_numpy(), color="0.85", lw=1.0, zorder=1)
            colour = OKABE_ITO[index % len(OKABE_ITO)]
            ax.plot(curve.index, curve.to_numpy(), color=colour, lw=2.0, zorder=3)
            text = textwrap.fill(_literal(label), 34)
            if label in diverged:
                text += "\n" + diverged_text(diverged[label])
            ax.set_title(text, fontsize=8, loc="left")  # black: yellow text is unreadable
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        for ax in flat[count:]:
            ax.set_visible(False)
        fig.supxlabel("epoch", fontsize=10)
        fig.supylabel("validation accuracy (%)", fontsize=10)
