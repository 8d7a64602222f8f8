"""Seeds as repeated measurements: groups of experiments, their intervals, the tuned choice.

A single run's test accuracy moves by tenths of a point with the seed, which is as much as
many of the differences one wants to read off a comparison. So the cross-experiment
comparison treats experiments that differ only in ``seed`` as repeats of one configuration
(a *group*) and reports per group the mean, the standard deviation, the count and a 95%
confidence interval of the mean (Student's t), and between two groups of the same run the
difference of means with Welch's interval (no equal-variance assumption: an optimizer that
is unstable has a larger spread than one that is not).

Every function is pure: it takes the per-experiment table of
:func:`cnnlab_compare.reporting.experiment_table` (accuracies in percent, one row per
experiment and run, a column per varied param, ``status`` from the run's record: "ok",
"did not learn", "diverged..." or "failed") and returns a DataFrame. A diverged or failed
run has no accuracy worth averaging: it is counted in its group (``n_diverged``,
``n_failed``) and left out of every mean. A run that did not learn is a measurement (at
chance): in the mean, and named in the group's status. Groups are ``DataFrame.groupby``
groups, intervals ``scipy.stats`` ones (Student's t, Welch's ``ttest_ind``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

__all__ = [
    "CONFIDENCE",
    "CurveGroup",
    "Difference",
    "Summary",
    "curve_groups",
    "difference_table",
    "distinct_runs",
    "for_output",
    "group_columns",
    "group_table",
    "interval_rows",
    "mean_history",
    "optimizer_default",
    "summarize",
    "tuned_differences",
    "tuned_table",
    "verdict",
    "welch_difference",
]

CONFIDENCE = 0.95
_ROUND = 4

#: The param that tells repeats of one configuration apart.
SEED = "seed"
#: The statuses of a run with a test accuracy (cnnlab.record): one that did not learn is a
#: measurement too (near chance, e.g. an lr too small), so it is in the mean, and flagged.
#: "diverged ..." and "failed" runs have no accuracy and are only counted.
DID_NOT_LEARN = "did not learn"
RESULTS = ("ok", DID_NOT_LEARN)
#: The column that names what trained a row's run (cnnlab.runs): rows with the same id are
#: one run that several experiments reached (a no-op change, a param training never reads),
#: one measurement however often it is listed.
RUN_ID = "run_id"


def distinct_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with each run once (its first row); rows without a run id all stay."""
    if RUN_ID not in rows:
        return rows
    ids = rows[RUN_ID]
    known = ids.notna() & (ids.astype(str) != "")
    return rows[~known | ~ids.duplicated()]


def _same_run_text(rows: pd.DataFrame) -> str:
    """ "b = a" for each experiment whose run an earlier row's experiment had reached."""
    if RUN_ID not in rows:
        return ""
    first: dict[str, str] = {}
    pairs = []
    for name, run_id in zip(rows["experiment"], rows[RUN_ID], strict=True):
        if not isinstance(run_id, str) or not run_id:
            continue
        if run_id in first:
            pairs.append(f"{name} = {first[run_id]}")
        else:
            first[run_id] = str(name)
    return "; ".join(pairs)


# --------------------------------------------------------------------------------------------
# statistics on plain numbers


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and confidence interval of the mean of ``n`` values.

    ``sd`` and the interval are NaN for n < 2: one value says nothing about the spread.
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Student's t interval of the mean (``scipy.stats.t.interval`` with n - 1 degrees of
    freedom around the mean, scaled by its standard error).

    NaN values are dropped first (they are runs without a result, counted elsewhere).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(np.mean(x))
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    sd = float(np.std(x, ddof=1))
    if sd == 0:  # every seed alike: scipy wants a positive scale; the interval is the point
        return Summary(n, mean, 0.0, mean, mean)
    low, high = scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=scipy.stats.sem(x))
    return Summary(n, mean, sd, float(low), float(high))


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with Welch's interval; the interval is NaN when it cannot be had
    (fewer than two values on a side, or no spread on either side)."""

    n_a: int
    n_b: int
    diff: float
    low: float
    high: float
    df: float

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def includes_zero(self) -> bool:
        return self.has_interval and self.low <= 0 <= self.high


def welch_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> Difference:
    """Welch's t interval for the difference of two means (scipy's ``ttest_ind`` with
    ``equal_var=False``); NaN values are dropped first."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        return Difference(int(x.size), int(y.size), math.nan, math.nan, math.nan, math.nan)
    diff = float(np.mean(x) - np.mean(y))
    if x.size < 2 or y.size < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):
        return Difference(int(x.size), int(y.size), diff, math.nan, math.nan, math.nan)
    result = scipy.stats.ttest_ind(x, y, equal_var=False)
    interval = result.confidence_interval(confidence)
    return Difference(
        int(x.size), int(y.size), diff, float(interval.low), float(interval.high), float(result.df)
    )


