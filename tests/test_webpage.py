"""The offline DVC plots template: committed, equal to what the pinned bundle makes, named by
the repository's DVC config, and filled by DVC without its CDN script tags.

(tests/test_plots_browser_e2e.py opens the pages in a real browser.)
"""

from __future__ import annotations

import re
from pathlib import Path

from cnnlab.webpage import DVC_TEMPLATE, dvc_template, vega_script

ROOT = Path(__file__).resolve().parents[1]


def test_committed_template_is_what_the_generator_writes() -> None:
    committed = (ROOT / DVC_TEMPLATE).read_text(encoding="utf-8")
    assert committed == dvc_template(), (
        f"{DVC_TEMPLATE} differs from what the pinned vl-convert-python makes: "
        "run `python -m cnnlab.webpage` and commit it"
    )


def test_the_dvc_config_names_the_template() -> None:
    """What `dvc plots show` reads: plots.html_template, relative to .dvc/."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        named = repo.config["plots"]["html_template"]
        assert (Path(repo.dvc_dir) / named).resolve() == (ROOT / DVC_TEMPLATE).resolve()


def test_the_page_dvc_writes_loads_nothing_from_the_network(tmp_path: Path) -> None:
    """dvc-render fills the template as `dvc plots show` does: the plot is there, Vega is
    inline once, and no script or link points anywhere else."""
    from dvc_render import VegaRenderer, render_html

    points = [{"step": 0, "acc": 0.5, "rev": "ws"}, {"step": 1, "acc": 0.7, "rev": "ws"}]
    renderer = VegaRenderer(points, "plots/metrics/val/acc.tsv", x="step", y="acc")
    out = tmp_path / "index.html"
    render_html([renderer], out, html_template=str(ROOT / DVC_TEMPLATE))
    page = out.read_text()
    assert page.count(vega_script()) == 1
    rest = page.replace(vega_script(), "")  # the bundle's own markup is vega-embed's menu
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", rest)
    body = rest.split("<body>")[1]
    assert body.count("vegaEmbed(") == 1 and "0.7" in body
