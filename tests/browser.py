"""A real browser for the tests of the HTML pages: Debian's headless Chromium, offline.

Every host name resolves to nothing (``--host-resolver-rules``), so a page that needs a CDN
draws no chart; ``--virtual-time-budget`` lets the page's scripts run to the end before the
DOM is dumped or the screenshot taken. Each call has a deadline (``subprocess`` kills the
browser and the test fails with TimeoutExpired).
"""

from __future__ import annotations

import html
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"needs headless Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
    ".ci/run installs it where apt-get exists)",
)

#: Flags for a browser that starts clean, phones nowhere and reaches no host.
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=15000",  # ms of page time for the scripts (virtual: no waiting)
)

#: A drawn Vega chart: vega's renderer gives its canvas or svg this class.
CHART = re.compile(r'<(canvas|svg)\b[^>]*class="marks"')


def _chromium(page: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, offline."""
    return _chromium(page, "--dump-dom").stdout


def charts(dom: str) -> int:
    """How many Vega charts the DOM holds (drawn ones only)."""
    return len(CHART.findall(dom))


def screenshot(page: Path, out: Path, size: tuple[int, int] = (1200, 900)) -> Image.Image:
    """A screenshot of the page's first ``size`` pixels, offline, as a user would see it."""
    _chromium(page, f"--window-size={size[0]},{size[1]}", f"--screenshot={out.resolve()}")
    return Image.open(out).convert("RGB")


def colours(image: Image.Image) -> int:
    """The number of distinct colours: 1 for a blank page; charts have dozens (lines, text,
    anti-aliasing)."""
    found = image.getcolors(maxcolors=1 << 24)
    assert found is not None
    return len(found)


def inked(image: Image.Image) -> float:
    """The share of pixels that are not the background (the top-left pixel's colour)."""
    pixels = np.asarray(image)
    return float((pixels != pixels[0, 0]).any(axis=2).mean())


def run_script(page: Path, script: str, out: Path) -> dict[str, str]:
    """Open a copy of ``page`` (written to ``out``) with ``script`` run 3 s (page time) after
    load, offline; returns the ``<body>``'s data attributes after it: what ``script`` wrote
    into ``document.body.dataset``, and ``jserror`` for any uncaught error of the page."""
    text = page.read_text(encoding="utf-8")
    end = text.rindex("</body>")  # the last: the inline bundle holds that text too
    probe = (
        "<script>\n"
        'addEventListener("error", (e) => { document.body.dataset.jserror = e.message; });\n'
        'addEventListener("unhandledrejection", (e) => {\n'
        "  document.body.dataset.jserror = String(e.reason); });\n"
        f"setTimeout(() => {{\n{script}\n}}, 3000);\n"
        "</script>\n"
    )
    out.write_text(text[:end] + probe + text[end:], encoding="utf-8")
    body = re.findall(r"<body\b[^>]*>", rendered_dom(out))[-1]
    return {
        name: html.unescape(value) for name, value in re.findall(r'data-([\w-]+)="([^"]*)"', body)
    }
