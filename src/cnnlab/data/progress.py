"""Progress of the long loops over a folder's files: a tqdm bar on a terminal, else one
summary line at the end (no bar redraws in a log), or silence (``None``, the library's
default); the stages choose.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

ProgressMode = Literal["bar", "line"] | None


class Progress:
    """Counts ``unit``s of work towards ``total``; :meth:`close` ends the bar or prints the line."""

    def __init__(self, mode: ProgressMode, total: int, desc: str, unit: str) -> None:
        self.mode, self.total, self.desc, self.unit = mode, total, desc, unit
        self.done = 0
        self.start = time.perf_counter()
        self.bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "line":
            seconds = time.perf_counter() - self.start
            rate = f", {self.done / seconds:.0f} {self.unit}/s" if seconds > 0 else ""
            print(
                f"{self.desc}: {self.done} {self.unit} in {seconds:.1f} s{rate}",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        elif self.bar is not None:  # a failed loop: its bar ends, with no summary line
            self.bar.close()
