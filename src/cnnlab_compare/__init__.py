"""cnnlab_compare: comparisons across DVC experiments, outside the pipeline.

``cnnlab-compare`` (:mod:`cnnlab_compare.cli`) reads what finished experiments committed
(``dvc exp show``, their metrics and histories from the DVC cache) and writes tables,
statistics over seeds, figures and one HTML page; ``cnnlab-plots``
(:mod:`cnnlab_compare.plots`) renders DVC's own plots offline. The pipeline's library
(cnnlab) never imports this package: a DVC stage cannot depend on it.
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
