"""Vega, Vega-Lite and vega-embed inline in an HTML page, so its charts draw with no network.

DVC's ``dvc plots show`` / ``dvc plots diff`` page loads the three libraries from a CDN
(dvc-render's ``VegaRenderer.SCRIPTS``) and stays blank offline. The same libraries come in
the pinned vl-convert-python wheel: ``vl_convert.javascript_bundle()`` returns them as one
script with no imports, which this module inlines into

- the HTML template DVC fills (``plots.html_template`` in .dvc/config points at
  :data:`DVC_TEMPLATE`); it has no ``{scripts}`` placeholder, so DVC's CDN tags are left out;
- the experiments page of cnnlab-compare (cnnlab_compare.experiment_page).

The template is committed, so a fresh clone's ``dvc plots show`` works before any set-up
step; ``tests/test_webpage.py`` checks that it equals what this module writes with the
pinned wheel. After changing the pin, write it again::

    python -m cnnlab.webpage
"""

from __future__ import annotations

import argparse
import importlib.metadata
from functools import cache
from pathlib import Path

__all__ = ["DVC_TEMPLATE", "VEGA_LITE_VERSION", "dvc_template", "vega_script"]

#: The template's path from the repository root; .dvc/config names it relative to .dvc/.
DVC_TEMPLATE = Path(".dvc/offline-plots.html")

#: The Vega-Lite of the bundle: DVC's plot templates are written for Vega-Lite 5 (their
#: ``$schema``), and so are the experiments page's specs.
VEGA_LITE_VERSION = "v5.21"


@cache
def vega_script() -> str:
    """A ``<script>`` element defining ``vega``, ``vegaLite`` and ``vegaEmbed`` globally.

    The bundle is an ES module's code (top-level ``const`` names, strict mode): a function
    scope keeps its names out of the page's global scope, where DVC's inline ``var spec``
    scripts live, and ``"use strict"`` keeps the module's semantics.
    """
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    if "</script" in bundle.lower():
        raise RuntimeError("the Vega bundle contains '</script': it cannot be inlined")
    versions = (
        f"vega {vl_convert.get_vega_version()}, vega-lite {VEGA_LITE_VERSION.lstrip('v')}, "
        f"vega-embed {vl_convert.get_vega_embed_version()}, from vl-convert-python "
        f"{importlib.metadata.version('vl-convert-python')} (BSD-3-Clause licensed)"
    )
    return (
        f'<script>\n/* {versions} */\n(function () {{\n"use strict";\n{bundle}\n}})();\n</script>'
    )


def dvc_template() -> str:
    """DVC's HTML page (dvc-render's default layout) with the libraries inline instead of
    the ``{scripts}`` placeholder; ``{plot_divs}`` is where DVC puts the plots."""
    return (
        "<!DOCTYPE html>\n"
        "<html>\n"
        "<head>\n"
        '<meta charset="utf-8">\n'
        "{refresh_tag}\n"
        "<title>DVC Plot</title>\n"
        "<!-- Vega, Vega-Lite and vega-embed inline, so that the plots draw offline; written\n"
        "     by `python -m cnnlab.webpage`, do not edit -->\n"
        f"{vega_script()}\n"
        "<style>\n"
        "  body { font-family: sans-serif; }\n"
        "  table { border-spacing: 15px; }\n"
        "</style>\n"
        "</head>\n"
        "<body>\n"
        "{plot_divs}\n"
        "</body>\n"
        "</html>\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DVC_TEMPLATE, help=f"where (default {DVC_TEMPLATE})"
    )
    args = parser.parse_args(argv)
    text = dvc_template()
    args.out.write_text(text, encoding="utf-8")
    print(f"{args.out}: {len(text.encode()) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
