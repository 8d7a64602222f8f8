"""Put on PYTHONPATH by tests/test_stage_deps.py: every Python process DVC starts then writes,
at exit, its argv and the files of every module it loaded into $CNNLAB_TRACE_DIR/<pid>.json
(imports made inside functions included: they are in sys.modules by then)."""

import atexit
import json
import os
import sys

_OUT = os.environ.get("CNNLAB_TRACE_DIR")


def _dump() -> None:
    files = sorted({f for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None))})
    with open(os.path.join(_OUT, f"{os.getpid()}.json"), "w") as handle:
        json.dump({"argv": sys.argv, "cwd": os.getcwd(), "files": files}, handle)


if _OUT:
    atexit.register(_dump)
