"""The experiments page: one self-contained HTML file to explore a cross-experiment comparison.

cnnlab-compare writes it as ``index.html`` next to its Markdown and CSV:

- a table with one row per experiment (the params that differ, each run's test accuracy,
  the mean of its configuration over seeds with the 95% interval, status, training time),
  sorted by a click on a column's header and filtered by the words typed above it;
- the learning curves of each run (dataset and model), 2x2 like the PNGs: hovering a point
  shows the experiment, epoch and value; a click on a legend entry or a table row
  highlights that line; configurations run with several seeds are a mean line and the band
  their seeds span;
- the test accuracy against each param that differs (small multiples), and the means over
  seeds with their intervals;
- the seed, difference and tuned tables of the Markdown page, sortable too.

The charts are Vega-Lite specs built here and drawn by vega-embed, from the bundle of the
pinned vl-convert wheel that the DVC template also inlines (cnnlab.webpage). The page's
Content-Security-Policy allows no request at all, so it looks the same offline. The only
hand-written JavaScript sorts and filters the tables and passes a clicked row to the charts:
a table library would be more code than that.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cnnlab.figures import OKABE_ITO
from cnnlab.reporting import dataset_title, model_title
from cnnlab.webpage import VEGA_LITE_VERSION, vega_script
from cnnlab_compare.reporting import NOT_MEASURED
from cnnlab_compare.stats import DID_NOT_LEARN, RESULTS, mean_history

__all__ = ["experiment_page", "page_data"]

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
_DASH = "–"


def _number(value: Any) -> float | None:
    """A finite float, or None (NaN, missing, text): what JSON and the charts can hold."""
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
    """One run's curves as Vega-Lite rows: line, experiments, epoch, metric, value, and
    low/high where the line is a mean over several seeds. A line averages the experiments
    that finished (``ok``); one whose experiments all diverged shows their mean."""
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
        band = len(used) > 1
        for i, epoch in enumerate(mean["epoch"] if len(mean) else []):
            for column, title in METRICS.items():
                value = _number(mean[column].iloc[i])
                if value is None:
                    continue
                point = {
                    "line": line,
                    "experiments": " ".join(used),
                    "epoch": int(epoch),
                    "metric": title,
                    "value": value,
                }
                if band:
                    point["low"] = _number(low[column].iloc[i])
                    point["high"] = _number(high[column].iloc[i])
                points.append(point)
    return points


def _highlight_opacity(selection: str | None = None) -> dict[str, Any]:
    """Full opacity for the highlighted line (a table row's, ``highlight``) and the legend's
    pick (``selection``); the rest dimmed. Nothing picked: every line full."""
    test: Any = "highlight == null || datum.line == highlight"
    if selection:
        test = {"and": [{"param": selection}, test]}
    return {"condition": {"test": test, "value": 1}, "value": _DIM}


def _present(lines: Sequence[str], points: Sequence[Mapping[str, Any]]) -> list[str]:
    shown = {p["line"] for p in points}
    return [line for line in lines if line in shown]


def _colour(lines: Sequence[str], present: Sequence[str]) -> dict[str, Any]:
    """A line's colour, the same in every chart and as in the PNGs (Okabe-Ito, in the order
    of ``lines``); only the ``present`` lines are in the chart's legend."""
    return {
        "domain": list(present),
        "range": [OKABE_ITO[lines.index(line) % len(OKABE_ITO)] for line in present],
    }


def _dash(lines: Sequence[str], present: Sequence[str]) -> dict[str, Any]:
    """Solid for the palette's first round of colours, dashed after, as in the PNGs."""
    return {
        "domain": list(present),
        "range": [[1, 0] if lines.index(line) < len(OKABE_ITO) else [4, 2] for line in present],
    }


