"""cnnlab_compare: comparisons across DVC experiments (``cnnlab-compare``, ``cnnlab-plots``).

Outside the pipeline: cnnlab never imports this package, so no DVC stage depends on it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def console(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a console script's ``main``: a mistake the user can fix is one line on stderr and
    exit 2, never a traceback."""
    from cnnlab.errors import UserError

    try:
        main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
