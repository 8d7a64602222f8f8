"""Progress of the long loops over a folder's files: a tqdm bar on a terminal, else one
summary line at the end (no bar redraws in a log), or silence (``None``, the library's
default); the stages choose.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from tqdm import tqdm

ProgressMode = Literal["bar", "line"] | None


@contextmanager
def track(mode: ProgressMode, total: int, desc: str, unit: str) -> Iterator[tqdm]:
    """A tqdm bar (disabled unless ``mode`` is "bar") counting ``total`` ``unit``s of work;
    in "line" mode, one line of counts and time once the work is done (not if it failed)."""
    start = time.perf_counter()
    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=mode != "bar") as bar:
        yield bar
    if mode == "line":
        seconds = time.perf_counter() - start
        rate = f", {total / seconds:.0f} {unit}/s" if seconds > 0 else ""
        print(f"{desc}: {total} {unit} in {seconds:.1f} s{rate}", file=sys.stderr, flush=True)
