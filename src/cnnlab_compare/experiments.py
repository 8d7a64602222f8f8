"""Finished DVC experiments and what they recorded, for comparisons across experiments.

The list comes from ``dvc exp show --json`` (``dvc.api.exp_show`` drops a metric's file
prefix whenever its name is unique, so its keys change with the set of runs); each
experiment's files from ``dvc.api.DVCFileSystem`` at its revision (DVC's local cache).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from cnnlab.errors import UserError
from cnnlab.history import history_from_texts, tsv_path
from cnnlab.record import RecordError, parse_record
from cnnlab.reporting import param_text
from cnnlab_compare.layout import METRICS, TIMINGS, TRAIN_LOGS, run_name

#: Params that choose which runs exist rather than how they train: the figures and tables are
#: already split by dataset and model, so these never label a line.
_RUN_CHOICE_KEYS = ("datasets", "models")


class ExperimentError(UserError):
    """Something the user can fix: not a DVC repository, no experiments, missing metrics."""


@dataclass(frozen=True)
class Experiment:
    name: str  # the experiment's name, or the baseline's branch name / short revision
    rev: str  # the full git revision that holds its dvc.lock
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


def project_root(folder: Path) -> Path:
    """The DVC project ``folder`` is in (the folder holding .dvc/): where the pages go."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(folder)))
    except NotDvcRepoError:
        raise ExperimentError(
            f"{folder.resolve()} is not inside a DVC repository (no .dvc/ folder here or "
            "above): run this from the project's folder, or pass --repo"
        ) from None


def _experiment(entry: Mapping[str, Any], name: str, failed: bool = False) -> Experiment:
    """An experiment from a commit or experiment revision of ``dvc exp show --json``."""
    data = entry.get("data") or {}
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    timestamp = str(data.get("timestamp") or "")
    return Experiment(name, entry["rev"], timestamp, dict(params), failed)


def list_experiments(
    root: Path,
    names: Sequence[str] | None = None,
    all_commits: bool = False,
) -> list[Experiment]:
    """The experiments to compare, oldest first (by the time each one's result was committed).

    Without ``names``: every finished experiment of the current commit (of every commit with
    ``all_commits``), baselines left out; queued and running ones are skipped with a note on
    stderr; queued runs that failed are listed with ``failed=True`` (counted, never averaged).
    With ``names``: exactly those, each an experiment name, a revision (or its start) or a
    baseline's branch name; one that is unknown or not finished is an error.
    """
    project_root(root)
    shown = dvc_json(["exp", "show", *(["-A"] if all_commits else [])], root)
    baselines: list[Experiment] = []
    found: list[Experiment] = []
    unfinished: dict[str, str] = {}
    for commit in shown:
        if commit.get("rev") == "workspace":
            continue
        name = commit.get("name") or commit["rev"][:7]
        baselines.append(_experiment(commit, name))
        for exp in commit.get("experiments") or []:
            tip = exp["revs"][0]
            name = exp.get("name") or tip.get("name") or tip["rev"][:7]
            executor = exp.get("executor")
            state = str((executor or {}).get("state"))
            # a collected experiment has no executor left; a queue-run one may say "success"
            if executor is not None and state not in ("success", "failed"):
                unfinished[name] = state
                continue
            found.append(_experiment(tip, name, failed=state == "failed"))
    found.sort(key=lambda e: (e.timestamp, e.name))
    if names:
        picked = [_pick(name, found, baselines, unfinished) for name in names]
        # one experiment named twice (its name and its revision) is compared once
        return list({exp.rev: exp for exp in picked}.values())
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
    the key spelling of ``dvc exp run -S``. Lists stay values (``datasets=[mnist]``)."""
    if not params:
        return {}
    (flat,) = pd.json_normalize(dict(params), sep=".").to_dict("records")
    return flat


def _as_floats(value: Any) -> Any:
    """``value`` with every number a float: ``-S lr=1`` and ``lr: 1.0`` are one setting."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _as_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_floats(v) for v in value]
    return value


def value_key(value: Any) -> str:
    """What tells two param values apart: equal numbers are one value whatever their type
    (1 and 1.0), as training reads them; a missing key and null are one value too."""
    return json.dumps(_as_floats(value), sort_keys=True, default=str)


def _differ(key: str, flats: Iterable[Mapping[str, Any]]) -> bool:
    return len({value_key(flat.get(key)) for flat in flats}) > 1


def varying_params(experiments: Sequence[Experiment]) -> list[str]:
    """The params (``-S`` spelling) whose values differ between the experiments, in
    params.yaml's order; ``datasets`` and ``models`` left out (figures are split by them)."""
    flats = [flatten_params(e.params) for e in experiments]
    keys = dict.fromkeys(k for flat in flats for k in flat)
    return [k for k in keys if k not in _RUN_CHOICE_KEYS and _differ(k, flats)]


def reads(key: str, model: str, dataset: str, flat: Mapping[str, Any]) -> bool:
    """Whether a run of ``model`` on ``dataset`` with these (flattened) params reads ``key``:
    ``model.<other>.*``, the rows of the optimizers not chosen, ``dataset.<other>.*`` and the
    run choices (``datasets``, ``models``) are never read."""
    head, _, rest = key.partition(".")
    owner = {"model": model, "optimizers": flat.get("optimizer"), "dataset": dataset}
    if head in owner and rest:
        return rest.split(".")[0] == owner[head]
    return key not in _RUN_CHOICE_KEYS