def curves_spec(points: list[dict[str, Any]], title: str, lines: Sequence[str]) -> dict:
    """A run's 2x2 learning curves (one facet per metric, own y scales)."""
    present = _present(lines, points)
    colour = {
        "field": "line",
        "type": "nominal",
        "title": "experiment",
        "scale": _colour(lines, present),
        "legend": {"labelLimit": 400, "symbolOpacity": 1, "symbolStrokeWidth": 0},
    }
    x = {"field": "epoch", "type": "quantitative", "axis": {"tickMinStep": 1, "format": "d"}}
    tooltip = [
        {"field": "line", "title": "experiment"},
        {"field": "experiments", "title": "runs"},
        {"field": "epoch", "type": "quantitative"},
        {"field": "metric"},
        {"field": "value", "type": "quantitative", "format": ".4f"},
    ]
    band = {
        "transform": [{"filter": "isValid(datum.low) && isValid(datum.high)"}],
        "mark": {"type": "area", "opacity": 0.2},
        "encoding": {
            "x": x,
            "y": {"field": "low", "type": "quantitative"},
            "y2": {"field": "high"},
            "color": colour,
            "opacity": _highlight_opacity("pick"),
        },
    }
    line = {
        "params": [
            {"name": "pick", "select": {"type": "point", "fields": ["line"]}, "bind": "legend"}
        ],
        "mark": {"type": "line", "point": {"size": 30}},
        "encoding": {
            "x": x,
            "y": {
                "field": "value",
                "type": "quantitative",
                "scale": {"zero": False},
                "title": None,
            },
            "color": colour,
            "strokeDash": {
                "field": "line",
                "type": "nominal",
                "scale": _dash(lines, present),
                "legend": None,
            },
            "opacity": _highlight_opacity("pick"),
            "tooltip": tooltip,
        },
    }
    return {
        "$schema": SCHEMA,
        "title": title,
        "data": {"values": points},
        "params": [{"name": "highlight", "value": None}],
        "facet": {
            "field": "metric",
            "type": "nominal",
            "title": None,
            "sort": list(METRICS.values()),
        },
        "columns": 2,
        "resolve": {"scale": {"y": "independent"}},
        "spec": {"width": 280, "height": 170, "layer": [band, line]},
    }


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
            if acc is None:
                continue
            points.append(
                {
                    "param": param,
                    "value": str(row[param]),
                    "order": order[str(row[param])],
                    "experiment": str(row["experiment"]),
                    "line": line_of[str(row["experiment"])],
                    "run": _run_title(str(row["dataset"]), str(row["model"])),
                    "acc": acc,
                }
            )
    if not points:
        return None
    return {
        "$schema": SCHEMA,
        "title": "Test accuracy (%) against each param that differs",
        "data": {"values": points},
        "params": [{"name": "highlight", "value": None}],
        "facet": {"field": "param", "type": "nominal", "title": None, "sort": list(params)},
        "columns": 3,
        "resolve": {"scale": {"x": "independent"}},
        "spec": {
            "width": 220,
            "height": 160,
            "mark": {"type": "point", "filled": True, "size": 60},
            "encoding": {
                "x": {
                    "field": "value",
                    "type": "ordinal",
                    "title": None,
                    "sort": {"field": "order", "op": "min"},
                    "axis": {"labelAngle": 0},
                },
                "y": {
                    "field": "acc",
                    "type": "quantitative",
                    "scale": {"zero": False},
                    "title": "test accuracy (%)",
                },
                "color": {
                    "field": "line",
                    "type": "nominal",
                    "title": "experiment",
                    "scale": _colour(lines, _present(lines, points)),
                    "legend": {"labelLimit": 400},
                },
                "shape": {"field": "run", "type": "nominal", "title": "run"},
                "opacity": _highlight_opacity(),
                "tooltip": [
                    {"field": "experiment"},
                    {"field": "param"},
                    {"field": "value"},
                    {"field": "run"},
                    {
                        "field": "acc",
                        "type": "quantitative",
                        "format": ".2f",
                        "title": "test acc (%)",
                    },
                ],
            },
        },
    }


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
                "low": mean if low is None else low,
                "high": mean if high is None else high,
                "n": int(row["n"]),
            }
        )
    if not points:
        return None
    y = {"field": "line", "type": "nominal", "title": None, "sort": list(lines)}
    tooltip = [
        {"field": "line", "title": "configuration"},
        {"field": "run"},
        {"field": "mean", "format": ".2f", "type": "quantitative"},
        {"field": "low", "format": ".2f", "type": "quantitative", "title": "95% CI low"},
        {"field": "high", "format": ".2f", "type": "quantitative", "title": "95% CI high"},
        {"field": "n", "type": "quantitative", "title": "seeds"},
    ]
    x = {
        "field": "low",
        "type": "quantitative",
        "scale": {"zero": False},
        "title": "test accuracy (%), mean and 95% interval",
    }
    colour = {
        "field": "line",
        "type": "nominal",
        "scale": _colour(lines, _present(lines, points)),
        "legend": None,
    }
    return {
        "$schema": SCHEMA,
        "title": "Test accuracy over seeds",
        "data": {"values": points},
        "params": [{"name": "highlight", "value": None}],
        "facet": {"field": "run", "type": "nominal", "title": None},
        "columns": 2,
        "spec": {
            "width": 300,
            "encoding": {
                "y": y,
                "color": colour,
                "opacity": _highlight_opacity(),
                "tooltip": tooltip,
            },
            "layer": [
                {"mark": "rule", "encoding": {"x": x, "x2": {"field": "high"}}},
                {
                    "mark": {"type": "point", "filled": True, "size": 60},
                    "encoding": {"x": {"field": "mean", "type": "quantitative"}},
                },
            ],
        },
    }


