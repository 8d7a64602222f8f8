"""DVC's own plots pages, offline, in a real browser; and cnnlab-plots' notes on what DVC
could not load.

The page test opens what plain `dvc plots show` writes for the session's tiny reproduced
project (see conftest) with every host unreachable: the repository's DVC config names the
template with Vega inline, so the charts draw. The notes test needs no training: a
two-line stage and an experiment whose outputs then leave the cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from browser import charts, colours, inked, needs_chromium, rendered_dom, screenshot
from e2e import COMMIT, copy_repository, dvc, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(reproduced_digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source, _ = reproduced_digits
    return copy_repository(source, tmp_path_factory.mktemp("dvcplots") / "repo")


@needs_chromium
def test_dvc_plots_show_draws_every_plot_offline(project: Path, tmp_path: Path) -> None:
    shown = dvc("plots", "show", cwd=project, timeout=120)
    page = project / "dvc_plots" / "index.html"
    assert shown.stdout.strip() == page.resolve().as_uri()
    html = page.read_text()
    assert "cdn.jsdelivr" not in html
    # 2 runs: 5 curves (train/val loss and accuracy, lr), confusion matrix, per-class accuracy
    plots = html.split("</head>")[-1].count("vegaEmbed(")
    assert plots == 14
    assert charts(rendered_dom(page)) == plots
    image = screenshot(page, tmp_path / "dvc-plots.png")
    assert colours(image) > 50 and inked(image) > 0.02, "the screenshot is (nearly) blank"


def test_a_revision_not_in_the_cache_is_named(tmp_path: Path) -> None:
    """`dvc plots diff main later` after the cache lost `later`'s curves: the page and stderr
    name the revision and what to do, in a sentence."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "write.py").write_text(
        "import os\nos.makedirs('out/plots/metrics/val', exist_ok=True)\n"
        "k = float(open('k.txt').read())\n"
        "open('out/plots/metrics/val/acc.tsv', 'w').write(f'step\\tacc\\n0\\t{k}\\n1\\t{k}\\n')\n"
    )
    (repo / "k.txt").write_text("0.5")
    (repo / "dvc.yaml").write_text(
        "stages:\n  write:\n    cmd: python write.py\n    deps: [write.py, k.txt]\n"
        "    plots:\n      - out/plots/metrics:\n          x: step\n"
    )
    run(["git", "init", "-q", "-b", "main"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("repro", cwd=repo, timeout=120)
    run(["git", "add", "-A"], repo)
    run([*COMMIT, "one"], repo)
    (repo / "k.txt").write_text("0.7")
    dvc("exp", "run", "-n", "later", cwd=repo, timeout=120)
    run(["git", "checkout", "--", "k.txt", "dvc.lock"], repo)
    for gone in (".dvc/cache", ".dvc/tmp"):  # as on a machine that never pulled `later`
        run(["rm", "-rf", gone], repo)
    dvc("repro", cwd=repo, timeout=120)  # main's curves are back in the cache

    plots = Path(sys.executable).parent / "cnnlab-plots"  # the console script
    result = run([str(plots), "main", "later"], repo, timeout=120)
    note = (
        "revision 'later': DVC found none of its plots: it has none, or its outputs are not "
        "in this machine's DVC cache; `dvc exp pull <remote> later` fetches an experiment's, "
        "`dvc pull` a commit's"
    )
    assert f"note: not rendered: {note}" in result.stderr.splitlines()
    assert "1 plots -> reports/dvc-plots/index.html" in result.stdout
    page = (repo / "reports/dvc-plots/index.html").read_text()
    assert "Not rendered" in page and "revision &#x27;later&#x27;" in page
    assert "{" not in page.split("Not rendered")[1]  # no Python repr


def test_cnnlab_plots_writes_into_the_project_from_any_of_its_folders(
    project: Path, tmp_path: Path
) -> None:
    """Run from docs/, the pages go to the project's reports/dvc-plots/ (not docs/reports/),
    and the path printed leads there; outside a project, one line says so."""
    plots = Path(sys.executable).parent / "cnnlab-plots"
    result = run([str(plots)], project / "docs")
    assert result.stdout.strip().endswith("plots -> ../reports/dvc-plots/index.html")
    assert (project / "reports" / "dvc-plots" / "index.html").is_file()
    assert not (project / "docs" / "reports").exists()
    outside = run([str(plots)], tmp_path, check=False)
    assert outside.returncode == 2
    assert f"{tmp_path.resolve()} is not inside a DVC repository" in outside.stderr
