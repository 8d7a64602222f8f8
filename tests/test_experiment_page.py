"""The experiments page (cnnlab_compare.experiment_page) from made-up comparisons: one file with no
request, one table row per experiment, the curves' hover and highlight, the seed bands and
means, and Vega-Lite specs that compile. (The browser test of a real two-experiment
comparison is in tests/test_experiments_e2e.py.)
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from browser import charts, needs_chromium, rendered_dom, run_script
from fake_experiments import fake_comparison

from cnnlab.webpage import vega_script
from cnnlab_compare import stats
from cnnlab_compare.experiment_page import experiment_page, page_data


class _Tables(HTMLParser):
    """The text of every cell of the table with id ``experiments``, by row."""

    def __init__(self) -> None:
        super().__init__()
        self.inside, self.section, self.rows, self.headers = False, "", [], []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.inside = dict(attrs).get("id") == "experiments"
        elif self.inside and tag in ("thead", "tbody"):
            self.section = tag
        elif self.inside and tag == "tr" and self.section == "tbody":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            (self.rows[-1] if tag == "td" else self.headers).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside and self.section == "tbody" and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data
        elif self.inside and self.section == "thead" and self.headers:
            self.headers[-1] += data


def experiments_table(page: str) -> tuple[list[str], list[list[str]]]:
    parser = _Tables()
    parser.feed(page.replace(vega_script(), ""))
    return parser.headers, parser.rows


def build(**kwargs) -> str:
    c = fake_comparison(**kwargs)
    return experiment_page(c.table, c.varied, c.histories, c.groups, c.by)


def test_the_page_is_one_file_that_requests_nothing() -> None:
    page = build(configs=2)
    assert page.count(vega_script()) == 1
    rest = page.replace(vega_script(), "")
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", rest)
    assert "default-src 'none'" in rest  # the browser refuses any request the page tries
    assert len(page.encode()) < 1_200_000


def test_one_row_per_experiment_with_params_accuracy_status_and_time() -> None:
    headers, rows = experiments_table(build(configs=3, fail_last=True))
    assert headers == [
        "experiment",
        "optimizer",
        "LeNet on scikit-learn digits: test acc (%)",
        "AlexNet on scikit-learn digits: test acc (%)",
        "status",
        "train time (s)",
    ]
    assert rows == [
        ["exp-00-0", "sgd", "84.00", "79.00", "ok", "20.0"],
        ["exp-01-0", "momentum", "86.00", "81.00", "ok", "22.0"],
        ["exp-02-0", "nag", "failed", "failed",
         "lenet-digits: failed; alexnet-digits: failed", "–"],
    ]  # fmt: skip


def test_seeds_give_the_mean_with_its_interval_and_a_band() -> None:
    c = fake_comparison(configs=2, seeds=3)
    page = experiment_page(c.table, c.varied, c.histories, c.groups, c.by)
    headers, rows = experiments_table(page)
    assert "LeNet on scikit-learn digits: mean over seeds [95% CI]" in headers
    assert len(rows) == 6
    mean = rows[0][headers.index("LeNet on scikit-learn digits: mean over seeds [95% CI]")]
    assert re.fullmatch(r"84\.30 \[8\d\.\d\d, 8\d\.\d\d\] \(n=3\)", mean), mean
    specs, _, _ = page_data(c.table, c.varied, c.histories, c.groups, c.by)
    points = specs["curves-0"]["data"]["values"]
    # one line per configuration, not per seed, with the band its seeds span
    assert {p["line"] for p in points} == {"optimizer=sgd", "optimizer=momentum"}
    assert all(p["low"] <= p["value"] <= p["high"] for p in points)
    assert {p["experiments"] for p in points} == {"exp-00-0 exp-00-1 exp-00-2",
                                                  "exp-01-0 exp-01-1 exp-01-2"}  # fmt: skip
    assert {p["line"] for p in specs["intervals"]["data"]["values"]} == {
        "optimizer=sgd",
        "optimizer=momentum",
    }


def test_one_seed_has_no_interval_in_the_chart_either() -> None:
    c = fake_comparison(configs=2, seeds=3)
    table = c.table[~c.table["experiment"].isin(["exp-01-1", "exp-01-2"])]
    groups = stats.group_table(table, c.by)
    specs, _, _ = page_data(table, c.varied, c.histories, groups, c.by)
    points = {
        p["line"]: p for p in specs["intervals"]["data"]["values"] if p["run"].startswith("LeNet")
    }
    sgd, momentum = points["optimizer=sgd"], points["optimizer=momentum"]
    assert sgd["n"] == 3 and sgd["low"] < sgd["mean"] < sgd["high"]
    assert momentum["n"] == 1 and momentum["low"] is None and momentum["high"] is None


def test_curves_hover_and_highlight() -> None:
    c = fake_comparison(configs=2, epochs=4)
    specs, _, rows = page_data(c.table, c.varied, c.histories)
    curves = specs["curves-0"]
    layer = curves["spec"]["layer"][1]
    shown = [t["field"] for t in layer["encoding"]["tooltip"]]
    assert shown[0] == "line" and "epoch" in shown and "value" in shown
    assert layer["params"][0]["bind"] == "legend"  # a legend click picks a line
    assert curves["params"] == [{"name": "highlight", "value": None}]  # a row click sets it
    assert [row["line"] for row in rows] == ["optimizer=sgd", "optimizer=momentum"]
    values = curves["data"]["values"]
    assert len(values) == 2 * 4 * 4  # lines x epochs x the 2x2 metrics
    assert {v["line"] for v in values} == {row["line"] for row in rows}


def test_params_against_accuracy_has_a_panel_per_param() -> None:
    c = fake_comparison(configs=9)  # past seven optimizers the lr varies too
    specs, _, _ = page_data(c.table, c.varied, c.histories)
    points = specs["params"]["data"]["values"]
    assert specs["params"]["facet"]["sort"] == ["optimizer", "lr"]
    assert {p["param"] for p in points} == {"optimizer", "lr"}
    assert len(points) == 2 * 9 * 2  # params x experiments x runs


@pytest.mark.parametrize("seeds", [1, 2])
def test_every_spec_compiles(seeds: int) -> None:
    """Vega-Lite accepts each spec (vl-convert compiles it as the browser's bundle would)."""
    import vl_convert

    from cnnlab.webpage import VEGA_LITE_VERSION

    c = fake_comparison(configs=3, seeds=seeds, fail_last=True)
    specs, _, _ = page_data(c.table, c.varied, c.histories, c.groups, c.by)
    for spec in specs.values():
        vega = vl_convert.vegalite_to_vega(spec, vl_version=VEGA_LITE_VERSION)
        assert json.dumps(vega)


#: What a user does on the page: click a row, sort by LeNet's accuracy (lowest first), type a
#: filter; the script reports the rows as shown (name, and whether hidden or highlighted).
USER = """
const rows = () => Array.from(document.querySelectorAll("#experiments tbody tr"));
rows()[1].click();
document.querySelectorAll("#experiments th button")[2].click();
const input = document.querySelector("input[data-filter]");
input.value = "sgd";
input.dispatchEvent(new Event("input"));
document.body.dataset.shown = rows().map((r) => r.cells[0].textContent
  + (r.hidden ? " hidden" : "") + (r.classList.contains("picked") ? " picked" : "")).join(", ");
"""


@pytest.mark.e2e
@needs_chromium
def test_sort_filter_and_highlight_in_a_browser(tmp_path) -> None:
    page = tmp_path / "index.html"
    page.write_text(build(configs=3, fail_last=True))
    assert charts(rendered_dom(page)) == 3  # LeNet's and AlexNet's curves, params
    seen = run_script(page, USER, tmp_path / "clicked.html")
    assert "jserror" not in seen and "rendered" in seen, seen
    # sorted ascending by LeNet's accuracy, the failed run last; filtered to sgd
    assert seen["shown"] == "exp-00-0, exp-01-0 hidden picked, exp-02-0 hidden"