# --------------------------------------------------------------------------------------------
# tables


def _acc_text(value: Any) -> str:
    number = _number(value)
    return _DASH if number is None else f"{number:.2f}"


def _cell(text: str, sort: float | str | None = None) -> str:
    attr = "" if sort is None else f' data-sort="{html.escape(str(sort))}"'
    return f"<td{attr}>{html.escape(text)}</td>"


def _header(columns: Sequence[tuple[str, str]]) -> str:
    """Headers whose buttons sort the table; ``kind`` is num or text."""
    cells = "".join(
        f'<th data-type="{kind}"><button type="button">{html.escape(name)}</button></th>'
        for name, kind in columns
    )
    return f"<thead><tr>{cells}</tr></thead>"


def experiment_rows(
    table: pd.DataFrame, varied: Sequence[str], groups: pd.DataFrame | None
) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """The experiments table: its columns ``(name, num|text)`` and one row per experiment
    (``line``: the line it is drawn in; ``cells``: ``(text, sort key or None)``)."""
    runs = list(dict.fromkeys(zip(table["dataset"], table["model"], strict=True)))
    line_of = _lines(table, groups)
    stats: dict[tuple[str, str, str], dict[str, Any]] = {}
    if groups is not None:
        for row in groups.to_dict("records"):
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
            if run.empty:
                cells.append(("not run", None))
            else:
                status = str(run["status"].iloc[0])
                acc = _number(run["test_acc_pct"].iloc[0])
                if status == "ok":
                    cells.append((_acc_text(acc), acc))
                elif status == DID_NOT_LEARN:  # a number, flagged: chance level is a result
                    cells.append((f"{_acc_text(acc)} ({status})", acc))
                else:
                    cells.append((status, None))
                if status != "ok":
                    statuses.append(f"{model}-{dataset}: {status}")
            if groups is not None:
                group = stats.get((str(name), dataset, model)) or {}
                mean = _number(group.get("test_acc_mean_pct"))
                if mean is None:
                    cells.append((_DASH, None))
                else:
                    low = _acc_text(group["test_acc_ci_low_pct"])
                    high = _acc_text(group["test_acc_ci_high_pct"])
                    cells.append((f"{mean:.2f} [{low}, {high}] (n={int(group['n'])})", mean))
        cells.append(("ok" if not statuses else "; ".join(statuses), None))
        # a run DVC restored from its cache has no time of its own: never another run's
        seconds = [_number(v) for v in own[own["status"] != "failed"]["train_seconds"]]
        total = sum(s for s in seconds if s is not None) if None not in seconds else None
        if not seconds:
            cells.append((_DASH, None))
        elif total is None:
            cells.append((NOT_MEASURED, None))
        else:
            cells.append((f"{total:.1f}", total))
        rows.append({"experiment": str(name), "line": line_of[str(name)], "cells": cells})
    return columns, rows


def _experiments_table(columns: list[tuple[str, str]], rows: list[dict[str, Any]]) -> str:
    body = "".join(
        f'<tr data-line="{html.escape(row["line"])}" title="click: highlight its lines">'
        + "".join(_cell(text, sort) for text, sort in row["cells"])
        + "</tr>"
        for row in rows
    )
    return (
        '<div class="wide"><table id="experiments" class="sortable">'
        f"{_header(columns)}<tbody>{body}</tbody></table></div>"
    )


def _frame_table(frame: pd.DataFrame) -> str:
    """A statistics table (groups, differences, tuned) as it is in its CSV, sortable."""
    columns = [
        (str(c), "num" if pd.api.types.is_numeric_dtype(frame[c]) else "text")
        for c in frame.columns
    ]
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for (_, kind), value in zip(columns, row, strict=True):
            if kind == "num":
                number = _number(value)
                text = (
                    _DASH
                    if number is None
                    else (f"{number:g}" if float(number).is_integer() else f"{number:.2f}")
                )
                cells.append(_cell(text, number))
            else:
                cells.append(_cell(_DASH if pd.isna(value) else str(value)))
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<table class="sortable">{_header(columns)}<tbody>{"".join(body)}</tbody></table>'
    return f'<div class="wide">{table}</div>'


