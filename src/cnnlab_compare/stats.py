"""Seeds as repeated measurements: groups of experiments, their intervals, the tuned choice.

A test accuracy moves by tenths of a point with the seed, so experiments that differ only in
``seed`` are one configuration (a *group*): Student's t interval of its mean; between two
groups, Welch's (an unstable optimizer has a larger spread). Diverged and failed runs are
counted, never averaged; a run that did not learn is a measurement (at chance).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from cnnlab.reporting import DID_NOT_LEARN

CONFIDENCE = 0.95
#: The param that tells repeats of one configuration apart.
SEED = "seed"
#: The statuses of a run with a test accuracy (cnnlab.record).
RESULTS = ("ok", DID_NOT_LEARN)
#: Rows with the same run id (cnnlab.runs) are one run that several experiments reached (a
#: param training never reads): one measurement however often it is listed.
RUN_ID = "run_id"


def distinct_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with each run once (its first row); rows without a run id all stay."""
    return rows[rows[RUN_ID].isna() | ~rows[RUN_ID].duplicated()]


def per_seed(rows: pd.DataFrame, column: str = "test_acc_pct") -> list[float]:
    """``column`` of these runs (each once, with a result), one value per seed: runs that share
    a seed and a configuration (its params from other code or data: experiments of several
    commits) are averaged. The seed is what repeats a measurement; counting such runs apart
    would narrow the interval with no new draw of the seed's randomness."""
    found = rows[rows[column].notna()]
    if found.empty:
        return []
    if SEED not in found:  # the seed did not vary: every run has the same one
        return [float(found[column].mean())]
    return found.groupby(SEED, sort=False)[column].mean().tolist()


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


