"""What every stage script shares: the file layout and the way errors reach the user.

The library (src/cnnlab) knows no paths; this module is the one place that does.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

#: One folder per dataset: a built-in dataset's card, or the user's own images (dvc.yaml's
#: download stage depends on datasets/<name>, so adding an image reruns that dataset alone).
SOURCES = Path("datasets")
RAW = Path("data/raw")
PREPARED = Path("data/prepared")
MODELS = Path("models")
CHECKPOINTS = Path("checkpoints")  # resume states: git-ignored, not DVC outputs
METRICS = Path("metrics")
TRAIN_LOGS = Path("plots/train")
EVAL_PLOTS = Path("plots/eval")
COMPARE_PLOTS = Path("plots/compare")
REPORTS = Path("reports")
#: The DVC metrics file: each run's test and best validation accuracy (compare writes it).
METRICS_FILE = Path("metrics.json")
#: Written by the validate stage; every other stage depends on it, so validation runs first.
PARAMS_OK = Path("data/params-ok")
#: Training time and throughput, one entry per run: dvc.yaml's top-level metrics, never a
#: stage output (measurements differ from run to run and would change dvc.lock), and tracked
#: by git, so every experiment commit keeps its own.
TIMINGS = Path("timings.json")


#: Left in every folder a command writes with --out, so that it replaces only its own folders.
OUTPUT_MARK = ".written-by-cnnlab"


def check_output_folder(path: Path) -> None:
    """``--out`` replaces its folder as a whole: refuse a non-empty one this tool did not write
    (a folder of notes given by mistake would be gone)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        sys.exit(f"error: --out {path}: exists and is not a folder; give a new or empty folder")
    if any(path.iterdir()) and not (path / OUTPUT_MARK).is_file():
        sys.exit(
            f"error: --out {path}: holds files this command did not write, and it replaces "
            "the folder as a whole; give a new or empty folder (or remove this one yourself)"
        )


def mark_output_folder(path: Path) -> None:
    (path / OUTPUT_MARK).write_text("written by a cnnlab command; --out may replace it\n")


def run_name(model: str, dataset: str) -> str:
    return f"{model}-{dataset}"


def interactive() -> bool:
    """A progress bar on a terminal; plain lines in CI logs and redirected output."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_stage(main: Callable[..., None], n_args: int, usage: str) -> None:
    """Run ``main(*argv)``, turning expected failures into one clear message and exit code 2.

    A :class:`~cnnlab.errors.UserError` (bad params, bad data, a missing input) is the user's
    to fix, so it gets the message alone; anything else is a bug and keeps its traceback.
    """
    from cnnlab.errors import UserError

    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill`, preemption: end like Ctrl-C
    args = sys.argv[1:]
    if len(args) != n_args:
        sys.exit(f"usage: {usage}")
    try:
        main(*args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "interrupted: this stage did not finish, and the next `dvc repro` runs it again "
            "(DVC does not record half-made outputs); a training run resumes from its last "
            "completed epoch",
            file=sys.stderr,
        )
        sys.exit(130)
    except PermissionError as exc:
        if not exc.filename:
            raise
        print(
            f"error: permission denied on {exc.filename}: make it (and its folder) writable "
            "by you, or remove it, and rerun",
            file=sys.stderr,
        )
        sys.exit(2)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(
            f"error: no space left on the device while writing {exc.filename or 'an output'}; "
            "free some space (e.g. `dvc gc`, or remove old experiments) and rerun; "
            "nothing half-written was kept",
            file=sys.stderr,
        )
        sys.exit(2)
    except MemoryError:
        traceback.print_exc()
        sys.exit("error: out of memory; lower batch_size / eval_batch_size or data.max_train")


def shortened(names: Sequence[str], sep: str = ", ", shown: int = 8) -> str:
    """A list for one line of stage output: the first ``shown`` names and how many more (a
    folder of 2,000 classes would otherwise print a line of thousands of characters)."""
    text = sep.join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
