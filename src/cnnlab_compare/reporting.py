"""The tables of a cross-experiment comparison (``cnnlab-compare``) and their Markdown.

:func:`experiment_table`: one row per experiment and run, accuracies in percent (``*_pct``,
for the CSV) rounded to 4 decimals to keep float noise like ``98.71000000000001`` out; the
statistics of cnnlab_compare.stats come from it. The ``*_markdown`` functions format them with
the number formats of the pipeline's report (cnnlab.reporting).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cnnlab.record import DID_NOT_LEARN_ADVICE
from cnnlab.reporting import (
    _DASH,
    DID_NOT_LEARN,
    _float,
    _fmt_float,
    _fmt_int,
    _int,
    _link_target,
    _markdown,
    _pct,
    _run_record,
    dataset_title,
    in_order_seen,
    model_title,
    param_text,
)
from cnnlab_compare.experiments import value_key

#: What the table shows for a run whose training time was not measured for that run (DVC
#: restored it from its cache and the experiment kept another run's timings.json entry).
NOT_MEASURED = "not measured here"


#: The columns of :func:`_run_columns` (the table's, after the experiment's).
_RUN_COLUMNS = ["dataset", "model", "test_acc_pct", "test_top5_pct", "best_val_acc_pct"]
_RUN_COLUMNS += ["best_epoch", "final_val_acc_pct", "epochs_completed", "train_seconds"]
_RUN_COLUMNS += ["status", "run_id"]


def _run_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    run = row["run"]
    metrics = _run_record(run)  # a failed run's has no numbers
    return {
        "dataset": str(run["dataset"]),
        "model": str(run["model"]),
        "test_acc_pct": _pct(metrics["test_acc"]),
        "test_top5_pct": _pct(metrics["test_top5"]),
        "best_val_acc_pct": _pct(metrics["best_val_acc"]),
        "best_epoch": metrics["best_epoch"],
        "final_val_acc_pct": _pct(metrics["final_val_acc"]),
        "epochs_completed": metrics["epochs_completed"],
        "train_seconds": _float(run.get("train_seconds")),
        "status": "failed" if run.get("failed") else metrics["status"],
        # what trained it (cnnlab.runs): equal ids are one run, reached twice
        "run_id": str(row.get("run_key") or "")[:12] or None,
    }


def experiment_table(rows: Sequence[Mapping[str, Any]], varied: Sequence[str]) -> pd.DataFrame:
    """One row per experiment and run: what the experiment changed, then how the run did.

    ``rows`` hold ``experiment``, ``rev``, ``label``, ``params`` (flattened), optionally
    ``run_key`` (what trained the run, cnnlab.runs) and ``run`` (evaluate's metrics, or
    ``{"dataset", "model", "failed": True}``: status "failed", counted rather than missing).
    Each of ``varied`` (the params that differ) gets a column. Rows come by dataset, model,
    then experiment in the given order, which keeps each comparison together.
    """
    # one text per value: equal numbers (lr=1, lr=1.0) are one configuration, as the first
    # experiment spelled it
    texts: dict[tuple[str, str], str] = {}
    for row in rows:
        for key in varied:
            value = row["params"].get(key)
            texts.setdefault((key, value_key(value)), param_text(value))
    records = [
        {
            "experiment": str(row["experiment"]),
            "rev": str(row["rev"])[:7],
            "label": str(row["label"]),
            **{key: texts[key, value_key(row["params"].get(key))] for key in varied},
            **_run_columns(row),
        }
        for row in rows
    ]
    columns = ["experiment", "rev", "label", *varied, *_RUN_COLUMNS]
    table = in_order_seen(
        pd.DataFrame(records, columns=columns), ["dataset", "model", "experiment"]
    )
    return table.astype({"best_epoch": "Int64", "epochs_completed": "Int64"})


def accuracy_text(status: str, acc_pct: Any) -> str:
    """A run's test accuracy; at chance level the number flagged (it is a result, not a
    success); else its status (failed, diverged...)."""
    if status == "ok":
        return _fmt_float(acc_pct)
    return f"{_fmt_float(acc_pct)} ({status})" if status == DID_NOT_LEARN else status


def _code(name: str) -> str:
    """``name`` as a Markdown code span, whatever it holds: git allows a backtick in an
    experiment's name, and a single one would end the span."""
    fence = "`" * (max(map(len, re.findall("`+", name)), default=0) + 1)
    pad = " " if name.startswith("`") or name.endswith("`") else ""
    return f"{fence}{pad}{name}{pad}{fence}"


