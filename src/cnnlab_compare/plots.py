"""Render DVC's plots to SVG files and one self-contained static HTML page.

    cnnlab-plots                 # the workspace (`dvc plots show`)
    cnnlab-plots main sgd adam   # these revisions (`dvc plots diff`)

Writes <out>/index.html and one .svg per plot (default out: reports/dvc-plots); what DVC
could not load is printed on stderr and listed on the page, one line each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnlab.files import check_output_folder, mark_output_folder
from cnnlab_compare import console

OUT = Path("reports/dvc-plots")
PROG = "cnnlab-plots"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="*", help="revisions or experiment names to compare")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    check_output_folder(args.out)

    from cnnlab.files import atomic_directory
    from cnnlab_compare.dvcplots import not_rendered, render_specs
    from cnnlab_compare.experiments import dvc_json

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


if __name__ == "__main__":
    run()
