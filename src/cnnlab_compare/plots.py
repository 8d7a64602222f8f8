"""Render DVC's plots to SVG files and one self-contained static HTML page.

    cnnlab-plots                 # the workspace (`dvc plots show`)
    cnnlab-plots main sgd adam   # these revisions (`dvc plots diff`)

Writes <out>/index.html and one .svg per plot (default out: reports/dvc-plots); what DVC
could not load is printed on stderr and listed on the page, one line each.
``dvc plots show/diff --json`` gives the filled-in Vega-Lite specs; vl-convert (Vega in a
wheel: no browser, no network) turns each into an SVG.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnlab.files import check_output_folder, mark_output_folder
from cnnlab_compare import console

OUT = Path("reports/dvc-plots")
PROG = "cnnlab-plots"


def svg_file_name(plot_id: str) -> str:
    """``plots/train/lenet-mnist/plots/metrics/val/acc.tsv`` -> ``train_lenet-mnist_..._acc.svg``
    (readable, unique per plot id, safe on every file system)."""
    name = plot_id.removeprefix("plots/")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") + ".svg"


def _whole_epochs(spec: Any) -> Any:
    """DVCLive's x (``step``) is the epoch: integer ticks titled "epoch", in every layer and
    facet (the default axis of a few epochs ticks at 1.0, 1.2, ...)."""
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


def _revision(rev: str) -> str:
    return "the workspace" if rev == "workspace" else f"revision {rev!r}"


def _fetch_hint(rev: str) -> str:
    if rev == "workspace":
        return "`dvc repro` makes them, `dvc pull` fetches them"
    return f"`dvc exp pull <remote> {rev}` fetches an experiment's, `dvc pull` a commit's"


def _error_note(error: Mapping[str, Any]) -> str:
    """One of DVC's ``errors`` entries (name, rev, source, type, msg) as a sentence."""
    rev = str(error.get("rev") or "workspace")
    where = _revision(rev)
    path = error.get("source") or error.get("name")
    if path:
        where += f", {path}"
    message = re.sub(r"^\[Errno \d+\] ", "", str(error.get("msg") or "")).strip()
    if error.get("type") == "FileNotFoundError" and "No storage files available" in message:
        return f"{where}: not in this machine's DVC cache; {_fetch_hint(rev)}"
    if error.get("type") == "FileNotFoundError":
        return f"{where}: no such file in that revision"
    kind = str(error.get("type") or "error")
    return f"{where}: {kind}: {message}" if message else f"{where}: {kind}"


def not_rendered(shown: Mapping[str, Any], revisions: Sequence[str]) -> list[str]:
    """What ``dvc plots show/diff --json`` could not load, one line each: DVC's errors, and
    each of ``revisions`` that no plot and no error mentions (a plots directory not in the
    cache leaves no trace in the JSON; DVC says so only on stderr)."""
    errors = list(shown.get("errors") or [])
    notes = list(dict.fromkeys(_error_note(e) for e in errors))
    seen = {str(e.get("rev") or "workspace") for e in errors}
    for entries in (shown.get("data") or {}).values():
        for entry in entries:
            seen.update(entry.get("revisions") or [])
    for rev in dict.fromkeys(revisions):
        if rev not in seen:
            notes.append(
                f"{_revision(rev)}: DVC found none of its plots: it has none, or its outputs "
                f"are not in this machine's DVC cache; {_fetch_hint(rev)}"
            )
    return notes


def render_specs(
    shown: Mapping[str, Any], revisions: Sequence[str] = ()
) -> tuple[dict[str, str], str]:
    """``({file name: svg text}, html page)`` from ``dvc plots show/diff --json``'s output;
    the page embeds every SVG and lists under "Not rendered" what DVC could not load."""
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
            revs = ", ".join(entry.get("revisions") or [])
            sections.append(
                f'<section><h2>{html.escape(plot_id)}</h2><p class="revs">{html.escape(revs)}'
                f"</p>\n{svg}\n</section>"
            )
    notes = not_rendered(shown, revisions)
    if notes:
        items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="*", help="revisions or experiment names to compare")
    parser.add_argument("--out", type=Path, help=f"output folder (default: the project's {OUT})")
    args = parser.parse_args(argv)
    if args.out is not None:
        check_output_folder(args.out)

    from cnnlab.files import atomic_directory
    from cnnlab_compare.experiments import dvc_json, project_root

    if args.out is None:  # the project's reports/, wherever this runs from
        args.out = Path(os.path.relpath(project_root(Path(".")) / OUT))
        check_output_folder(args.out)

    command = ["plots", "diff", *args.revs] if args.revs else ["plots", "show"]
    shown = dvc_json(command, Path("."))
    revisions = args.revs or ["workspace"]
    notes = not_rendered(shown, revisions)
    svgs, page = render_specs(shown, revisions)
    if not svgs:
        if notes:
            sys.exit("error: DVC found no plots to render:" + "".join(f"\n  {n}" for n in notes))
        sys.exit("error: DVC found no plots to render: run `dvc repro` (or an experiment) first")
    for note in notes:
        print(f"note: not rendered: {note}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(args.out) as out:
        for name, svg in svgs.items():
            (out / name).write_text(svg)
        (out / "index.html").write_text(page)
        mark_output_folder(out)
    print(f"{len(svgs)} plots -> {args.out}/index.html")


def run(argv: list[str] | None = None) -> None:
    """The console script (pyproject's ``[project.scripts]``)."""
    console(main, argv)