# --------------------------------------------------------------------------------------------
# the page

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.note { color: #555; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
td[data-sort] { text-align: right; font-variant-numeric: tabular-nums; }
th button { font: inherit; font-weight: bold; border: 0; background: none; cursor: pointer;
  padding: 0; text-align: left; }
th[aria-sort=ascending] button::after { content: " \\25B2"; }
th[aria-sort=descending] button::after { content: " \\25BC"; }
#experiments tbody tr { cursor: pointer; }
#experiments tbody tr:hover { background: #f3f6fa; }
#experiments tbody tr.picked { background: #fff3c4; }
input[type=search] { font: inherit; padding: 0.2em 0.4em; width: 24em; }
.chart { margin: 0.5em 0 1.5em; }
.wide { overflow-x: auto; }
"""

#: Sorting, filtering, and a clicked row passed to the charts' ``highlight`` param.
_SCRIPT = """
(function () {
  "use strict";
  const specs = JSON.parse(document.getElementById("specs").textContent);
  const views = [];
  const options = {renderer: "canvas",
                   actions: {export: true, source: false, compiled: false, editor: false}};
  Promise.all(Object.keys(specs).map((id) => vegaEmbed("#" + id, specs[id], options)
    .then((result) => { views.push(result.view); })))
    .then(() => { document.body.dataset.rendered = String(Math.round(performance.now())); },
          (error) => { document.body.dataset.error = String(error); throw error; });

  for (const table of document.querySelectorAll("table.sortable")) {
    const body = table.tBodies[0];
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach((head, column) => head.querySelector("button").addEventListener("click", () => {
      const ascending = head.getAttribute("aria-sort") !== "ascending";
      heads.forEach((h) => h.removeAttribute("aria-sort"));
      head.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const numeric = head.dataset.type === "num";
      const key = (row) => {
        const cell = row.cells[column];
        if (!numeric) return cell.textContent;
        const text = cell.dataset.sort;
        return text === undefined || text === "" ? NaN : Number(text);
      };
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (numeric) {  // blanks (failed, diverged, not run) last either way
          if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y);
          return ascending ? x - y : y - x;
        }
        return ascending ? x.localeCompare(y) : y.localeCompare(x);
      });
      body.append(...rows);
    }));
  }

  for (const input of document.querySelectorAll("input[data-filter]")) {
    const rows = document.getElementById(input.dataset.filter).tBodies[0].rows;
    input.addEventListener("input", () => {
      const words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
      for (const row of rows) {
        const text = row.textContent.toLowerCase();
        row.hidden = !words.every((word) => text.includes(word));
      }
    });
  }

  let picked = null;
  const experimentRows = document.querySelectorAll("#experiments tbody tr");
  for (const row of experimentRows) {
    row.addEventListener("click", () => {
      picked = picked === row.dataset.line ? null : row.dataset.line;
      for (const r of experimentRows) {
        r.classList.toggle("picked", picked !== null && r.dataset.line === picked);
      }
      for (const view of views) view.signal("highlight", picked).runAsync();
    });
  }
})();
"""


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
    specs: dict[str, dict] = {}
    runs = list(dict.fromkeys(zip(table["dataset"], table["model"], strict=True)))
    for i, (dataset, model) in enumerate(runs):
        points = _curve_points(table, histories, line_of, dataset, model)
        if points:
            title = _run_title(dataset, model) + (
                " (mean over seeds, band: their range)" if groups is not None else ""
            )
            specs[f"curves-{i}"] = curves_spec(points, title, lines)
    shown = list(varied if by is None else by)
    params = params_spec(table, shown, line_of, lines) if shown else None
    if params is not None:
        specs["params"] = params
    if groups is not None:
        intervals = intervals_spec(groups, lines)
        if intervals is not None:
            specs["intervals"] = intervals
    columns, rows = experiment_rows(table, varied, groups)
    return specs, columns, rows


def experiment_page(
    table: pd.DataFrame,
    varied: Sequence[str],
    histories: Mapping[tuple[str, str, str], pd.DataFrame],
    groups: pd.DataFrame | None = None,
    by: Sequence[str] | None = None,
    sections: Sequence[tuple[str, pd.DataFrame]] = (),
) -> str:
    """The whole page as one HTML string.

    ``table`` is :func:`cnnlab.reporting.experiment_table`'s; ``histories`` maps
    ``(experiment, dataset, model)`` to a run's history (cnnlab.history); ``groups`` is
    :func:`cnnlab_compare.stats.group_table`'s when some configuration has several seeds (lines are
    then configurations, ``by`` the params that tell them apart); ``sections`` are further
    tables (title, frame), e.g. the differences and the tuned choice.
    """
    specs, columns, rows = page_data(table, varied, histories, groups, by)
    what = ", ".join(varied) if varied else "nothing (rows are named by experiment)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        "<title>Experiments compared</title>",
        f"<style>{_STYLE}</style>",
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
    if "params" in specs:
        parts += ["<h2>Params against test accuracy</h2>", '<div class="chart" id="params"></div>']
    if "intervals" in specs:
        parts += ["<h2>Means over seeds</h2>", '<div class="chart" id="intervals"></div>']
    for title, frame in sections:
        parts += [f"<h2>{html.escape(title)}</h2>", _frame_table(frame)]
    parts += [
        f'<script type="application/json" id="specs">{_json_script(specs)}</script>',
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)