@dataclass(frozen=True)
class Summary:
    """Mean, sample sd and confidence interval of the mean of ``n`` values; sd and interval
    are NaN for n < 2: one value says nothing about the spread. Equal values (sd 0) have no
    interval either: their spread is unmeasured, not zero (two seeds of a 360-image test set
    agree to the image often), and a zero-width interval would claim certainty."""

    n: int
    mean: float
    sd: float = math.nan
    low: float = math.nan
    high: float = math.nan

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def summarize(values: Sequence[float]) -> Summary:
    """Student's t interval of the mean; NaN values (runs without a result) are dropped."""
    x = _finite(values)
    if x.size < 2:
        return Summary(x.size, float(x[0]) if x.size else math.nan)
    mean, sd = float(np.mean(x)), float(np.std(x, ddof=1))
    if sd == 0:  # every seed alike: no spread measured, so no interval (see Summary)
        return Summary(x.size, mean, 0.0)
    low, high = scipy.stats.t.interval(CONFIDENCE, x.size - 1, loc=mean, scale=scipy.stats.sem(x))
    return Summary(x.size, mean, sd, float(low), float(high))


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with Welch's interval; the interval is NaN when it cannot be had
    (fewer than two values on a side, or a side whose values are all equal: Welch's interval
    would take its spread for zero and rest on the other side's alone)."""

    n_a: int
    n_b: int
    diff: float = math.nan
    low: float = math.nan
    high: float = math.nan
    df: float = math.nan

    @property
    def includes_zero(self) -> bool:
        return self.low <= 0 <= self.high  # False for NaN


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Welch's t interval (``ttest_ind(equal_var=False)``); NaN values are dropped first."""
    x, y = _finite(a), _finite(b)
    if x.size == 0 or y.size == 0:
        return Difference(x.size, y.size)
    diff = float(np.mean(x) - np.mean(y))
    if x.size < 2 or y.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Difference(x.size, y.size, diff)
    result = scipy.stats.ttest_ind(x, y, equal_var=False)
    ci = result.confidence_interval(CONFIDENCE)
    return Difference(x.size, y.size, diff, float(ci.low), float(ci.high), float(result.df))


def verdict(d: Difference, label_a: str, label_b: str) -> str:
    """What a reader may conclude from one difference, in words."""
    if d.n_a == 0 or d.n_b == 0:
        return "no interval: a side has no result"
    if not (math.isfinite(d.low) and math.isfinite(d.high)):
        if min(d.n_a, d.n_b) < 2:
            return f"no interval: n={d.n_a} and n={d.n_b} (needs 2 seeds on each side)"
        return "no interval: a side's seeds all gave the same accuracy (no spread measured)"
    if d.includes_zero:
        seeds = f"n={d.n_a}" if d.n_a == d.n_b else f"n={d.n_a} and n={d.n_b}"
        return f"not distinguishable with {seeds} seeds"
    return f"{label_a if d.diff > 0 else label_b} higher"


def group_columns(varied: Sequence[str], *also_ignored: str) -> list[str]:
    """The params that tell configurations apart: every varied one but the seed (and
    ``also_ignored``, e.g. the param being tuned)."""
    return [k for k in varied if k != SEED and k not in also_ignored]


@dataclass(frozen=True, eq=False)
class _Group:
    """One configuration (``params``) of one run (``dataset``, ``model``) and its rows."""

    label: str
    params: dict[str, Any]
    dataset: str
    model: str
    rows: pd.DataFrame

    @property
    def distinct(self) -> pd.DataFrame:
        return distinct_runs(self.rows)

    @property
    def ok(self) -> pd.DataFrame:
        """The runs with a test accuracy (those that did not learn included)."""
        return self.distinct[self.distinct["status"].isin(RESULTS)]

    def values(self, column: str = "test_acc_pct") -> list[float]:
        """One value per seed (:func:`per_seed`)."""
        return per_seed(self.ok, column)

    @property
    def repeated_seeds(self) -> str:
        """ "seed 1 in 2 runs", for each seed that several distinct runs with a result share."""
        ok = self.ok
        if SEED not in ok:
            return f"{len(ok)} runs of one seed" if len(ok) > 1 else ""
        counts = ok[SEED].value_counts(sort=False)
        return ", ".join(f"seed {s} in {k} runs" for s, k in counts.items() if k > 1)

    def count(self, status: str) -> int:
        """The runs whose status starts with ``status`` ("diverged at epoch 3")."""
        return int(self.distinct["status"].str.startswith(status).sum())

    @property
    def status(self) -> str:
        """ "ok", or what went wrong: seeds without a result (not in the mean) and seeds
        that did not learn (in the mean, at chance)."""
        total, flat = len(self.distinct), self.count(DID_NOT_LEARN)
        counts = ((self.count("diverged"), "diverged"), (self.count("failed"), "failed"))
        lost = " and ".join(f"{count} {what}" for count, what in counts if count)
        if self.ok.empty:
            return f"no result: {lost} of {total}"
        texts = [f"{lost} of {total}, not in the mean"] if lost else []
        if flat:
            texts.append(DID_NOT_LEARN if flat == total else f"{flat} of {total} did not learn")
        if self.repeated_seeds:
            texts.append(f"{self.repeated_seeds}: averaged, n counts seeds")
        return "; ".join(texts) or "ok"


def _groups(table: pd.DataFrame, by: Sequence[str]) -> list[_Group]:
    """One group per run and values of ``by``, in the table's order (by run, then by first
    appearance)."""
    found = []
    for (dataset, model, *values), rows in table.groupby(
        ["dataset", "model", *by], sort=False, dropna=False
    ):
        params = dict(zip(by, values, strict=True))
        label = ", ".join(f"{k}={v}" for k, v in params.items()) or "every experiment"
        found.append(_Group(label, params, str(dataset), str(model), rows))
    return found


def _pct(value: float) -> float:
    return round(value, 4) if math.isfinite(value) else math.nan


_SUMMARY_COLUMNS = [f"test_acc_{what}_pct" for what in ("mean", "sd", "ci95", "ci_low", "ci_high")]


def _summary_fields(s: Summary) -> dict[str, Any]:
    values = (s.mean, s.sd, s.half_width, s.low, s.high)
    return dict(zip(_SUMMARY_COLUMNS, map(_pct, values), strict=True))


def _same_run_text(rows: pd.DataFrame) -> str:
    """ "b = a" for each experiment whose run an earlier row's experiment had reached."""
    first = rows.groupby(RUN_ID, sort=False)["experiment"].transform("first")
    repeat = rows[RUN_ID].notna() & rows[RUN_ID].duplicated()
    pairs = zip(rows["experiment"][repeat], first[repeat], strict=True)
    return "; ".join(f"{b} = {a}" for b, a in pairs)


def group_table(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One row per configuration (the values of ``by``) and run: n, mean, sd, 95% CI of the
    test accuracy over the seeds with a result, the mean best validation accuracy, and how
    many seeds diverged or failed. ``n`` counts seeds: experiments that reached the same run
    (``same_run``: "b = a") are one measurement, distinct runs of one seed are averaged."""
    records = []
    for g in _groups(table, by):
        test, val = summarize(g.values()), summarize(g.values("best_val_acc_pct"))
        records.append(
            {
                "group": g.label,
                **g.params,
                "dataset": g.dataset,
                "model": g.model,
                "n": test.n,
                "n_diverged": g.count("diverged"),
                "n_failed": g.count("failed"),
                **_summary_fields(test),
                "best_val_acc_mean_pct": _pct(val.mean),
                "best_val_acc_sd_pct": _pct(val.sd),
                "status": g.status,
                "seeds": [str(s) for s in g.distinct[SEED]] if SEED in g.rows else [],
                "experiments": list(g.rows["experiment"]),
                "same_run": _same_run_text(g.rows),
            }
        )
    return pd.DataFrame(records)


def _difference_row(
    dataset: str, model: str, a: str, b: str, differs_in: str, x: list[float], y: list[float]
) -> dict[str, Any]:
    """mean(x) - mean(y) in points with Welch's interval and the verdict; ``a``/``b`` are
    the two sides' labels."""
    d = welch_difference(x, y)
    return {
        "dataset": dataset,
        "model": model,
        "a": a,
        "b": b,
        "differs_in": differs_in,
        "n_a": d.n_a,
        "n_b": d.n_b,
        "diff_points": _pct(d.diff),
        "ci_low_points": _pct(d.low),
        "ci_high_points": _pct(d.high),
        "welch_df": _pct(d.df),
        "verdict": verdict(d, a, b),
    }


def difference_table(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Every pair of configurations of the same run; ``differs_in`` names the params whose
    values differ between the two (a pair that differs in one is the cleanest comparison)."""
    records = []
    for _, run in itertools.groupby(_groups(table, by), key=lambda g: (g.dataset, g.model)):
        for a, b in itertools.combinations(list(run), 2):
            differs = ", ".join(k for k in by if a.params[k] != b.params[k])
            record = _difference_row(
                a.dataset, a.model, a.label, b.label, differs, a.values(), b.values()
            )
            _shared_runs(record, _run_ids(a.distinct), _run_ids(b.distinct))
            records.append(record)
    return pd.DataFrame(records)


def _run_ids(rows: pd.DataFrame) -> set[str]:
    return set(rows[RUN_ID].dropna())


def _shared_runs(record: dict[str, Any], a: set[str], b: set[str]) -> None:
    """A pair whose sides share a run is one configuration: what they differ in is read by no
    training (a run is what it was trained with), so no interval between them means anything:
    its verdict says so."""
    if a and a == b:
        record["verdict"] = "the same runs: training reads none of these params"
    elif a & b:
        shared = len(a & b)
        record["verdict"] = (
            f"{shared} run{'s' if shared > 1 else ''} in both: training reads none of these "
            "params, one configuration"
        )


def tuned_table(
    table: pd.DataFrame,
    varied: Sequence[str],
    key: str,
    defaults: Mapping[str, str | None],
) -> pd.DataFrame:
    """Per family (the configurations that agree on everything but ``key`` and the seed)
    and run: the value of ``key`` with the best mean validation accuracy, and the test
    accuracy there, next to the family's default value when it was run.

    ``defaults`` maps an experiment to the text (:func:`cnnlab.reporting.param_text`) of the
    value ``key`` falls back to when null. Choosing on test accuracy would make the reported
    test accuracy an optimistic, selected number; a value with a diverged seed is no setting
    to recommend. Ties go to the first value run.
    """
    family_by = group_columns(varied, key)
    records = [
        _tuned_record(family, _groups(family.rows, [key]), key, defaults)
        for family in _groups(table, family_by)
    ]
    columns = [
        "family", *family_by, "dataset", "model", "tuned", "choice", key, "is_default",
        "candidates", "best_val_acc_mean_pct", "n", "n_diverged", "n_failed",
        *_SUMMARY_COLUMNS, f"default_{key}", "default_n",
        "default_test_acc_mean_pct", "default_test_acc_ci95_pct", "gain_points",
        "gain_ci_low_points", "gain_ci_high_points", "gain_verdict", "experiments",
    ]  # fmt: skip
    counts = dict.fromkeys(["n", "n_diverged", "n_failed", "default_n"], "Int64")
    return pd.DataFrame(records, columns=columns).astype(counts)


def _same_value(a: str, b: str) -> bool:
    """Two param texts (:func:`cnnlab.reporting.param_text`) of one value: equal, or equal
    numbers (``1`` and ``1.0``: a row's ``lr: 1.0`` and ``-S lr=1``)."""
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def _tuned_record(
    family: _Group, candidates: list[_Group], key: str, defaults: Mapping[str, str | None]
) -> dict[str, Any]:
    def is_default(g: _Group) -> bool:
        texts = {defaults.get(e) for e in g.rows["experiment"]}  # None where they disagree
        value, default = str(g.params[key]), texts.pop() if len(texts) == 1 else None
        return value == "null" or (default is not None and _same_value(value, default))

    def shown(g: _Group) -> str:
        return f"{g.params[key]} (default)" if is_default(g) else str(g.params[key])

    def candidate(g: _Group) -> str:
        if g.count("diverged"):
            return f"{shown(g)} (not a candidate: {g.count('diverged')} of {len(g.rows)} diverged)"
        return shown(g) if g.status == "ok" else f"{shown(g)} ({g.status})"

    def val_mean(g: _Group) -> float:
        return summarize(g.values("best_val_acc_pct")).mean

    eligible = [
        g
        for g in candidates
        if g.count("diverged") == 0 and g.values() and math.isfinite(val_mean(g))
    ]
    chosen = max(eligible, key=val_mean) if eligible else None  # the first of equal means
    # the default spelled twice (null, and the row's value): the chosen one, if either
    defaults_run = [g for g in candidates if is_default(g)]
    default = chosen if chosen in defaults_run else next(iter(defaults_run), None)
    record: dict[str, Any] = {
        "family": family.label,
        **family.params,
        "dataset": family.dataset,
        "model": family.model,
        "tuned": "yes" if chosen else "no: every value diverged or failed",
        "choice": f"{family.label}, {key}={shown(chosen)}" if chosen else family.label,
        key: chosen.params[key] if chosen else None,
        "is_default": is_default(chosen) if chosen else None,
        "candidates": ", ".join(candidate(g) for g in candidates),
    }
    if chosen:
        test = summarize(chosen.values())
        record |= {
            "best_val_acc_mean_pct": _pct(val_mean(chosen)),
            "n": test.n,
            "n_diverged": 0,  # a value with a diverged seed is no candidate
            "n_failed": chosen.count("failed"),
            **_summary_fields(test),
            "experiments": list(chosen.rows["experiment"]),
        }
    if default:
        base = summarize(default.values())
        record |= {
            f"default_{key}": default.params[key],
            "default_n": base.n,
            "default_test_acc_mean_pct": _pct(base.mean),
            "default_test_acc_ci95_pct": _pct(base.half_width),
        }
        if chosen is default:
            record["gain_verdict"] = "the default was the best by validation"
        elif chosen:
            d = welch_difference(chosen.values(), default.values())
            record |= {
                "gain_points": _pct(d.diff),
                "gain_ci_low_points": _pct(d.low),
                "gain_ci_high_points": _pct(d.high),
                "gain_verdict": verdict(d, "tuned", "default"),
            }
    return record


def _seed_rows(table: pd.DataFrame, row: Mapping[str, Any]) -> pd.DataFrame:
    """The runs with a result of a group or tuned row, each run once."""
    names = row["experiments"] if isinstance(row["experiments"], list) else []
    own = table[
        table["experiment"].isin(names)
        & (table["dataset"] == row["dataset"])
        & (table["model"] == row["model"])
        & table["status"].isin(RESULTS)
    ]
    return distinct_runs(own)


def _seed_values(table: pd.DataFrame, row: Mapping[str, Any]) -> list[float]:
    """The test accuracies of a group or tuned row's runs, each run once."""
    return _seed_rows(table, row)["test_acc_pct"].tolist()


def tuned_differences(table: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """Every pair of tuned families of the same run, each at its chosen value, as in
    :func:`difference_table`."""
    records = []
    chosen = tuned[tuned["tuned"] == "yes"]
    for (dataset, model), picks in chosen.groupby(["dataset", "model"], sort=False):
        sides = [(row["choice"], _seed_rows(table, row)) for row in picks.to_dict("records")]
        for (a, x), (b, y) in itertools.combinations(sides, 2):
            values = per_seed(x), per_seed(y)
            record = _difference_row(dataset, model, a, b, "", *values)
            _shared_runs(record, _run_ids(x), _run_ids(y))
            records.append(record)
    return pd.DataFrame(records)


def for_output(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` for a CSV or a page table: list cells (experiments, seeds) as one
    space-separated text, as one would type them after ``--exp``."""
    lists = [c for c in frame.columns if frame[c].map(lambda v: isinstance(v, list)).any()]
    return frame.assign(
        **{c: frame[c].map(lambda v: " ".join(map(str, v)) if isinstance(v, list) else v)
           for c in lists}
    )  # fmt: skip


def mean_history(
    histories: Sequence[pd.DataFrame],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The mean, lowest and highest value per epoch over several runs' histories (same
    columns), for a mean curve with a band spanning the seeds; an epoch only some runs
    logged is averaged over those."""
    frames = [h for h in histories if len(h)]
    if not frames:
        empty = histories[0].iloc[:0] if histories else pd.DataFrame()
        return empty, empty, empty
    grouped = pd.concat(frames, ignore_index=True).groupby("epoch", sort=True)
    return grouped.mean().reset_index(), grouped.min().reset_index(), grouped.max().reset_index()


def curve_groups(
    table: pd.DataFrame,
    by: Sequence[str],
    histories: Mapping[str, pd.DataFrame],
    diverged_epochs: Mapping[str, int | None],
) -> tuple[dict[str, pd.DataFrame], dict[str, int | None], dict[str, Any]]:
    """One run's figure lines over seeds (``table`` holds that run's rows; ``histories`` maps
    an experiment to its history): label -> mean history over the seeds that finished, label
    -> first diverged epoch for a line of diverged seeds only, label -> (low, high) band for a
    line of several seeds. Failed seeds have no history: only the label counts them."""
    lines: dict[str, pd.DataFrame] = {}
    diverged: dict[str, int | None] = {}
    bands: dict[str, Any] = {}
    for g in _groups(table, by):
        ok = [n for n in g.ok["experiment"] if n in histories]
        bad = [n for n in g.distinct["experiment"] if n in diverged_epochs and n in histories]
        used = ok or bad
        if not used:
            continue
        mean, low, high = mean_history([histories[n] for n in used])
        label = f"{g.label} ({'mean of ' + str(len(used)) if len(used) > 1 else '1 seed'}"
        label += ")" if g.status == "ok" or not ok else f"; {g.status})"
        lines[label] = mean
        if len(used) > 1:
            bands[label] = (low, high)
        if not ok:
            epochs = [diverged_epochs[n] for n in bad if diverged_epochs[n] is not None]
            diverged[label] = min(epochs) if epochs else None
    return lines, diverged, bands


def interval_rows(frame: pd.DataFrame, table: pd.DataFrame, label: str) -> list[dict[str, Any]]:
    """The rows of an interval chart from a :func:`group_table` or :func:`tuned_table` (its
    column ``label`` names a row): mean, low, high (percent), the seeds' own test accuracies
    and a note."""
    rows = []
    for row in frame.to_dict("records"):
        n = 0 if pd.isna(row["n"]) else int(row["n"])
        lost = [
            f"{int(row[column])} {what}"
            for column, what in (("n_diverged", "diverged"), ("n_failed", "failed"))
            if pd.notna(row[column]) and row[column]
        ]
        note = f"(n={', '.join([str(n), *lost])})"
        if "tuned" in row and row["tuned"] != "yes":
            note = str(row["tuned"])
        elif n == 0:
            note = str(row.get("status") or "no result")
        rows.append(
            {
                "label": str(row[label]),
                "mean": float(row["test_acc_mean_pct"]),
                "low": float(row["test_acc_ci_low_pct"]),
                "high": float(row["test_acc_ci_high_pct"]),
                "values": tuple(_seed_values(table, row)),
                "note": note,
            }
        )
    return rows
