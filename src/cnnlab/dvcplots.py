"""DVC's plots rendered to SVG on this machine, so they can be viewed with no internet.

``dvc plots show`` / ``dvc plots diff`` write an HTML page that loads vega, vega-lite and
vega-embed from a CDN: offline it is blank. Their ``--json`` output holds the same filled-in
Vega-Lite specs; vl-convert (a PyPI wheel that bundles the Vega libraries in a Rust/Deno
binary, no browser, no network) turns each into a static SVG, and one HTML page holds them
inline. What is lost is interactivity (hover, zoom, the smoothing slider).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["render_specs", "svg_file_name"]


def svg_file_name(plot_id: str) -> str:
    """``plots/train/lenet-mnist/plots/metrics/val/acc.tsv`` -> ``train_lenet-mnist_..._acc.svg``
    (readable, unique per plot id, safe on every file system)."""
    name = plot_id.removeprefix("plots/")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") + ".svg"


def _whole_epochs(spec: Any) -> Any:
    """DVCLive's x is the epoch, counted in whole steps: integer ticks titled "epoch" (the
    default axis of a few epochs ticks at 1.0, 1.2, ...). Walks layers and facets."""
    if isinstance(spec, dict):
        x = (spec.get("encoding") or {}).get("x")
        if isinstance(x, dict) and x.get("field") == "step":
            x["axis"] = {**(x.get("axis") or {}), "tickMinStep": 1, "format": "d"}
            x["title"] = "epoch"
        for value in spec.values():
            _whole_epochs(value)
    elif isinstance(spec, list):
        for value in spec:
            _whole_epochs(value)
    return spec


def render_specs(shown: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    """SVGs and an HTML page from the output of ``dvc plots show/diff --json``.

    Returns ``({file name: svg text}, html page)``; the page embeds every SVG, so it is one
    self-contained file. Plots DVC could not build (a revision without the file) are listed
    with DVC's message rather than dropped silently.
    """
    import vl_convert

    svgs: dict[str, str] = {}
    sections: list[str] = []
    for plot_id, entries in (shown.get("data") or {}).items():
        for entry in entries:
            if entry.get("type") != "vega":
                continue
            svg = vl_convert.vegalite_to_svg(_whole_epochs(entry["content"]))
            name = svg_file_name(plot_id)
            svgs[name] = svg
            revisions = ", ".join(entry.get("revisions") or [])
            sections.append(
                f'<section><h2>{html.escape(plot_id)}</h2><p class="revs">{html.escape(revisions)}'
                f"</p>\n{svg}\n</section>"
            )
    errors = shown.get("errors") or []
    if errors:
        items = "".join(f"<li>{html.escape(str(e))}</li>" for e in errors)
        sections.append(f"<section><h2>Not rendered</h2><ul>{items}</ul></section>")
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>DVC plots</title>'
        "<style>body{font-family:sans-serif;margin:1em}section{display:inline-block;"
        "vertical-align:top;margin:0 1em 1em 0}h2{font-size:0.9em}.revs{color:#555;"
        "font-size:0.8em}</style></head><body>\n<h1>DVC plots</h1>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
    return svgs, page