def _same_run_lines(table: pd.DataFrame) -> list[str]:
    """A Markdown bullet per run that several experiments reached."""
    lines = []
    known = table[table["run_id"].notna()]
    for (dataset, model, run_id), rows in known.groupby(["dataset", "model", "run_id"], sort=False):
        if len(rows) > 1:
            names = ", ".join(map(_code, rows["experiment"]))
            lines.append(
                f"- {model_title(model)} on {dataset_title(dataset)}: {names} (run {run_id})"
            )
    return lines


def experiment_markdown(
    table: pd.DataFrame,
    varied: Sequence[str],
    figures: Sequence[str],
    sections: Sequence[str] = (),
) -> str:
    """The Markdown page of a cross-experiment comparison: the test accuracy per experiment
    and run, every number per run, then the figures (file names relative to the page).
    ``sections`` (e.g. :func:`group_markdown`) come first: a summary over seeds is what one
    reads first."""
    parts = ["# Experiments compared", ""]
    what = ", ".join(f"`{k}`" for k in varied) if varied else "nothing (labels are names)"
    parts.append(
        f"What varies between the experiments: {what}. Accuracies in percent on the test "
        'split, with the checkpoint of the best validation accuracy; "final val" is the '
        "last epoch's validation accuracy."
    )
    for section in sections:
        parts += ["", section.rstrip("\n")]
    if table.empty:
        return "\n".join([*parts, "", "_No runs._"]) + "\n"

    runs = list(dict.fromkeys(zip(table["dataset"], table["model"], strict=True)))
    accuracy = list(map(accuracy_text, table["status"], table["test_acc_pct"]))
    pivot = (
        table.assign(accuracy=accuracy)
        .pivot_table("accuracy", index="label", columns=["dataset", "model"], aggfunc="last")
        .reindex(index=list(dict.fromkeys(table["label"])), columns=runs)
        .fillna(_DASH)
    )
    pivot.columns = [f"{dataset_title(d)} {model_title(m)}" for d, m in runs]
    shown = pivot.rename_axis("Experiment").reset_index()
    parts += ["", "## Test accuracy (%)", "", _markdown(shown, "l" + "r" * len(runs))]

    every = pd.DataFrame(
        {
            "Experiment": table["label"],
            "Dataset": table["dataset"].map(dataset_title),
            "Model": table["model"].map(model_title),
            "Test acc (%)": table["test_acc_pct"].map(_fmt_float),
            "Top-5 (%)": table["test_top5_pct"].map(_fmt_float),
            "Best val acc (%)": table["best_val_acc_pct"].map(_fmt_float),
            "Best epoch": table["best_epoch"].map(_fmt_int),
            "Final val acc (%)": table["final_val_acc_pct"].map(_fmt_float),
            "Epochs": table["epochs_completed"].map(_fmt_int),
            "Train time (s)": table["train_seconds"].map(
                lambda v: NOT_MEASURED if math.isnan(_float(v)) else _fmt_float(v, 1)
            ),
            "Status": table["status"],
        }
    )
    parts += ["", "## Every run", "", _markdown(every, "lllrrrrrrrl")]
    names = [
        f"- {_code(row['experiment'])}: {model_title(row['model'])} on "
        f"{dataset_title(row['dataset'])}, {_fmt_float(row['test_acc_pct'])}%"
        for row in table[table["status"] == DID_NOT_LEARN].to_dict("records")
    ]
    if names:
        parts += [
            "",
            "## Runs that did not learn",
            "",
            "Their test accuracy is within a few points of chance (one over the number of "
            f"classes): they trained without error and learned nothing; {DID_NOT_LEARN_ADVICE}.",
            "",
            *names,
        ]
    same = _same_run_lines(table)
    if same:
        parts += [
            "",
            "## Experiments that reached the same run",
            "",
            "These experiments trained nothing new (DVC restored the run from its cache, or "
            "what they changed is read by no training stage): one measurement each, counted "
            "once in every mean and interval.",
            "",
            *same,
        ]
    if figures:
        parts += ["", "## Figures"]
        for name in figures:
            parts += ["", f"![{name}]({_link_target(name)})"]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# seeds, differences, the tuned choice (the tables of cnnlab_compare.stats)

