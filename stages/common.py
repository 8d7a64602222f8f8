"""What every stage script shares: the file layout and the way errors reach the user.

The library (src/cnnlab) knows no paths; this module is the one place that does.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no writer locks
    fcntl = None  # type: ignore[assignment]

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
#: One lock file per run and per prepared dataset (git-ignored, no stage's output): the
#: process writing it holds an flock, which the kernel drops when that process ends.
LOCKS = Path("data/locks")
PARAMS = Path("params.yaml")
#: params.yaml as the first stage of each running `dvc repro` / `dvc exp run` found it, by
#: that dvc process's identity; git-ignored and no stage's output, so dvc.lock never sees it.
PARAMS_AT_START = LOCKS / "params-at-start.json"


def run_name(model: str, dataset: str) -> str:
    return f"{model}-{dataset}"


def interactive() -> bool:
    """A progress bar on a terminal; plain lines in CI logs and redirected output."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def _raise_interrupt(signum: int, frame: object) -> None:
    if _watched is not None and _ended(_watched):
        print(
            f"the dvc process that started this stage (pid {_watched.pid}) is gone: stopping",
            file=sys.stderr,
            flush=True,
        )
    raise KeyboardInterrupt


#: The open lock files of this process: kept open (and so locked) until it ends.
_HELD: list[int] = []


def _lock_file(key: str) -> Path:
    """Arguments come straight from the command line (validated later): a safe file name."""
    if re.fullmatch(r"[A-Za-z0-9_.@-]{1,100}", key) and not key.startswith("."):
        return LOCKS / f"{key}.lock"
    return LOCKS / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"