def verdict(d: Difference, label_a: str, label_b: str) -> str:
    """What a reader may conclude from one difference, in words."""
    if d.n_a == 0 or d.n_b == 0:
        return "no interval: a side has no result"
    if not d.has_interval:
        if min(d.n_a, d.n_b) < 2:
            return f"no interval: n={d.n_a} and n={d.n_b} (needs 2 seeds on each side)"
        return "no interval: every seed gave the same accuracy"
    if d.includes_zero:
        seeds = f"n={d.n_a}" if d.n_a == d.n_b else f"n={d.n_a} and n={d.n_b}"
        return f"not distinguishable with {seeds} seeds"
    return f"{label_a if d.diff > 0 else label_b} higher"


# --------------------------------------------------------------------------------------------
# groups of experiments


def group_columns(varied: Sequence[str], *also_ignored: str) -> list[str]:
    """The params that tell configurations apart: every varied one but the seed (and
    ``also_ignored``, e.g. the param being tuned)."""
    return [k for k in varied if k != SEED and k not in also_ignored]


def _label(row: Mapping[str, Any], by: Sequence[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in by) if by else "every experiment"


@dataclass(frozen=True, eq=False)
class _Group:
    label: str
    params: dict[str, Any]
    dataset: str
    model: str
    rows: pd.DataFrame

    @property
    def distinct(self) -> pd.DataFrame:
        """One row per run: experiments that reached the same run are one measurement."""
        return distinct_runs(self.rows)

    @property
    def ok(self) -> pd.DataFrame:
        """The runs with a test accuracy (those that did not learn included)."""
        return self.distinct[self.distinct["status"].isin(RESULTS)]

    @property
    def n_not_learned(self) -> int:
        return int((self.distinct["status"] == DID_NOT_LEARN).sum())

    def values(self, column: str = "test_acc_pct") -> list[float]:
        return [float(v) for v in self.ok[column] if np.isfinite(v)]

    @property
    def n_diverged(self) -> int:
        return int(self.distinct["status"].str.startswith("diverged").sum())

    @property
    def n_failed(self) -> int:
        return int((self.distinct["status"] == "failed").sum())

    @property
    def status(self) -> str:
        """"ok", or what went wrong: seeds without a result (not in the mean) and seeds
        that did not learn (in the mean, at chance)."""
        total, ok, flat = len(self.distinct), len(self.ok), self.n_not_learned
        parts = [
            f"{count} {what}"
            for count, what in ((self.n_diverged, "diverged"), (self.n_failed, "failed"))
            if count
        ]
        if ok == 0:
            return f"no result: {' and '.join(parts)} of {total}"
        texts = [f"{' and '.join(parts)} of {total}, not in the mean"] if parts else []
        if flat:
            texts.append(DID_NOT_LEARN if flat == total else f"{flat} of {total} did not learn")
        return "; ".join(texts) or "ok"


def _groups(table: pd.DataFrame, by: Sequence[str]) -> list[_Group]:
    """The groups in the table's order (``groupby(sort=False)``: by first appearance, and
    the table comes by run, then by experiment): one per run and values of ``by``."""
    if table.empty:
        return []
    found: list[_Group] = []
    for key, rows in table.groupby(["dataset", "model", *by], sort=False, dropna=False):
        dataset, model, *values = key
        params = dict(zip(by, values, strict=True))
        found.append(_Group(_label(params, by), params, str(dataset), str(model), rows))
    return found


def _run_ids(g: _Group) -> set[str]:
    ids = g.ok[RUN_ID] if RUN_ID in g.ok else pd.Series(dtype=object)
    return {str(i) for i in ids if isinstance(i, str) and i}


def _pct(value: float) -> float:
    return round(value, _ROUND) if math.isfinite(value) else math.nan


def _summary_fields(prefix: str, s: Summary) -> dict[str, Any]:
    return {
        f"{prefix}_mean_pct": _pct(s.mean),
        f"{prefix}_sd_pct": _pct(s.sd),
        f"{prefix}_ci95_pct": _pct(s.half_width),
        f"{prefix}_ci_low_pct": _pct(s.low),
        f"{prefix}_ci_high_pct": _pct(s.high),
    }


def _group_record(g: _Group) -> dict[str, Any]:
    test, val = summarize(g.values()), summarize(g.values("best_val_acc_pct"))
    seeds = [str(s) for s in g.distinct[SEED]] if SEED in g.rows else []
    return {
        "group": g.label,
        **g.params,
        "dataset": g.dataset,
        "model": g.model,
        "n": test.n,
        "n_diverged": g.n_diverged,
        "n_failed": g.n_failed,
        **_summary_fields("test_acc", test),
        "best_val_acc_mean_pct": _pct(val.mean),
        "best_val_acc_sd_pct": _pct(val.sd),
        "status": g.status,
        "seeds": seeds,
        "experiments": list(g.rows["experiment"]),
        "same_run": _same_run_text(g.rows),
    }


def _summary_columns(prefix: str) -> list[str]:
    return [f"{prefix}_{what}_pct" for what in ("mean", "sd", "ci95", "ci_low", "ci_high")]


def group_table(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One row per configuration (the values of ``by``) and run: n, mean, sd, 95% CI of the
    test accuracy over the seeds that finished, the mean best validation accuracy, and how
    many seeds diverged or failed (those are in no mean). ``n`` counts distinct runs:
    experiments that reached the same run (``same_run``: "b = a") are one measurement."""
    columns = [
        "group",
        *by,
        "dataset",
        "model",
        "n",
        "n_diverged",
        "n_failed",
        *_summary_columns("test_acc"),
        "best_val_acc_mean_pct",
        "best_val_acc_sd_pct",
        "status",
        "seeds",
        "experiments",
        "same_run",
    ]
    return pd.DataFrame([_group_record(g) for g in _groups(table, by)], columns=columns)


def _difference_row(
    dataset: str, model: str, a: str, b: str, differs_in: str, x: list[float], y: list[float]
) -> dict[str, Any]:
    """One row of a difference table: mean(x) - mean(y) of run (dataset, model) in points,
    Welch's interval and the verdict; ``a``/``b`` are the two sides' labels."""
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


_DIFFERENCE_COLUMNS = [
    "dataset",
    "model",
    "a",
    "b",
    "differs_in",
    "n_a",
    "n_b",
    "diff_points",
    "ci_low_points",
    "ci_high_points",
    "welch_df",
    "verdict",
]


def difference_table(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Every pair of configurations of the same run: mean test accuracy of ``a`` minus
    ``b`` in points, Welch's 95% interval and the verdict; ``differs_in`` names the params
    whose values differ between the two (a pair that differs in one param is the cleanest
    comparison)."""
    records = []
    groups = _groups(table, by)
    for _, run in itertools.groupby(groups, key=lambda g: (g.dataset, g.model)):
        for a, b in itertools.combinations(list(run), 2):
            differs = ", ".join(k for k in by if a.params[k] != b.params[k])
            record = _difference_row(
                a.dataset, a.model, a.label, b.label, differs, a.values(), b.values()
            )
            if _run_ids(a) and _run_ids(a) == _run_ids(b):
                record["verdict"] = "the same runs: training reads none of these params"
            records.append(record)
    return pd.DataFrame(records, columns=_DIFFERENCE_COLUMNS)


# --------------------------------------------------------------------------------------------
# the tuned comparison


def optimizer_default(flat_params: Mapping[str, Any], key: str) -> Any:
    """The value a run of these params uses for ``key`` when ``key`` is null: the chosen
    optimizer's row (``optimizers.<name>.<key>``) for ``lr``, ``weight_decay`` and the other
    row settings; None (PyTorch's default) when the row has no such key."""
    return flat_params.get(f"optimizers.{flat_params.get('optimizer')}.{key}")


def _is_default(text: str, default_text: str | None) -> bool:
    return text == "null" or (default_text is not None and text == default_text)


def tuned_table(
    table: pd.DataFrame,
    varied: Sequence[str],
    key: str,
    defaults: Mapping[str, str | None],
) -> pd.DataFrame:
    """Per family (the configurations that agree on everything but ``key`` and the seed)
    and run: the value of ``key`` with the best mean validation accuracy, and the test
    accuracy there, next to the family's default value when it was run.

    ``table`` needs a column ``key``; ``defaults`` maps an experiment to the text
    (:func:`cnnlab.reporting.param_text`) of the value ``key`` falls back to when null
    (:func:`optimizer_default`). Test accuracy plays no part in the choice: choosing on it
    would make the reported test accuracy an optimistic, selected number. Candidates with a
    diverged seed are not chosen (a value that sometimes diverges is not a setting to
    recommend); ties go to the first value run. The validation mean at the chosen value is
    biased upwards by the choice itself; the test mean is not.
    """
    family_by = group_columns(varied, key)
    records = []
    for family in _groups(table, family_by):
        candidates = _groups(family.rows, [key])
        records.append(_tuned_record(family, candidates, key, defaults))
    columns = [
        "family",
        *family_by,
        "dataset",
        "model",
        "tuned",
        "choice",
        key,
        "is_default",
        "candidates",
        "best_val_acc_mean_pct",
        "n",
        "n_diverged",
        "n_failed",
        *_summary_columns("test_acc"),
        f"default_{key}",
        "default_n",
        "default_test_acc_mean_pct",
        "default_test_acc_ci95_pct",
        "gain_points",
        "gain_ci_low_points",
        "gain_ci_high_points",
        "gain_verdict",
        "experiments",
    ]
    counts = dict.fromkeys(["n", "n_diverged", "n_failed", "default_n"], "Int64")
    return pd.DataFrame(records, columns=columns).astype(counts)


def _tuned_record(
    family: _Group, candidates: list[_Group], key: str, defaults: Mapping[str, str | None]
) -> dict[str, Any]:
    def default_text(g: _Group) -> str | None:
        texts = {defaults.get(e) for e in g.rows["experiment"]}
        return texts.pop() if len(texts) == 1 else None

    def is_default(g: _Group) -> bool:
        return _is_default(str(g.params[key]), default_text(g))

    def shown(g: _Group) -> str:
        return f"{g.params[key]} (default)" if is_default(g) else str(g.params[key])

    def candidate(g: _Group) -> str:
        if g.n_diverged:
            return f"{shown(g)} (not a candidate: {g.n_diverged} of {len(g.rows)} diverged)"
        return shown(g) if g.status == "ok" else f"{shown(g)} ({g.status})"

    val_means = {id(g): summarize(g.values("best_val_acc_pct")).mean for g in candidates}
    eligible = [
        g
        for g in candidates
        if g.n_diverged == 0 and g.values() and math.isfinite(val_means[id(g)])
    ]
    # max() keeps the first of equal means: ties go to the value run first
    chosen = max(eligible, key=lambda g: val_means[id(g)]) if eligible else None
    default = next((g for g in candidates if is_default(g)), None)
    record: dict[str, Any] = {
        "family": family.label,
        **family.params,
        "dataset": family.dataset,
        "model": family.model,
        "tuned": "yes" if chosen is not None else "no: every value diverged or failed",
        "choice": f"{family.label}, {key}={shown(chosen)}" if chosen else family.label,
        key: chosen.params[key] if chosen else None,
        "is_default": is_default(chosen) if chosen else None,
        "candidates": ", ".join(candidate(g) for g in candidates),
    }
    if chosen is not None:
        test = summarize(chosen.values())
        record.update(
            {
                "best_val_acc_mean_pct": _pct(val_means[id(chosen)]),
                "n": test.n,
                "n_diverged": chosen.n_diverged,
                "n_failed": chosen.n_failed,
                **_summary_fields("test_acc", test),
                "experiments": list(chosen.rows["experiment"]),
            }
        )
    if default is not None:
        base = summarize(default.values())
        record.update(
            {
                f"default_{key}": default.params[key],
                "default_n": base.n,
                "default_test_acc_mean_pct": _pct(base.mean),
                "default_test_acc_ci95_pct": _pct(base.half_width),
            }
        )
        if chosen is not None and chosen is not default:
            d = welch_difference(chosen.values(), default.values())
            record.update(
                {
                    "gain_points": _pct(d.diff),
                    "gain_ci_low_points": _pct(d.low),
                    "gain_ci_high_points": _pct(d.high),
                    "gain_verdict": verdict(d, "tuned", "default"),
                }
            )
        elif chosen is default:
            record["gain_verdict"] = "the default was the best by validation"
    return record


def tuned_differences(table: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """Every pair of tuned families of the same run (each at its chosen value): the
    difference of mean test accuracies with Welch's interval, as in
    :func:`difference_table`."""
    records = []
    for (dataset, model), picks in tuned.groupby(["dataset", "model"], sort=False):
        chosen = []
        for row in picks.to_dict("records"):
            names = _names(row)
            if not names:
                continue
            rows = table[
                table["experiment"].isin(names)
                & (table["dataset"] == dataset)
                & (table["model"] == model)
                & table["status"].isin(RESULTS)
            ]
            rows = distinct_runs(rows)
            chosen.append((row["choice"], [float(v) for v in rows["test_acc_pct"]]))
        for (a, x), (b, y) in itertools.combinations(chosen, 2):
            records.append(_difference_row(dataset, model, a, b, "", x, y))
    return pd.DataFrame(records, columns=_DIFFERENCE_COLUMNS)


def _names(row: Mapping[str, Any]) -> list[str]:
    """A group or tuned row's experiments (a list; none where nothing was chosen)."""
    names = row.get("experiments")
    return list(names) if isinstance(names, (list, tuple)) else []


def for_output(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` for a CSV or a page table: list cells (experiments, seeds) as one
    space-separated text, as one would type them after ``--exp``."""
    lists = [c for c in frame.columns if frame[c].map(lambda v: isinstance(v, list)).any()]
    return frame.assign(
        **{c: frame[c].map(lambda v: " ".join(map(str, v)) if isinstance(v, list) else v)
           for c in lists}
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# curves


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


@dataclass(frozen=True)
class CurveGroup:
    """One line of a learning-curve figure over seeds: the mean history of a configuration,
    the band its seeds span (None for one seed), and whether it only has diverged seeds."""

    label: str
    history: pd.DataFrame
    band: tuple[pd.DataFrame, pd.DataFrame] | None
    diverged: bool
    diverged_epoch: int | None


def curve_groups(
    table: pd.DataFrame,
    by: Sequence[str],
    histories: Mapping[str, pd.DataFrame],
    diverged_epochs: Mapping[str, int | None],
) -> list[CurveGroup]:
    """The lines of one run's figure (``table`` holds that run's rows; ``histories`` maps an
    experiment to its history). A mean over the seeds that finished; a configuration with
    diverged seeds only is drawn as their mean and marked diverged; failed seeds have no
    history and only appear in the label's count."""
    lines = []
    for g in _groups(table, by):
        ok = [n for n in g.ok["experiment"] if n in histories]
        bad = [n for n in g.distinct["experiment"] if n in diverged_epochs and n in histories]
        used = ok or bad
        if not used:
            continue
        mean, low, high = mean_history([histories[n] for n in used])
        label = f"{g.label} ({'mean of ' + str(len(used)) if len(used) > 1 else '1 seed'}"
        label += ")" if g.status == "ok" or not ok else f"; {g.status})"
        epochs = [diverged_epochs[n] for n in bad if diverged_epochs[n] is not None]
        lines.append(
            CurveGroup(
                label=label,
                history=mean,
                band=(low, high) if len(used) > 1 else None,
                diverged=not ok,
                diverged_epoch=min(epochs) if epochs and not ok else None,
            )
        )
    return lines


def interval_rows(
    frame: pd.DataFrame, table: pd.DataFrame, label: Callable[[Mapping[str, Any]], str]
) -> list[dict[str, Any]]:
    """The rows of an interval chart from a :func:`group_table` or :func:`tuned_table`:
    label, mean, low, high (percent), the seeds' own test accuracies and a note."""
    rows = []
    for row in frame.to_dict("records"):
        names = _names(row)
        own = table[
            table["experiment"].isin(names)
            & (table["dataset"] == row["dataset"])
            & (table["model"] == row["model"])
            & table["status"].isin(RESULTS)
        ]
        own = distinct_runs(own)
        n = 0 if pd.isna(row["n"]) else int(row["n"])
        lost = [
            f"{int(row[column])} {what}"
            for column, what in (("n_diverged", "diverged"), ("n_failed", "failed"))
            if not pd.isna(row.get(column)) and row.get(column)
        ]
        note = f"(n={', '.join([str(n), *lost])})"
        if "tuned" in row and row["tuned"] != "yes":
            note = str(row["tuned"])
        elif n == 0:
            note = str(row.get("status") or "no result")
        rows.append(
            {
                "label": label(row),
                "mean": float(row["test_acc_mean_pct"]),
                "low": float(row["test_acc_ci_low_pct"]),
                "high": float(row["test_acc_ci_high_pct"]),
                "values": tuple(float(v) for v in own["test_acc_pct"]),
                "note": note,
            }
        )
    return rows