#: Past this many pairs per run, the differences section keeps the pairs that differ in one
#: param (the rest are in the CSV).
_MAX_PAIRS = 15


def _section(title: str, intro: str, rows: list[dict[str, str]], align: str, empty: str) -> str:
    table = _markdown(pd.DataFrame(rows), align) if rows else empty
    return "\n".join([f"## {title}", "", intro, "", table]) + "\n"


def _interval_text(n: Any, low: Any, high: Any, half: Any) -> str:
    count = _int(n) or 0
    if count == 0:
        return _DASH
    if count == 1:
        return "n=1: no interval"
    if math.isnan(_float(low)):
        return f"n={count}, every seed the same: no interval"
    return f"{_float(low):.2f} – {_float(high):.2f} (±{_float(half):.2f})"


def _mean_text(n: Any, mean: Any, half: Any) -> str:
    count = _int(n) or 0
    if count == 0:
        return _DASH
    if count == 1:
        return f"{_float(mean):.2f} (n=1: no interval)"
    if math.isnan(_float(half)):
        return f"{_float(mean):.2f} (n={count}, every seed the same: no interval)"
    return f"{_float(mean):.2f} ± {_float(half):.2f} (n={count})"


def _run_cells(row: Mapping[str, Any]) -> dict[str, str]:
    return {"Dataset": dataset_title(str(row["dataset"])), "Model": model_title(str(row["model"]))}


def group_markdown(groups: pd.DataFrame) -> str:
    """Per configuration and run, the test accuracy's mean, SD and 95% interval over the seeds
    (``cnnlab_compare.stats.group_table``)."""
    rows = [
        {
            "Configuration": str(row["group"]),
            **_run_cells(row),
            "n": str(_int(row["n"]) or 0),
            "Mean": _fmt_float(row["test_acc_mean_pct"]),
            "SD": _fmt_float(row["test_acc_sd_pct"]),
            "95% CI": _interval_text(
                row["n"],
                row["test_acc_ci_low_pct"],
                row["test_acc_ci_high_pct"],
                row["test_acc_ci95_pct"],
            ),
            "Best val mean": _fmt_float(row["best_val_acc_mean_pct"]),
            "Seeds": " ".join(map(str, row["seeds"])) or _DASH,
            "Status": str(row["status"]),
        }
        for row in groups.to_dict("records")
    ]
    intro = (
        "Experiments that differ only in `seed` are one configuration. Mean and standard "
        "deviation over its seeds; 95% confidence interval of the mean, Student's t "
        "(n=1 gives none). Diverged and failed seeds are counted under Status and left out "
        "of every number."
    )
    return _section("Test accuracy over seeds (%)", intro, rows, "lllrrrrrll", "_No runs._")