def hold_writer_lock(key: str, what: str) -> None:
    """Be the only process writing ``what`` until this one ends, or refuse at once.

    Two writers of one run (an orphaned stage whose `dvc` was killed, and the next
    `dvc repro`; two `dvc exp run` in one workspace) would mix their checkpoints and
    outputs. An OS lock rather than a pid file: it cannot outlive its holder, however the
    holder dies, so it never needs clearing by hand. Under torchrun only rank 0 writes.
    """
    from cnnlab.errors import UserError

    if fcntl is None or os.environ.get("RANK", "0") != "0":
        return
    path = _lock_file(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "it has just started"
        os.close(fd)
        pid = holder.split()[1].rstrip(":") if holder.startswith("pid ") else "<pid>"
        raise UserError(
            f"{what} is being written by another process right now ({holder}); a second "
            f"writer would mix its files with that one's. Wait for it to end, or stop it "
            f"(kill {pid}) and rerun; for experiments in parallel use `dvc exp run --queue` "
            "or `--temp` (docs/params.md)"
        ) from None
    stage = os.environ.get("DVC_STAGE")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    holder = f"pid {os.getpid()}: `python {' '.join(sys.argv)}`" + (
        f" (dvc stage {stage})" if stage else ""
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{holder}, since {started}\n".encode(), 0)
    _HELD.append(fd)


#: The process :func:`stop_with_dvc` watches (a ``psutil.Process``), if any.
_watched: Any = None
#: Shells DVC may run a stage's command with (`$SHELL -c '<cmd>'`, /bin/sh without $SHELL).
_SHELLS = {"sh", "dash", "bash", "zsh", "fish", "ksh", "mksh"}


def _ended(process: Any) -> bool:
    """Gone, or dead and not yet reaped by its own parent (a zombie)."""
    import psutil

    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def stop_with_dvc() -> None:
    """End this stage (as SIGTERM does: "interrupted", exit 130) when the `dvc` that started
    it goes away, instead of writing on as an orphan beside the next `dvc repro`.

    DVC runs ``$SHELL -c '<cmd>'``: bash replaces itself with the stage, dash waits for it,
    so the process to watch is the parent, or the grandparent past a ``-c`` shell. Linux's
    PR_SET_PDEATHSIG covers the parent even across torchrun's exec; a thread that looks
    once a second covers the rest (psutil, which DVC itself needs, tells a reused pid apart).
    """
    import psutil

    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    global _watched
    try:
        watched = psutil.Process().parent()
        if watched is not None and watched.name() in _SHELLS and "-c" in watched.cmdline():
            watched = watched.parent()
    except psutil.Error:
        return
    if watched is None:
        return
    _watched = watched

    def watch() -> None:
        while not _ended(watched):
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler says why

    threading.Thread(target=watch, name="stop-with-dvc", daemon=True).start()


_MISSING = object()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: the dotted keys `-S` and dvc.lock use."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def params_changes(before: str | None, after: str | None) -> str | None:
    """The keys whose values differ between two texts of params.yaml ("seed: 5 -> 6, ..."),
    or None if they hold the same values (a comment or spacing edit changes nothing)."""
    if before == after:
        return None
    from ruamel.yaml import YAMLError

    from cnnlab.slices import read_yaml

    try:
        old, new = _flat(read_yaml(before or "")), _flat(read_yaml(after or ""))
    except YAMLError:  # unreadable now (or then): load_params names the YAML error
        return "the whole file"
    if old == new:
        return None

    def show(value: Any) -> str:
        text = "(absent)" if value is _MISSING else repr(value)
        return text if len(text) <= 40 else text[:37] + "..."

    keys = sorted(
        k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING)
    )
    shown = [f"{k}: {show(old.get(k, _MISSING))} -> {show(new.get(k, _MISSING))}" for k in keys[:5]]
    return ", ".join(shown) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _read_params_text() -> str | None:
    try:
        return PARAMS.read_text()
    except (OSError, UnicodeDecodeError):  # load_params says what is wrong with it
        return None


_PARALLEL_HINT = (
    "Likely cause: another `dvc exp run` (or an edit) in this workspace; run experiments in "
    "parallel with `dvc exp run --queue` or `--temp` (docs/params.md)"
)


def _identity(process: Any) -> str:
    """A process, told apart from a later one that reuses its pid."""
    return f"{process.pid} {process.create_time()}"


def _alive(identity: str) -> bool:
    import psutil

    pid = identity.partition(" ")[0]
    try:
        return _identity(psutil.Process(int(pid))) == identity
    except (psutil.Error, ValueError):
        return False


def params_at_start() -> str | None:
    """params.yaml's text when the current dvc run began, checked against the file now.

    The first stage of a `dvc repro` (validate, when it runs) records the file under the
    identity of its dvc process; each later stage of the same dvc run refuses to start if
    the file no longer holds the same values. Records of dvc processes that have ended are
    dropped. A stage run by hand (or under torchrun) has no record to compare with and
    takes the file as it finds it.
    """
    from cnnlab.errors import UserError
    from cnnlab.files import write_json

    now = _read_params_text()
    if _watched is None or os.environ.get("RANK") is not None or fcntl is None:
        return now
    import psutil

    try:
        me = _identity(_watched)
    except psutil.Error:  # that dvc is gone already; stop_with_dvc ends this stage
        return now
    PARAMS_AT_START.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(PARAMS_AT_START.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a write: milliseconds
        try:
            runs = json.loads(PARAMS_AT_START.read_text())
        except (OSError, ValueError):
            runs = {}
        if not isinstance(runs, dict):
            runs = {}
        recorded = runs.get(me, _MISSING)
        if not isinstance(recorded, str | None):
            recorded = _MISSING
        if recorded is _MISSING:
            runs = {k: v for k, v in runs.items() if _alive(k)}
            write_json(PARAMS_AT_START, {**runs, me: now})
            return now
    finally:
        os.close(fd)
    changes = params_changes(recorded, now)
    if changes:
        raise UserError(
            f"params.yaml changed since this dvc run began ({changes}): this stage would "
            f"record results under params that did not produce the earlier stages'. "
            f"{_PARALLEL_HINT}; then restore params.yaml and rerun"
        )
    return recorded


def check_params_unchanged(start: str | None) -> None:
    """At a stage's end: DVC records the params it finds now beside what the stage made."""
    from cnnlab.errors import UserError

    changes = params_changes(start, _read_params_text())
    if changes:
        raise UserError(
            f"params.yaml changed while this stage ran ({changes}): its outputs were made "
            f"with the old values, and DVC must not record them under the new ones, so the "
            f"stage fails. {_PARALLEL_HINT}; then restore params.yaml and rerun"
        )


def run_stage(
    main: Callable[..., None],
    n_args: int,
    usage: str,
    writes: Callable[..., tuple[str, str]] | None = None,
) -> None:
    """Run ``main(*argv)``, turning expected failures into one clear message and exit code 2.

    A :class:`~cnnlab.errors.UserError` (bad params, bad data, a missing input) is the user's
    to fix, so it gets the message alone; anything else is a bug and keeps its traceback.
    ``writes(*argv)`` gives the (lock key, description) of what the stage writes, for
    :func:`hold_writer_lock`. Run by DVC (``DVC_STAGE`` set), the stage ends with its dvc.
    params.yaml must hold the same values at the stage's start and end as when the dvc run
    began: else the stage fails rather than have DVC record results under other params.
    """
    from cnnlab.errors import UserError

    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill`, preemption: end like Ctrl-C
    args = sys.argv[1:]
    if len(args) != n_args:
        sys.exit(f"usage: {usage}")
    try:
        if os.environ.get("DVC_STAGE"):
            stop_with_dvc()
        start = params_at_start()
        if writes is not None:
            hold_writer_lock(*writes(*args))
        main(*args)
        check_params_unchanged(start)
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
