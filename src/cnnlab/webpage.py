"""Vega, Vega-Lite and vega-embed inline in an HTML page, so its charts draw with no network.

DVC's plots page loads them from a CDN and stays blank offline. The pinned vl-convert-python
wheel bundles them (``vl_convert.javascript_bundle()``), inlined here into the HTML template
DVC fills (.dvc/config's ``plots.html_template``: :data:`DVC_TEMPLATE`, committed so a fresh
clone works; tests/test_webpage.py checks it) and into cnnlab-compare's experiments page.
After changing the pin, write the template again: ``python -m cnnlab.webpage``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from functools import cache
from pathlib import Path

#: The template's path from the repository root; .dvc/config names it relative to .dvc/.
DVC_TEMPLATE = Path(".dvc/offline-plots.html")

#: DVC's plot templates and the experiments page's specs are written for Vega-Lite 5.
VEGA_LITE_VERSION = "v5.21"


@cache
def vega_script() -> str:
    """A ``<script>`` defining ``vega``, ``vegaLite`` and ``vegaEmbed`` globally. The bundle is
    an ES module's code: a strict function scope keeps its ``const`` names out of the page's
    global scope, where DVC's inline ``var spec`` scripts live."""
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
