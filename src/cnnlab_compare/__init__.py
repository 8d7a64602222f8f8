"""cnnlab_compare: comparisons across DVC experiments (``cnnlab-compare``, ``cnnlab-plots``).

Outside the pipeline: cnnlab never imports this package, so no DVC stage depends on it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def console(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a console script's ``main``: a mistake the user can fix is one line on stderr and
    exit 2, Ctrl-C one line and exit 130, never a traceback (the pages already there stay:
    each is replaced only once whole)."""
    from cnnlab.errors import UserError

    try:
        main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the earlier pages, if any, are as they were", file=sys.stderr)
        sys.exit(130)