def run_labels(
    experiments: Sequence[Experiment],
    varied: Sequence[str],
    model: str | None = None,
    dataset: str = "",
) -> tuple[dict[str, str], list[str]]:
    """The line labels of one run's figure (``model`` on ``dataset``; None: the experiments'
    own labels, every param read) and the params they show: of ``varied``, those that differ
    among these experiments where a run reads them, and in each label those this run reads."""
    flats = {e.name: flatten_params(e.params) for e in experiments}

    def read(key: str, flat: Mapping[str, Any]) -> bool:
        return model is None or reads(key, model, dataset, flat)

    shown = [k for k in varied if _differ(k, [f for f in flats.values() if read(k, f)])]
    labels = {
        name: ", ".join(f"{k}={param_text(flat.get(k))}" for k in shown if read(k, flat))
        for name, flat in flats.items()
    }
    if shown and len(set(labels.values())) == len(labels):
        return labels, shown
    # a legend must tell every line apart: the name where two are equal (the same params run
    # twice) or nothing is shown
    return {name: f"{name}: {text}" if text else name for name, text in labels.items()}, shown


def same_runs(runs: Iterable[ExperimentRun]) -> dict[str, str]:
    """Experiment -> the first experiment that reached the same runs, for every experiment
    all of whose runs one listed before it had already reached: a no-op change, or a param
    no stage reads, repeats a measurement instead of making a new one."""
    first: dict[str, str] = {}  # run key -> the first experiment that reached it
    owners: dict[str, set[str | None]] = {}
    for run in runs:
        name, key = run.experiment.name, run.run_key
        owner = None if key is None else first.setdefault(key, name)
        owners.setdefault(name, set()).add(owner)
    return {
        name: str(next(iter(found)))
        for name, found in owners.items()
        if len(found) == 1 and None not in found and found != {name}
    }


class _Unreadable(Exception):
    """One experiment's files could not be read: the reason, for its one-line note."""


def _read_json(text: str | None, path: str) -> Any:
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        raise _Unreadable(f"{path} is not valid JSON (a merge conflict left in it?)") from None


def _timings_of(table: Any, key: str | None) -> dict[str, Any]:
    """A run's timings.json entry, only when it says it timed this run (its ``train_run`` is the
    run's key): a run DVC restored from its cache did not rewrite timings.json, and the
    entry the experiment committed may be another run's."""
    if key is not None and isinstance(table, Mapping):
        for entry in table.values():
            if isinstance(entry, Mapping) and entry.get("train_run") == key:
                return {k: v for k, v in entry.items() if k != "train_run"}
    return {}


def collect_runs(root: Path, experiments: Iterable[Experiment]) -> list[ExperimentRun]:
    """Every run (model x dataset of its params) of every experiment, with metrics and history.

    A run is identified by its train stage's run-cache key in the experiment's dvc.lock
    (``ExperimentRun.run_key``). A timings.json entry is merged into a run's metrics only when
    it names that run's key, from any of the experiments (a run restored from DVC's cache was
    timed by the experiment that trained it). An experiment whose files cannot be read is
    skipped with a one-line note on stderr; when none is left, an error says what to do.
    Failed experiments have no files and are passed over.
    """
    from dvc.api import DVCFileSystem

    runs: list[ExperimentRun] = []
    measured: dict[str, dict[str, Any]] = {}  # run key -> its timing, from any experiment
    skipped = False
    for exp in experiments:
        if exp.failed:
            continue  # nothing to read: the caller reports it as failed
        try:
            found, timings = _experiment_runs(DVCFileSystem(str(root), rev=exp.rev), exp)
        except _Unreadable as exc:
            print(f"note: skipping experiment {exp.name!r} ({exp.rev[:7]}): {exc}", file=sys.stderr)
            skipped = True
            continue
        for run in found:
            if timing := _timings_of(timings, run.run_key):
                measured.setdefault(str(run.run_key), timing)
        runs.extend(found)
    if not runs:
        why = " (each skipped above, with why)" if skipped else ""
        raise ExperimentError(
            f"none of the chosen experiments has results to compare{why}: fetch their "
            "outputs (`dvc exp pull <remote> <name>`) or run them again (`dvc exp run`)"
        )
    return [
        replace(run, metrics={**measured.get(run.run_key or "", {}), **run.metrics}) for run in runs
    ]


def _experiment_runs(fs: Any, exp: Experiment) -> tuple[list[ExperimentRun], Any]:
    """One experiment's runs and its timings.json's table, or _Unreadable saying why not."""
    import yaml
    from dvc_data.index.index import DataIndexError, StorageError

    from cnnlab.runs import lock_keys

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
        timings = _read_json(read(str(TIMINGS)), str(TIMINGS))
    except _Unreadable as exc:  # the times are extras: the results still count
        print(f"note: experiment {exp.name!r}: {exc}: its times are not shown", file=sys.stderr)
        timings = None
    lock = read("dvc.lock")
    try:
        keys = lock_keys(yaml.safe_load(lock) if lock else None)
    except yaml.YAMLError:
        raise _Unreadable("dvc.lock is not valid YAML (a merge conflict left in it?)") from None
    found: list[ExperimentRun] = []
    missing: list[str] = []
    for dataset in exp.params.get("datasets") or []:
        for model in exp.params.get("models") or []:
            name = run_name(model, dataset)
            path = f"{METRICS}/{name}.json"
            text = read(path)
            if text is None:
                missing.append(path)
                continue
            _read_json(text, path)  # a merge conflict is named as one
            try:  # the run's record (cnnlab.record): its numbers and its status, as evaluated
                metrics = parse_record(text, path).model_dump()
            except RecordError as exc:
                raise _Unreadable(str(exc)) from None
            logs = f"{TRAIN_LOGS}/{name}"
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
            key = keys.get(f"train@{name}")
            found.append(ExperimentRun(exp, model, dataset, metrics, history, key))
    if missing:
        raise _Unreadable(
            f"no metrics in {', '.join(missing)}: it failed before evaluating, or was run "
            "with other `datasets`/`models` than its params name"
        )
    return found, timings
