"""The experiments page: one self-contained HTML file to explore a cross-experiment comparison.

cnnlab-compare writes it as ``index.html``: a sortable, filterable table (one row per
experiment), each run's 2x2 learning curves (hover a point; click a legend entry or a table
row to highlight a line; seeds as a mean line and their band), test accuracy against each
param that differs, means over seeds, and the statistics tables. The charts are Vega-Lite
specs drawn by vega-embed from the pinned vl-convert bundle (cnnlab.webpage); the page's
Content-Security-Policy allows no request. The only hand-written JavaScript sorts and filters
the tables and passes a clicked row to the charts: a table library would be more code.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import pandas as pd

from cnnlab.figures import OKABE_ITO
from cnnlab.reporting import _DASH, _fmt_float, dataset_title, model_title
from cnnlab.webpage import VEGA_LITE_VERSION, vega_script
from cnnlab_compare.reporting import NOT_MEASURED, accuracy_text
from cnnlab_compare.stats import RESULTS, mean_history

SCHEMA = f"https://vega.github.io/schema/vega-lite/{VEGA_LITE_VERSION.split('.')[0]}.json"
#: No request of any kind: scripts and styles are inline, images are data: URLs.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:"
)
METRICS = {  # history column -> facet title, in the PNGs' 2x2 order
    "train_loss": "train loss",
    "val_loss": "validation loss",
    "train_acc": "train accuracy",
    "val_acc": "validation accuracy",
}
_DIM = 0.12  # the opacity of the lines that are not highlighted


def _number(value: Any) -> float | None:
    """A finite float, or None (NaN, missing, text): what JSON and the charts can hold; a
    bool is a number here (a statistics table's True counts as 1)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _run_title(dataset: str, model: str) -> str:
    return f"{model_title(model)} on {dataset_title(dataset)}"


def _lines(table: pd.DataFrame, groups: pd.DataFrame | None) -> dict[str, str]:
    """The line each experiment is drawn in: its configuration's (seeds averaged) when
    ``groups`` is given, else its own label."""
    line = dict(zip(table["experiment"], table["label"], strict=True))
    if groups is not None:
        for row in groups.to_dict("records"):
            for name in row["experiments"]:
                line[name] = str(row["group"])
    return line


def _curve_points(
    table: pd.DataFrame,
    histories: Mapping[tuple[str, str, str], pd.DataFrame],
    line_of: Mapping[str, str],
    dataset: str,
    model: str,
) -> list[dict[str, Any]]:
    """One run's curves as Vega-Lite rows (line, experiments, epoch, metric, value; low/high
    for a mean over seeds). A line averages its experiments that finished; one whose
    experiments all diverged shows their mean."""
    rows = table[(table["dataset"] == dataset) & (table["model"] == model)]
    members: dict[str, list[tuple[str, bool]]] = {}
    for row in rows.to_dict("records"):
        name = str(row["experiment"])
        if (name, dataset, model) in histories:
            members.setdefault(line_of[name], []).append((name, row["status"] in RESULTS))
    points = []
    for line, found in members.items():
        used = [name for name, ok in found if ok] or [name for name, _ in found]
        mean, low, high = mean_history([histories[(n, dataset, model)] for n in used])
        for i, epoch in enumerate(mean["epoch"] if len(mean) else []):
            for column, title in METRICS.items():
                value = _number(mean[column].iloc[i])
                if value is None:
                    continue
                point = {"line": line, "experiments": " ".join(used), "epoch": int(epoch)}
                point |= {"metric": title, "value": value}
                if len(used) > 1:
                    point["low"] = _number(low[column].iloc[i])
                    point["high"] = _number(high[column].iloc[i])
                points.append(point)
    return points


# --------------------------------------------------------------------------------------------
# the Vega-Lite specs


def _field(name: str, kind: str | None = None, **more: Any) -> dict[str, Any]:
    """An encoding channel: ``kind`` is q(uantitative), n(ominal) or o(rdinal)."""
    types = {"q": "quantitative", "n": "nominal", "o": "ordinal"}
    return {"field": name, **({"type": types[kind]} if kind else {}), **more}


def _highlight_opacity(selection: str | None = None) -> dict[str, Any]:
    """Full opacity for the highlighted line (a table row's, ``highlight``) and the legend's
    pick (``selection``); the rest dimmed. Nothing picked: every line full."""
    test: Any = "highlight == null || datum.line == highlight"
    if selection:
        test = {"and": [{"param": selection}, test]}
    return {"condition": {"test": test, "value": 1}, "value": _DIM}


def _line_scale(
    lines: Sequence[str], points: Sequence[Mapping[str, Any]], dash: bool = False
) -> dict[str, Any]:
    """Each line's colour (Okabe-Ito in the order of ``lines``, as in the PNGs, the same in
    every chart), or with ``dash`` solid for the palette's first round and dashed after;
    only the lines with ``points`` are in the chart's legend."""
    shown = {p["line"] for p in points}
    present = [line for line in lines if line in shown]
    if dash:
        style = [[1, 0] if lines.index(line) < len(OKABE_ITO) else [4, 2] for line in present]
    else:
        style = [OKABE_ITO[lines.index(line) % len(OKABE_ITO)] for line in present]
    return {"domain": present, "range": style}


def _faceted(
    title: str, points: list, facet: dict, columns: int, spec: dict, **more: Any
) -> dict[str, Any]:
    """A chart of one panel per ``facet`` value, with the ``highlight`` a table row sets."""
    return {
        "$schema": SCHEMA,
        "title": title,
        "data": {"values": points},
        "params": [{"name": "highlight", "value": None}],
        "facet": {"type": "nominal", "title": None, **facet},
        "columns": columns,
        **more,
        "spec": spec,
    }


def curves_spec(points: list[dict[str, Any]], title: str, lines: Sequence[str]) -> dict:
    """A run's 2x2 learning curves (one facet per metric, own y scales)."""
    legend = {"labelLimit": 400, "symbolOpacity": 1, "symbolStrokeWidth": 0}
    colour = _field("line", "n", title="experiment", scale=_line_scale(lines, points))
    colour["legend"] = legend
    x = _field("epoch", "q", axis={"tickMinStep": 1, "format": "d"})
    opacity = _highlight_opacity("pick")
    band = {
        "transform": [{"filter": "isValid(datum.low) && isValid(datum.high)"}],
        "mark": {"type": "area", "opacity": 0.2},
        "encoding": {"x": x, "y": _field("low", "q"), "y2": _field("high")}
        | {"color": colour, "opacity": opacity},
    }
    tooltip = [
        _field("line", title="experiment"),
        _field("experiments", title="runs"),
        _field("epoch", "q"),
        _field("metric"),
        _field("value", "q", format=".4f"),
    ]
    dash = _field("line", "n", scale=_line_scale(lines, points, dash=True), legend=None)
    line = {
        "params": [
            {"name": "pick", "select": {"type": "point", "fields": ["line"]}, "bind": "legend"}
        ],
        "mark": {"type": "line", "point": {"size": 30}},
        "encoding": {"x": x, "y": _field("value", "q", scale={"zero": False}, title=None)}
        | {"color": colour, "strokeDash": dash, "opacity": opacity, "tooltip": tooltip},
    }
    facet = {"field": "metric", "sort": list(METRICS.values())}
    spec = {"width": 280, "height": 170, "layer": [band, line]}
    return _faceted(title, points, facet, 2, spec, resolve={"scale": {"y": "independent"}})


def _order(values: Sequence[str]) -> dict[str, float]:
    """A sort key per param value: numbers by value, anything else by first appearance."""
    numbers = {v: _number(v) for v in values}
    if all(n is not None for n in numbers.values()):
        return {v: float(n) for v, n in numbers.items() if n is not None}
    return {v: float(i) for i, v in enumerate(dict.fromkeys(values))}


def params_spec(
    table: pd.DataFrame, params: Sequence[str], line_of: Mapping[str, str], lines: Sequence[str]
) -> dict | None:
    """Test accuracy against each param that differs: one small scatter per param, one
    colour per line as in the curves, one point shape per run. None without such params."""
    ok = table[table["status"].isin(RESULTS)]  # those that did not learn are at chance
    points = []
    for param in params:
        order = _order([str(v) for v in ok[param]])
        for row in ok.to_dict("records"):
            acc = _number(row["test_acc_pct"])
            if acc is not None:
                value, name = str(row[param]), str(row["experiment"])
                run = _run_title(str(row["dataset"]), str(row["model"]))
                points.append(
                    {"param": param, "value": value, "order": order[value], "experiment": name}
                    | {"line": line_of[name], "run": run, "acc": acc}
                )
    if not points:
        return None
    x = _field("value", "o", title=None, sort={"field": "order", "op": "min"})
    x["axis"] = {"labelAngle": 0}
    colour = _field("line", "n", title="experiment", scale=_line_scale(lines, points))
    colour["legend"] = {"labelLimit": 400}
    tooltip = [_field("experiment"), _field("param"), _field("value"), _field("run")]
    tooltip.append(_field("acc", "q", format=".2f", title="test acc (%)"))
    encoding = {
        "x": x,
        "y": _field("acc", "q", scale={"zero": False}, title="test accuracy (%)"),
        "color": colour,
        "shape": _field("run", "n", title="run"),
        "opacity": _highlight_opacity(),
        "tooltip": tooltip,
    }
    mark = {"type": "point", "filled": True, "size": 60}
    spec = {"width": 220, "height": 160, "mark": mark, "encoding": encoding}
    return _faceted(
        "Test accuracy (%) against each param that differs",
        points,
        {"field": "param", "sort": list(params)},
        3,
        spec,
        resolve={"scale": {"x": "independent"}},
    )


def intervals_spec(groups: pd.DataFrame, lines: Sequence[str]) -> dict | None:
    """Each configuration's mean test accuracy over its seeds with the 95% interval, per run."""
    points = []
    for row in groups.to_dict("records"):
        mean = _number(row["test_acc_mean_pct"])
        if mean is None:
            continue
        low, high = _number(row["test_acc_ci_low_pct"]), _number(row["test_acc_ci_high_pct"])
        points.append(
            {
                "line": str(row["group"]),
                "run": _run_title(str(row["dataset"]), str(row["model"])),
                "mean": mean,
                # one seed has no interval: no rule, and the tooltip shows none (not the mean)
                "low": low,
                "high": high,
                "n": int(row["n"]),
            }
        )
    if not points:
        return None
    tooltip = [
        _field("line", title="configuration"),
        _field("run"),
        _field("mean", "q", format=".2f"),
        _field("low", "q", format=".2f", title="95% CI low"),
        _field("high", "q", format=".2f", title="95% CI high"),
        _field("n", "q", title="seeds"),
    ]
    x = _field("low", "q", scale={"zero": False})
    x["title"] = "test accuracy (%), mean and 95% interval"
    encoding = {
        "y": _field("line", "n", title=None, sort=list(lines)),
        "color": _field("line", "n", scale=_line_scale(lines, points), legend=None),
        "opacity": _highlight_opacity(),
        "tooltip": tooltip,
    }
    layer = [
        {"mark": "rule", "encoding": {"x": x, "x2": _field("high")}},
        {
            "mark": {"type": "point", "filled": True, "size": 60},
            "encoding": {"x": _field("mean", "q")},
        },
    ]
    spec = {"width": 300, "encoding": encoding, "layer": layer}
    return _faceted("Test accuracy over seeds", points, {"field": "run"}, 2, spec)


# --------------------------------------------------------------------------------------------
# tables


def _cell(text: str, sort: float | str | None = None) -> str:
    attr = "" if sort is None else f' data-sort="{html.escape(str(sort))}"'
    return f"<td{attr}>{html.escape(text)}</td>"


def _table(columns: Sequence[tuple[str, str]], rows: Sequence[str], attrs: str) -> str:
    """A table whose header buttons sort it (``kind`` of a column: num or text)."""
    head = "".join(
        f'<th data-type="{kind}"><button type="button">{html.escape(name)}</button></th>'
        for name, kind in columns
    )
    table = f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="wide">{table}</div>'


def _run_cell(run: pd.DataFrame) -> tuple[str, float | None]:
    """A run's :func:`accuracy_text` and its sort key."""
    if run.empty:
        return "not run", None
    status, acc = str(run["status"].iloc[0]), _number(run["test_acc_pct"].iloc[0])
    return accuracy_text(status, acc), acc if status in RESULTS else None


def _mean_cell(group: Mapping[str, Any]) -> tuple[str, float | None]:
    mean = _number(group.get("test_acc_mean_pct"))
    if mean is None:
        return _DASH, None
    low, high = _fmt_float(group["test_acc_ci_low_pct"]), _fmt_float(group["test_acc_ci_high_pct"])
    return f"{mean:.2f} [{low}, {high}] (n={int(group['n'])})", mean


def _time_cell(own: pd.DataFrame) -> tuple[str, float | None]:
    """The experiment's training time; a run DVC restored from its cache has none of its
    own, and never gets another run's."""
    seconds = [_number(v) for v in own[own["status"] != "failed"]["train_seconds"]]
    if not seconds:
        return _DASH, None
    if None in seconds:
        return NOT_MEASURED, None
    total = sum(s for s in seconds if s is not None)
    return f"{total:.1f}", total


def experiment_rows(
    table: pd.DataFrame, varied: Sequence[str], groups: pd.DataFrame | None
) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """The experiments table: its columns ``(name, num|text)`` and one row per experiment
    (``line``: the line it is drawn in; ``cells``: ``(text, sort key or None)``)."""
    runs = list(dict.fromkeys(zip(table["dataset"], table["model"], strict=True)))
    line_of = _lines(table, groups)
    stats: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in [] if groups is None else groups.to_dict("records"):
        for name in row["experiments"]:
            stats[(name, row["dataset"], row["model"])] = row
    # a param sorts by value where every experiment's is a number, else as text (null, [a, b])
    numeric = {k: all(_number(v) is not None for v in table[k]) for k in varied}
    columns = [("experiment", "text"), *[(k, "num" if numeric[k] else "text") for k in varied]]
    for dataset, model in runs:
        columns.append((f"{_run_title(dataset, model)}: test acc (%)", "num"))
        if groups is not None:
            columns.append((f"{_run_title(dataset, model)}: mean over seeds [95% CI]", "num"))
    columns += [("status", "text"), ("train time (s)", "num")]
    rows = []
    for name in dict.fromkeys(table["experiment"]):
        own = table[table["experiment"] == name]
        first = own.iloc[0]
        cells: list[tuple[str, Any]] = [(str(name), None)]
        cells += [(str(first[k]), _number(first[k]) if numeric[k] else None) for k in varied]
        statuses = []
        for dataset, model in runs:
            run = own[(own["dataset"] == dataset) & (own["model"] == model)]
            cells.append(_run_cell(run))
            if not run.empty and run["status"].iloc[0] != "ok":
                statuses.append(f"{model}-{dataset}: {run['status'].iloc[0]}")
            if groups is not None:
                cells.append(_mean_cell(stats.get((str(name), dataset, model)) or {}))
        cells.append(("ok" if not statuses else "; ".join(statuses), None))
        cells.append(_time_cell(own))
        rows.append({"experiment": str(name), "line": line_of[str(name)], "cells": cells})
    return columns, rows


def _experiments_table(columns: list[tuple[str, str]], rows: list[dict[str, Any]]) -> str:
    body = [
        f'<tr data-line="{html.escape(row["line"])}" title="click: highlight its lines">'
        + "".join(_cell(text, sort) for text, sort in row["cells"])
        + "</tr>"
        for row in rows
    ]
    return _table(columns, body, 'id="experiments" class="sortable"')


def _frame_table(frame: pd.DataFrame) -> str:
    """A statistics table (groups, differences, tuned) as it is in its CSV, sortable."""
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    columns = [
        (str(c), "num" if n else "text") for c, n in zip(frame.columns, numeric, strict=True)
    ]
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for is_number, value in zip(numeric, row, strict=True):
            if is_number:
                number = _number(value)
                if number is None:
                    text = _DASH
                else:
                    text = f"{number:g}" if float(number).is_integer() else f"{number:.2f}"
                cells.append(_cell(text, number))
            else:
                cells.append(_cell(_DASH if pd.isna(value) else str(value)))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return _table(columns, body, 'class="sortable"')


# --------------------------------------------------------------------------------------------
# the page


def _asset(kind: str) -> str:
    """The page's stylesheet (css) or script (js): sorting, filtering, and a clicked row
    passed to the charts' ``highlight`` param."""
    return (resources.files(__package__) / f"experiment_page.{kind}").read_text(encoding="utf-8")


def _json_script(data: Any) -> str:
    """JSON inside a ``<script>``: ``<`` escaped, so no text in it can close the element."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c")


def page_data(
    table: pd.DataFrame,
    varied: Sequence[str],
    histories: Mapping[tuple[str, str, str], pd.DataFrame],
    groups: pd.DataFrame | None = None,
    by: Sequence[str] | None = None,
) -> tuple[dict[str, dict], list[tuple[str, str]], list[dict[str, Any]]]:
    """The page's Vega-Lite specs (by chart id) and its experiments table (columns, rows)."""
    line_of = _lines(table, groups)
    lines = list(dict.fromkeys(line_of[str(n)] for n in table["experiment"]))
    specs: dict[str, dict | None] = {}
    runs = list(dict.fromkeys(zip(table["dataset"], table["model"], strict=True)))
    seeds = "" if groups is None else " (mean over seeds, band: their range)"
    for i, (dataset, model) in enumerate(runs):
        points = _curve_points(table, histories, line_of, dataset, model)
        if points:
            specs[f"curves-{i}"] = curves_spec(points, _run_title(dataset, model) + seeds, lines)
    shown = list(varied if by is None else by)
    specs["params"] = params_spec(table, shown, line_of, lines) if shown else None
    specs["intervals"] = None if groups is None else intervals_spec(groups, lines)
    columns, rows = experiment_rows(table, varied, groups)
    return {k: spec for k, spec in specs.items() if spec is not None}, columns, rows


def experiment_page(
    table: pd.DataFrame,
    varied: Sequence[str],
    histories: Mapping[tuple[str, str, str], pd.DataFrame],
    groups: pd.DataFrame | None = None,
    by: Sequence[str] | None = None,
    sections: Sequence[tuple[str, pd.DataFrame]] = (),
) -> str:
    """The whole page as one HTML string: ``table`` is :func:`reporting.experiment_table`'s,
    ``histories`` maps ``(experiment, dataset, model)`` to a run's history; with several
    seeds, lines are ``groups``' configurations (stats.group_table), told apart by ``by``;
    ``sections`` are further tables (title, frame)."""
    specs, columns, rows = page_data(table, varied, histories, groups, by)
    what = ", ".join(varied) if varied else "nothing (rows are named by experiment)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        "<title>Experiments compared</title>",
        f"<style>\n{_asset('css')}</style>",
        vega_script(),
        "</head><body>",
        "<h1>Experiments compared</h1>",
        f'<p class="note">What varies: {html.escape(what)}. Test accuracy in percent, with the '
        "checkpoint of the best validation accuracy. Click a column's header to sort, a row "
        "to highlight its lines in the charts (again to clear); type to filter.</p>",
        '<p><input type="search" data-filter="experiments" placeholder="filter: words in a row, '
        'e.g. sgd ok" aria-label="filter the experiments"></p>',
        _experiments_table(columns, rows),
    ]
    curves = [k for k in specs if k.startswith("curves-")]
    if curves:
        parts.append("<h2>Learning curves</h2>")
        parts.append(
            '<p class="note">Hover a point for its experiment, epoch and value; click a legend '
            "entry to highlight a line (shift-click for several).</p>"
        )
        parts += [f'<div class="chart" id="{k}"></div>' for k in curves]
    for key, title in (
        ("params", "Params against test accuracy"),
        ("intervals", "Means over seeds"),
    ):
        if key in specs:
            parts += [f"<h2>{title}</h2>", f'<div class="chart" id="{key}"></div>']
    for title, frame in sections:
        parts += [f"<h2>{html.escape(title)}</h2>", _frame_table(frame)]
    parts += [
        f'<script type="application/json" id="specs">{_json_script(specs)}</script>',
        f"<script>\n{_asset('js')}</script>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)
