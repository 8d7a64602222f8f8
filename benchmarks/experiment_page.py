"""How long the experiments page takes to build and to draw, for a sweep of many experiments.

    .venv/bin/python benchmarks/experiment_page.py                       # 30 experiments
    .venv/bin/python benchmarks/experiment_page.py --configs 10 --seeds 3 --epochs 20 --runs 6

Makes up the comparison (tests/fake_experiments.py: no training, no DVC): ``configs``
configurations times ``seeds`` seeds, each on ``runs`` runs (dataset x model), ``epochs``
epochs each. Prints the page's size, the time Python takes to build it, and, in headless
Chromium (offline), the page's own measure: milliseconds from navigation start until every
chart is drawn (``data-rendered``, set when the last vega-embed promise resolves), plus the
browser's wall time for this page and for an empty one (start-up, the difference is the page).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import CHROMIUM, FLAGS  # noqa: E402
from fake_experiments import fake_comparison  # noqa: E402

from cnnlab.webpage import vega_script  # noqa: E402
from cnnlab_compare.experiment_page import experiment_page  # noqa: E402

RUNS = [(d, m) for d in ("mnist", "fashion_mnist", "cifar10") for m in ("lenet", "alexnet")]


def browse(page: Path) -> tuple[float, str]:
    """Wall seconds of one offline headless Chromium run dumping the DOM, and the DOM."""
    with tempfile.TemporaryDirectory() as profile:
        start = time.perf_counter()
        dom = subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        return time.perf_counter() - start, dom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=2, help="runs per experiment (up to 6)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    comparison = fake_comparison(args.configs, args.seeds, args.epochs, RUNS[: args.runs])
    c = comparison
    start = time.perf_counter()
    vega_script()  # once per process (cached): vl-convert assembles the bundle
    bundled = time.perf_counter() - start
    start = time.perf_counter()
    page = experiment_page(c.table, c.varied, c.histories, c.groups, c.by)
    built = time.perf_counter() - start
    experiments = args.configs * args.seeds
    print(
        f"{experiments} experiments x {args.runs} runs x {args.epochs} epochs: "
        f"{len(page.encode()) / 1e6:.2f} MB, built in {built:.2f} s (Python; the Vega bundle "
        f"{bundled:.2f} s more, once per process)"
    )
    if not CHROMIUM.exists():
        sys.exit(f"no browser timing: {CHROMIUM} is missing")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.html"
        path.write_text(page, encoding="utf-8")
        empty = Path(folder) / "empty.html"
        empty.write_text("<!DOCTYPE html><title>empty</title>")
        drawn, walls, blanks = [], [], []
        for _ in range(args.repeats):
            blanks.append(browse(empty)[0])
            wall, dom = browse(path)
            found = re.search(r'data-rendered="(\d+)"', dom)
            if not found:
                sys.exit("the page did not finish drawing: " + dom[-500:])
            walls.append(wall)
            drawn.append(int(found.group(1)))
            charts = len(re.findall(r'<canvas\b[^>]*class="marks"', dom))
    print(
        f"drawn {charts} charts {statistics.median(drawn)} ms after navigation start "
        f"(median of {args.repeats}: {drawn}); browser wall {statistics.median(walls):.2f} s, "
        f"empty page {statistics.median(blanks):.2f} s"
    )


if __name__ == "__main__":
    main()