def _shown_pairs(diffs: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """All pairs, or, where a run has too many to read, those that differ in one param."""
    kept, trimmed = [], False
    for _, run in diffs.groupby(["dataset", "model"], sort=False):
        if len(run) > _MAX_PAIRS and run["differs_in"].str.len().gt(0).all():
            run = run[~run["differs_in"].str.contains(",", regex=False)]
            trimmed = True
        kept.append(run)
    return (pd.concat(kept) if kept else diffs), trimmed


def difference_markdown(
    diffs: pd.DataFrame, title: str = "Differences between configurations", csv_name: str = ""
) -> str:
    """Pairs of the same run: A − B in points of test accuracy with Welch's 95% interval and
    the verdict in words (``cnnlab_compare.stats.difference_table``)."""
    intro = (
        "Mean test accuracy of A minus that of B, in percentage points, with Welch's 95% "
        "interval for a difference of means. An interval that includes zero means the seeds "
        "run cannot tell the two apart."
    )
    shown, trimmed = _shown_pairs(diffs)
    if trimmed:
        where = f" (every pair: {csv_name})" if csv_name else ""
        intro += f"\n\nRuns with more than {_MAX_PAIRS} pairs show those differing in one param"
        intro += f"{where}."
    rows = []
    for row in shown.to_dict("records"):
        diff = _float(row["diff_points"])
        low, high = _float(row["ci_low_points"]), _float(row["ci_high_points"])
        rows.append(
            {
                **_run_cells(row),
                "A": str(row["a"]),
                "B": str(row["b"]),
                "A − B": _DASH if math.isnan(diff) else f"{diff:+.2f}",
                "95% CI": _DASH if math.isnan(low) else f"{low:+.2f} to {high:+.2f}",
                "Verdict": str(row["verdict"]),
            }
        )
    return _section(title, intro, rows, "llllrrl", "_No pairs._")


def tuned_markdown(tuned: pd.DataFrame, key: str) -> str:
    """Per family, the ``key`` value chosen on mean validation accuracy and the test accuracy
    there, next to the default value's (``cnnlab_compare.stats.tuned_table``)."""
    rows = []
    for row in tuned.to_dict("records"):
        chosen = f"{row[key]} (default)" if row["is_default"] is True else str(row[key])
        default = "not run"
        if not pd.isna(row["default_n"]):
            value = row[f"default_{key}"]
            value = "null (default)" if value == "null" else f"{value} (default)"
            mean = _mean_text(
                row["default_n"],
                row["default_test_acc_mean_pct"],
                row["default_test_acc_ci95_pct"],
            )
            default = f"{value}: {mean}"
        gain = _float(row["gain_points"])
        gain_text = row["gain_verdict"] if isinstance(row["gain_verdict"], str) else _DASH
        if not math.isnan(gain):
            low, high = _float(row["gain_ci_low_points"]), _float(row["gain_ci_high_points"])
            interval = "" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]"
            gain_text = f"{gain:+.2f}{interval}: {gain_text}"
        rows.append(
            {
                "Family": str(row["family"]),
                **_run_cells(row),
                f"Chosen {key}": chosen if row["tuned"] == "yes" else str(row["tuned"]),
                "Val mean (chosen on)": _fmt_float(row["best_val_acc_mean_pct"]),
                "Test mean ± 95% CI": _mean_text(
                    row["n"], row["test_acc_mean_pct"], row["test_acc_ci95_pct"]
                ),
                f"Default {key}: test": default,
                "Tuned − default": gain_text,
                "Candidates": str(row["candidates"]),
            }
        )
    intro = (
        f"Within each family (every param equal but `{key}` and `seed`), the `{key}` with the "
        "best mean validation accuracy (best_val_acc) over its seeds is chosen; values with a "
        "diverged seed are not candidates. The test accuracy is that of the chosen value "
        "only and played no part in the choice. The validation mean it was chosen on is "
        "biased upwards by the choice; the test mean is not."
    )
    return _section(f"Tuned `{key}`", intro, rows, "llllrrrll", "_No runs._")
