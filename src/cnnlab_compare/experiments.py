"""Finished DVC experiments and what they recorded, for comparisons across experiments.

The ``compare`` stage sees one experiment (the workspace). Comparing experiments means
reading what each one committed: the list comes from ``dvc exp show --json`` (the documented
machine-readable form, which carries full revisions, names and queue states; the flattened
``dvc.api.exp_show`` drops the file prefix of a metric whenever its name is unique, so its
keys change with the set of runs), and the files (metrics, DVCLive's per-epoch TSVs) from
``dvc.api.DVCFileSystem`` at each experiment's revision, which reads DVC-tracked outputs
from the local cache. Nothing here knows the project's file layout: the caller passes the
paths of a run's files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from cnnlab.errors import UserError
from cnnlab.history import history_from_texts, tsv_path
from cnnlab.record import RecordError, parse_record
from cnnlab.reporting import param_text

__all__ = [
    "Experiment",
    "ExperimentError",
    "ExperimentRun",
    "collect_runs",
    "dvc_json",
    "experiment_labels",
    "flatten_params",
    "list_experiments",
    "reads",
    "run_labels",
    "same_runs",
    "varying_params",
]

#: Params that choose which runs exist rather than how they train: the figures and tables are
#: already split by dataset and model, so these never label a line.
_RUN_CHOICE_KEYS = ("datasets", "models")


class ExperimentError(UserError):
    """Something the user can fix: not a DVC repository, no experiments, missing metrics."""


@dataclass(frozen=True)
class Experiment:
    name: str  # the experiment's name, or the baseline's branch name / short revision
    rev: str  # the full git revision that holds its dvc.lock
    baseline: bool
    timestamp: str
    params: dict[str, Any] = field(repr=False)  # params.yaml as that revision has it
    failed: bool = False  # a queued run that failed: its params, no results


@dataclass(frozen=True)
class ExperimentRun:
    experiment: Experiment
    model: str
    dataset: str
    metrics: dict[str, Any]  # the evaluate stage's metrics of this run
    history: pd.DataFrame  # one row per epoch (see cnnlab.history)
    run_key: str | None = None  # what trained it (cnnlab.runs); None: not known


def dvc_json(args: Sequence[str], root: Path) -> Any:
    """Run ``dvc <args> --json`` with this interpreter's dvc; DVC's own message on failure."""
    args = [*args, "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True
    )
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().removeprefix("ERROR: ")
        raise ExperimentError(f"`dvc {' '.join(args)}` failed in {root}: {message}")
    return json.loads(result.stdout)


def _check_repo(root: Path) -> None:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        Repo.find_root(str(root))
    except NotDvcRepoError:
        raise ExperimentError(
            f"{root.resolve()} is not inside a DVC repository (no .dvc/ folder here or above): "
            "run this from the project's folder, or pass --repo"
        ) from None


def _params_of(entry: Mapping[str, Any]) -> dict[str, Any]:
    params = ((entry.get("data") or {}).get("params") or {}).get("params.yaml") or {}
    return dict(params.get("data") or {})


def _finished(executor: Mapping[str, Any] | None) -> bool:
    """A collected experiment has no executor left; a queue-run one may say 'success'."""
    return executor is None or executor.get("state") == "success"


def list_experiments(
    root: Path,
    names: Sequence[str] | None = None,
    all_commits: bool = False,
    include_failed: bool = False,
) -> list[Experiment]:
    """The experiments to compare, oldest first (by the time each one's result was committed).

    Without ``names``: every finished experiment of the current commit (of every commit with
    ``all_commits``), baselines left out; queued, running and failed ones are skipped with a
    note on stderr. With ``names``: exactly those, each an experiment name, a revision (or its
    start) or a baseline's branch name; one that is unknown or not finished is an error.
    ``include_failed`` lists queued runs that failed too (``failed=True``, with the params
    they were queued with), for a caller that reports them instead of dropping them.
    """
    _check_repo(root)
    shown = dvc_json(["exp", "show", *(["-A"] if all_commits else [])], root)
    baselines: list[Experiment] = []
    found: list[Experiment] = []
    unfinished: dict[str, str] = {}
    for commit in shown:
        if commit.get("rev") == "workspace":
            continue
        baselines.append(
            Experiment(
                name=commit.get("name") or commit["rev"][:7],
                rev=commit["rev"],
                baseline=True,
                timestamp=str((commit.get("data") or {}).get("timestamp") or ""),
                params=_params_of(commit),
            )
        )
        for exp in commit.get("experiments") or []:
            tip = exp["revs"][0]
            name = exp.get("name") or tip.get("name") or tip["rev"][:7]
            state = str((exp.get("executor") or {}).get("state"))
            failed = include_failed and state == "failed"
            if not _finished(exp.get("executor")) and not failed:
                unfinished[name] = state
                continue
            found.append(
                Experiment(
                    name=name,
                    rev=tip["rev"],
                    baseline=False,
                    timestamp=str((tip.get("data") or {}).get("timestamp") or ""),
                    params=_params_of(tip),
                    failed=failed,
                )
            )
    found.sort(key=lambda e: (e.timestamp, e.name))
    if names:
        return [_pick(name, found, baselines, unfinished) for name in dict.fromkeys(names)]
    for name, state in unfinished.items():
        print(f"note: skipping experiment {name!r} ({state})", file=sys.stderr)
    if not found:
        where = "any commit" if all_commits else "the current commit"
        raise ExperimentError(
            f"no finished experiments of {where}: run some first, e.g. "
            "`dvc exp run -S optimizer=sgd` (see `dvc exp show`)"
            + ("" if all_commits else ", or pass --all for every commit's")
        )
    return found


def _pick(
    name: str, found: list[Experiment], baselines: list[Experiment], unfinished: dict[str, str]
) -> Experiment:
    if name in unfinished:
        raise ExperimentError(
            f"experiment {name!r} is {unfinished[name]}, not finished: wait for it "
            f"(`dvc queue status`) or see why (`dvc queue logs {name}`)"
        )
    for pool in (found, baselines):
        matches = [e for e in pool if name == e.name]
        matches = matches or [e for e in pool if len(name) >= 4 and e.rev.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ExperimentError(f"{name!r} matches several experiments; give its revision")
    known = ", ".join(e.name for e in [*found, *baselines]) or "none"
    raise ExperimentError(f"no finished experiment {name!r}; known: {known}")


def flatten_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model": {"alexnet": {"dropout": 0.5}}}`` -> ``{"model.alexnet.dropout": 0.5}``,
    the key spelling of ``dvc exp run -S`` (``pandas.json_normalize``). Lists stay values
    (``datasets=[mnist]``)."""
    if not params:
        return {}
    (flat,) = pd.json_normalize(dict(params), sep=".").to_dict("records")
    return flat


def varying_params(experiments: Sequence[Experiment]) -> list[str]:
    """The params (``-S`` spelling) whose values differ between the experiments, in
    params.yaml's order; ``datasets`` and ``models`` left out (figures are split by them)."""
    flats = [flatten_params(e.params) for e in experiments]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    return [
        k
        for k in keys
        if k not in _RUN_CHOICE_KEYS
        and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1
    ]


def experiment_labels(experiments: Sequence[Experiment], varied: Sequence[str]) -> dict[str, str]:
    """A line label per experiment: what it changed (``optimizer=sgd, lr=0.05``).

    The name is used when nothing varies or when two experiments would get the same label
    (the same params run twice): a legend must tell every line apart.
    """
    labels = {}
    for exp in experiments:
        flat = flatten_params(exp.params)
        labels[exp.name] = ", ".join(f"{k}={param_text(flat.get(k))}" for k in varied)
    if not varied or len(set(labels.values())) < len(labels):
        return {e.name: (f"{e.name}: {labels[e.name]}" if varied else e.name) for e in experiments}
    return labels


def same_runs(runs: Iterable[ExperimentRun]) -> dict[str, str]:
    """Experiment -> the first experiment that reached the same runs, for every experiment
    all of whose runs another one (listed before it) had already reached: a no-op change,
    or a param no stage reads, repeats a measurement instead of making a new one."""
    first: dict[str, str] = {}  # run key -> the first experiment that reached it
    keys: dict[str, list[str | None]] = {}
    for run in runs:
        keys.setdefault(run.experiment.name, []).append(run.run_key)
        if run.run_key is not None:
            first.setdefault(run.run_key, run.experiment.name)
    same = {}
    for name, own in keys.items():
        earlier = {first.get(k) if k is not None else None for k in own}
        if len(earlier) == 1 and None not in earlier and earlier != {name}:
            same[name] = str(earlier.pop())
    return same


def _skip(note: str) -> None:
    print(f"note: skipping {note}", file=sys.stderr)


class _Unreadable(Exception):
    """One experiment's files could not be read: the reason, for its one-line note."""


def _read_json(text: str | None, path: str) -> Any:
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        # e.g. a merge conflict's <<<<<<< left in a committed file
        raise _Unreadable(f"{path} is not valid JSON (a merge conflict left in it?)") from None


def _run_keys(read: Callable[[str], str | None]) -> dict[str, str]:
    """Stage name -> run-cache key from the experiment's dvc.lock ({} when it has none)."""
    import yaml

    from cnnlab.runs import lock_keys

    text = read("dvc.lock")
    try:
        return lock_keys(yaml.safe_load(text) if text else None)
    except yaml.YAMLError:
        raise _Unreadable("dvc.lock is not valid YAML (a merge conflict left in it?)") from None


def _timings_of(table: Any, key: str | None) -> dict[str, Any]:
    """A run's timings.json entry, only when it says it timed this run (its ``train_run`` is the
    run's key): a run DVC restored from its cache did not rewrite timings.json, and the
    entry the experiment committed may be another run's."""
    if key is None or not isinstance(table, Mapping):
        return {}
    return next(
        (
            {k: v for k, v in entry.items() if k != "train_run"}
            for entry in table.values()
            if isinstance(entry, Mapping) and entry.get("train_run") == key
        ),
        {},
    )


def reads(key: str, model: str, dataset: str, flat: Mapping[str, Any]) -> bool:
    """Whether a run of ``model`` on ``dataset`` with these (flattened) params reads ``key``:
    ``model.<other>.*``, the rows of the optimizers not chosen, ``dataset.<other>.*`` and the
    run choices (``datasets``, ``models``) are never read."""
    head, _, rest = key.partition(".")
    owner = rest.split(".")[0]
    if head == "model" and rest:
        return owner == model
    if head == "optimizers" and rest:
        return owner == flat.get("optimizer")
    if head == "dataset" and rest:
        return owner == dataset
    return key not in _RUN_CHOICE_KEYS


def run_labels(
    experiments: Sequence[Experiment], varied: Sequence[str], model: str, dataset: str
) -> tuple[dict[str, str], list[str]]:
    """The line labels of one run's figure (``model`` on ``dataset``) and the params they
    show: of ``varied``, only those that differ among these experiments where a run reads
    them (:func:`reads`), and in each label only those this run reads; the experiment's
    name where labels would not tell lines apart, as :func:`experiment_labels`."""
    flats = {e.name: flatten_params(e.params) for e in experiments}

    def values(key: str) -> set[str]:
        return {
            json.dumps(flat.get(key), sort_keys=True)
            for flat in flats.values()
            if reads(key, model, dataset, flat)
        }

    shown = [k for k in varied if len(values(k)) > 1]
    labels = {
        name: ", ".join(
            f"{k}={param_text(flat.get(k))}" for k in shown if reads(k, model, dataset, flat)
        )
        for name, flat in flats.items()
    }
    if not shown or len(set(labels.values())) < len(labels):
        return {n: f"{n}: {t}" if t else n for n, t in labels.items()}, shown
    return labels, shown


def collect_runs(
    root: Path,
    experiments: Iterable[Experiment],
    metrics_path: Callable[[str, str], str],
    log_dir: Callable[[str, str], str],
    timings: str | None = None,
    run_stage: Callable[[str, str], str] | None = None,
) -> list[ExperimentRun]:
    """Every run (model x dataset of its params) of every experiment, with metrics and history.

    ``metrics_path(model, dataset)`` and ``log_dir(model, dataset)`` give a run's evaluate
    metrics file and DVCLive directory, relative to the repository; ``run_stage(model,
    dataset)`` the name of the stage that trained it, whose run-cache key in the
    experiment's dvc.lock identifies the run (``ExperimentRun.run_key``: experiments that
    reached the same run have the same key). ``timings`` is the file of measured training
    times: an entry is merged into a run's metrics only when it names that run's key, taken
    from any of the experiments (a run restored from DVC's cache was timed by the
    experiment that trained it); else the run has no time ("not measured here").

    An experiment whose files cannot be read (it failed, its outputs are not in this
    machine's DVC cache, a file is not valid JSON) is skipped with a one-line note on
    stderr, named or not; when none is left, an error says what to do. Failed experiments
    (``failed=True``) have no files and are passed over.
    """
    from dvc.api import DVCFileSystem

    runs: list[ExperimentRun] = []
    measured: dict[str, dict[str, Any]] = {}  # run key -> its timing, from any experiment
    reasons: list[str] = []
    for exp in experiments:
        if exp.failed:
            continue  # nothing to read: the caller reports it as failed
        try:
            found, table = _experiment_runs(
                DVCFileSystem(str(root), rev=exp.rev),
                exp,
                metrics_path,
                log_dir,
                timings,
                run_stage,
            )
        except _Unreadable as exc:
            reason = f"experiment {exp.name!r} ({exp.rev[:7]}): {exc}"
            reasons.append(reason)
            _skip(reason)
            continue
        for run in found:
            timing = _timings_of(table, run.run_key)
            if timing and run.run_key is not None:
                measured.setdefault(run.run_key, timing)
        runs.extend(found)
    if not runs:
        why = " (each skipped above, with why)" if reasons else ""
        raise ExperimentError(
            f"none of the chosen experiments has results to compare{why}: fetch their "
            "outputs (`dvc exp pull <remote> <name>`) or run them again (`dvc exp run`)"
        )
    if timings is None:
        return runs
    return [
        replace(run, metrics={**measured.get(run.run_key or "", {}), **run.metrics}) for run in runs
    ]


def _experiment_runs(
    fs: Any,
    exp: Experiment,
    metrics_path: Callable[[str, str], str],
    log_dir: Callable[[str, str], str],
    timings: str | None,
    run_stage: Callable[[str, str], str] | None,
) -> tuple[list[ExperimentRun], Any]:
    """One experiment's runs and its timings.json's table, or _Unreadable saying why not."""
    from dvc_data.index.index import DataIndexError, StorageError

    def read(path: str) -> str | None:
        try:
            return str(fs.read_text(path))
        except FileNotFoundError:
            try:  # DVC knows the file (its dvc.lock lists it) but has no copy of it
                uncached = fs.exists(path)
            except (DataIndexError, StorageError, OSError):
                uncached = True
            if not uncached:
                return None
        except (DataIndexError, StorageError, OSError):
            pass
        raise _Unreadable(
            f"{path} is not in this machine's DVC cache (after `dvc gc`, or made on "
            f"another machine): `dvc exp pull <remote> {exp.name}` fetches it"
        ) from None

    try:
        table = _read_json(read(timings), timings) if timings else None
    except _Unreadable as exc:  # the times are extras: the results still count
        print(f"note: experiment {exp.name!r}: {exc}: its times are not shown", file=sys.stderr)
        table = None
    keys = _run_keys(read) if run_stage else {}
    found: list[ExperimentRun] = []
    missing: list[str] = []
    for dataset in exp.params.get("datasets") or []:
        for model in exp.params.get("models") or []:
            path = metrics_path(model, dataset)
            text = read(path)
            if text is None:
                missing.append(path)
                continue
            _read_json(text, path)  # a merge conflict is named as one
            try:  # the run's record (cnnlab.record): its numbers and its status, as evaluated
                metrics = parse_record(text, path).model_dump()
            except RecordError as exc:
                raise _Unreadable(str(exc)) from None
            logs = log_dir(model, dataset)
            try:
                history = history_from_texts(
                    lambda column, logs=logs: read(tsv_path(logs, column).as_posix())
                )
            except ValueError as exc:  # pandas' ParserError too: not DVCLive's TSV
                first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                raise _Unreadable(
                    f"{logs}: a per-epoch log is not DVCLive's TSV ({first}; a merge "
                    "conflict left in it?)"
                ) from None
            key = keys.get(run_stage(model, dataset)) if run_stage else None
            found.append(ExperimentRun(exp, model, dataset, metrics, history, key))
    if missing:
        raise _Unreadable(
            f"no metrics in {', '.join(missing)}: it failed before evaluating, or was run "
            "with other `datasets`/`models` than its params name"
        )
    return found, table
