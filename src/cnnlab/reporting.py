"""Comparison tables, the summary metrics and the Markdown report for the ``compare`` stage.

Everything here is a pure function of the per-run metrics dicts written by the evaluate stage,
so the same runs always give the same table, JSON and text (no clock, no paths, no DVC).

Units, chosen per consumer:

* the DataFrames are for people and CSV files, so accuracies are in percent (``*_pct``
  columns) and rounded to 4 decimals to keep float noise like ``98.71000000000001`` out;
* :func:`summary_json` is for ``dvc metrics``/``dvc exp show``, so it keeps the evaluate
  stage's key names and units (fractions 0..1) and only adds derived values
  (``gain_points`` in percentage points, ratios);
* :func:`report_markdown` formats for reading: 2-decimal percentages, thousands separators.

A diverged run's accuracies are meaningless (NaN loss, or stuck at chance), so they are
blanked everywhere (NaN in tables, ``null`` in JSON, "diverged (epoch N)" in Markdown)
rather than compared as if they were results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cnnlab.data.catalog import title as catalog_title
from cnnlab.models.options import title as model_title

__all__ = [
    "comparison_table",
    "difference_markdown",
    "experiment_markdown",
    "experiment_table",
    "group_markdown",
    "param_text",
    "report_markdown",
    "summary_json",
    "summary_table",
    "tuned_markdown",
]


#: Metrics that describe what a model learned; blanked for a diverged run.
_QUALITY_KEYS = ("best_val_acc", "test_acc", "test_top5", "final_val_acc", "test_loss")

#: The metrics copied into summary.json per run, in the order they appear there.
_JSON_RUN_KEYS = (
    "model",
    "dataset",
    "status",
    "diverged",
    "diverged_epoch",
    "test_acc",
    "test_top5",
    "test_loss",
    "best_val_acc",
    "best_epoch",
    "final_val_acc",
    "epochs",
    "epochs_completed",
    "params",
    "macs",
)

_SUMMARY_COLUMNS = [
    "dataset",
    "model",
    "best_val_acc_pct",
    "test_acc_pct",
    "test_top5_pct",
    "final_val_acc_pct",
    "params",
    "macs",
    "status",
]

_ROUND = 4


# --------------------------------------------------------------------------------------------
# small helpers


def _float(value: Any) -> float:
    """Numbers from JSON may be None, int, float or numpy scalars; NaN stands for 'unknown'."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if math.isnan(number) else round(number)


def _pct(value: Any) -> float:
    number = _float(value)
    return math.nan if math.isnan(number) else round(number * 100.0, _ROUND)


def _ratio(numerator: Any, denominator: Any) -> float:
    top, bottom = _float(numerator), _float(denominator)
    if math.isnan(top) or math.isnan(bottom) or bottom == 0:
        return math.nan
    return round(top / bottom, _ROUND)


def _json_value(value: Any) -> Any:
    """Make one value JSON-safe: numpy scalars become Python ones and NaN/inf become null,
    because ``json.dumps`` would otherwise write ``NaN``, which is not JSON and which
    ``dvc metrics`` cannot read back."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()  # numpy scalar -> Python scalar
        if isinstance(value, bool):
            return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _is_diverged(run: Mapping[str, Any]) -> bool:
    return bool(run.get("diverged"))


def _diverged_epoch(run: Mapping[str, Any]) -> int | None:
    return _int(run.get("diverged_epoch"))


def _status(run: Mapping[str, Any]) -> str:
    if not _is_diverged(run):
        return "ok"
    epoch = _diverged_epoch(run)
    return "diverged" if epoch is None else f"diverged at epoch {epoch}"


def _quality(run: Mapping[str, Any], key: str) -> Any:
    """A learned-quality metric, or None for a diverged run (its numbers mean nothing)."""
    return None if _is_diverged(run) else run.get(key)


def _run_key(run: Mapping[str, Any]) -> str:
    return f"{run['model']}-{run['dataset']}"


def _ordered(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Group by dataset, then model, each in order of first appearance.

    The caller passes runs in params order (``datasets:``, ``models:``); keeping that order
    rather than sorting alphabetically puts the baseline before the challenger and makes the
    report read the way the experiment was configured.
    """
    seen_keys: set[str] = set()
    for run in runs:
        missing = [k for k in ("model", "dataset") if not run.get(k)]
        if missing:
            raise ValueError(f"run metrics lack {', '.join(missing)}: {dict(run)!r:.200}")
        key = _run_key(run)
        if key in seen_keys:
            raise ValueError(f"run {key!r} appears twice; each model/dataset pair must be unique")
        seen_keys.add(key)
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in runs))
    models = list(dict.fromkeys(str(r["model"]) for r in runs))
    return sorted(
        runs, key=lambda r: (datasets.index(str(r["dataset"])), models.index(str(r["model"])))
    )


def _dataset_title(name: str) -> str:
    return catalog_title(name)


def _model_title(name: str) -> str:
    return model_title(name)


# --------------------------------------------------------------------------------------------
# tables


def summary_table(runs: list[dict]) -> pd.DataFrame:
    """One row per run, accuracies in percent, diverged runs with blank accuracies.

    Params, MACs and timings stay filled for a diverged run: they describe the model and the
    machine, not what was learned, and are still worth comparing.
    """
    rows = []
    for run in _ordered(runs):
        rows.append(
            {
                "dataset": str(run["dataset"]),
                "model": str(run["model"]),
                "best_val_acc_pct": _pct(_quality(run, "best_val_acc")),
                "test_acc_pct": _pct(_quality(run, "test_acc")),
                "test_top5_pct": _pct(_quality(run, "test_top5")),
                "final_val_acc_pct": _pct(_quality(run, "final_val_acc")),
                "params": _int(run.get("params")),
                "macs": _int(run.get("macs")),
                "status": _status(run),
            }
        )
    table = pd.DataFrame(rows, columns=_SUMMARY_COLUMNS)
    # Nullable integers: a missing count stays <NA> instead of turning the column into floats.
    return table.astype({"params": "Int64", "macs": "Int64"})


def _comparison_records(
    runs: Sequence[Mapping[str, Any]], baseline: str, challenger: str
) -> list[dict[str, Any]]:
    """The raw material of the comparison (fractions, not percent), shared by the table and
    the JSON so that the two can never disagree."""
    by_key = {_run_key(r): r for r in _ordered(runs)}
    records = []
    for dataset in dict.fromkeys(str(r["dataset"]) for r in _ordered(runs)):
        base = by_key.get(f"{baseline}-{dataset}")
        chal = by_key.get(f"{challenger}-{dataset}")
        if base is None or chal is None:
            continue
        base_acc = _float(_quality(base, "test_acc"))
        chal_acc = _float(_quality(chal, "test_acc"))
        gain = (chal_acc - base_acc) * 100.0
        records.append(
            {
                "dataset": dataset,
                "base": base,
                "chal": chal,
                "base_test_acc": base_acc,
                "chal_test_acc": chal_acc,
                "gain_points": math.nan if math.isnan(gain) else round(gain, _ROUND),
                "base_params": _int(base.get("params")),
                "chal_params": _int(chal.get("params")),
                "params_ratio": _ratio(chal.get("params"), base.get("params")),
                "base_macs": _int(base.get("macs")),
                "chal_macs": _int(chal.get("macs")),
                "macs_ratio": _ratio(chal.get("macs"), base.get("macs")),
            }
        )
    return records


def _comparison_fields(rec: Mapping[str, Any], b: str, c: str, *, percent: bool) -> dict[str, Any]:
    """One dataset's comparison under model-named keys, shared by the table and the JSON;
    ``percent`` gives accuracies in percent (the table) instead of fractions (the JSON)."""
    acc, suffix = (_pct, "_test_acc_pct") if percent else ((lambda v: v), "_test_acc")
    return {
        f"{b}{suffix}": acc(rec["base_test_acc"]),
        f"{c}{suffix}": acc(rec["chal_test_acc"]),
        "gain_points": rec["gain_points"],
        f"{b}_params": rec["base_params"],
        f"{c}_params": rec["chal_params"],
        "params_ratio": rec["params_ratio"],
        f"{b}_macs": rec["base_macs"],
        f"{c}_macs": rec["chal_macs"],
        "macs_ratio": rec["macs_ratio"],
        f"{b}_status": _status(rec["base"]),
        f"{c}_status": _status(rec["chal"]),
    }


def comparison_table(
    runs: list[dict], baseline: str = "lenet", challenger: str = "alexnet"
) -> pd.DataFrame:
    """Baseline vs challenger per dataset that has both, with the gain in percentage points.

    Columns are named after the models (``lenet_test_acc_pct``) rather than "baseline"/
    "challenger" so that a CSV or ``dvc metrics`` key is readable on its own. Ratios are
    challenger / baseline ("AlexNet has 940x the parameters"). The gain is NaN when either
    run diverged: a difference against a meaningless accuracy would be meaningless too.
    """
    if baseline == challenger:
        raise ValueError(f"baseline and challenger are both {baseline!r}")
    b, c = baseline, challenger
    columns = [
        "dataset",
        f"{b}_test_acc_pct",
        f"{c}_test_acc_pct",
        "gain_points",
        f"{b}_params",
        f"{c}_params",
        "params_ratio",
        f"{b}_macs",
        f"{c}_macs",
        "macs_ratio",
        f"{b}_status",
        f"{c}_status",
    ]
    rows = [
        {"dataset": rec["dataset"], **_comparison_fields(rec, b, c, percent=True)}
        for rec in _comparison_records(runs, baseline, challenger)
    ]
    table = pd.DataFrame(rows, columns=columns)
    ints = [f"{b}_params", f"{c}_params", f"{b}_macs", f"{c}_macs"]
    return table.astype(dict.fromkeys(ints, "Int64"))


# --------------------------------------------------------------------------------------------
# JSON


def summary_json(
    runs: list[dict], baseline: str = "lenet", challenger: str | None = "alexnet"
) -> dict[str, Any]:
    """The content of ``reports/summary.json``: selected metrics per run and the comparison.

    Keys come in a fixed order (runs by dataset then model, fields in a fixed list) so that the
    file is byte-stable and ``git diff`` shows real changes only. Per-class accuracies are left
    to the per-run files: they would swamp ``dvc exp show``.
    """
    out_runs: dict[str, Any] = {}
    for run in _ordered(runs):
        entry: dict[str, Any] = {}
        for key in _JSON_RUN_KEYS:
            if key == "status":
                value: Any = _status(run)
            elif key == "diverged":
                value = _is_diverged(run)
            elif key == "diverged_epoch":
                value = _diverged_epoch(run)
            elif key in _QUALITY_KEYS:
                value = _quality(run, key)
            else:
                value = run.get(key)
            entry[key] = _json_value(value)
        out_runs[_run_key(run)] = entry

    comparison: dict[str, Any] = {}
    for rec in _comparison_records(runs, baseline, challenger) if challenger else []:
        comparison[rec["dataset"]] = _json_value(
            {
                "baseline": baseline,
                "challenger": challenger,
                **_comparison_fields(rec, baseline, challenger, percent=False),
            }
        )
    return {"runs": out_runs, "comparison": comparison}


# --------------------------------------------------------------------------------------------
# Markdown

_DASH = "–"


def _fmt_pct(value: Any) -> str:
    number = _float(value)
    return _DASH if math.isnan(number) else f"{number * 100:.2f}"


def _fmt_int(value: Any) -> str:
    number = _int(value)
    return _DASH if number is None else f"{number:,}"


def _fmt_float(value: Any, digits: int) -> str:
    number = _float(value)
    return _DASH if math.isnan(number) else f"{number:,.{digits}f}"


def _fmt_ratio(value: Any) -> str:
    number = _float(value)
    if math.isnan(number):
        return _DASH
    return f"{number:,.1f}×" if number >= 10 else f"{number:.2f}×"


def _diverged_text(run: Mapping[str, Any]) -> str:
    epoch = _diverged_epoch(run)
    return "diverged" if epoch is None else f"diverged (epoch {epoch})"


def _cell(text: str) -> str:
    """Escape what would break a pipe table: a '|' ends the cell, a newline ends the row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: str) -> str:
    """A GitHub pipe table; ``numeric`` holds one letter per column, ``r`` for right-aligned
    (numbers, so that digits line up when rendered) and ``l`` for text."""
    align = ["---:" if kind == "r" else "---" for kind in numeric]
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _link_target(path: str | Path) -> str:
    target = Path(path).as_posix()
    # CommonMark needs angle brackets around a destination that contains spaces or parens.
    return f"<{target}>" if any(ch in target for ch in " ()<>") else target


def _acc_sentence(run: Mapping[str, Any]) -> str:
    if _is_diverged(run):
        return _diverged_text(run)
    return f"{_fmt_pct(run.get('test_acc'))}%"


def report_markdown(
    runs: list[dict],
    figures: dict[str, str],
    baseline: str = "lenet",
    challenger: str | None = "alexnet",
) -> str:
    """The human-readable report (``plots/report.md`` or similar): summary, comparison, figures.

    ``figures`` maps a dataset to the path of its learning-curve PNG *relative to where the
    report is written*, so the images render on GitHub and in ``dvc plots`` alike; keys that
    are not datasets of the runs are still shown, under their own name, so that extra figures
    (a confusion matrix, say) need no change here.
    """
    ordered = _ordered(runs)
    b_title, c_title = _model_title(baseline), _model_title(challenger or "")
    title = b_title if challenger is None else f"{b_title} vs {c_title}"
    parts: list[str] = [f"# {title}", ""]
    parts.append(
        "Accuracies are in percent on the held-out test split (top-1 unless marked top-5), "
        "measured once with the checkpoint that had the best validation accuracy. "
        "MACs are multiply-accumulates per image. Training time and throughput are "
        "measurements, not results, and differ from run to run, so they are kept out of this "
        "report (which reproduces byte for byte): `dvc metrics show timings.json` lists them."
    )
    parts += ["", "## Summary", ""]

    header = [
        "Dataset",
        "Model",
        "Best val acc (%)",
        "Test acc (%)",
        "Top-5 (%)",
        "Final val acc (%)",
        "Params",
        "MACs",
        "Status",
    ]
    rows = []
    for run in ordered:
        diverged = _is_diverged(run)

        def acc(key: str, run: Mapping[str, Any] = run, diverged: bool = diverged) -> str:
            return _DASH if diverged else _fmt_pct(run.get(key))

        rows.append(
            [
                _dataset_title(str(run["dataset"])),
                _model_title(str(run["model"])),
                acc("best_val_acc"),
                _diverged_text(run) if diverged else _fmt_pct(run.get("test_acc")),
                acc("test_top5"),
                acc("final_val_acc"),
                _fmt_int(run.get("params")),
                _fmt_int(run.get("macs")),
                _diverged_text(run) if diverged else "ok",
            ]
        )
    parts.append(_markdown_table(header, rows, numeric="llrrrrrrl") if rows else "_No runs._")

    records = [] if challenger is None else _comparison_records(runs, baseline, challenger)
    if challenger is not None:
        parts += ["", f"## {b_title} vs {c_title} per dataset", ""]
    if challenger is not None and not records:
        parts.append(f"_No dataset has runs of both {b_title} and {c_title}._")
    elif records:
        header = [
            "Dataset",
            f"{b_title} test acc (%)",
            f"{c_title} test acc (%)",
            "Gain (points)",
            f"{b_title} params",
            f"{c_title} params",
            "Params ratio",
            "MACs ratio",
        ]
        rows = []
        sentences = []
        for rec in records:
            base, chal = rec["base"], rec["chal"]
            gain = _float(rec["gain_points"])
            gain_text = "n/a" if math.isnan(gain) else f"{gain:+.2f}"
            rows.append(
                [
                    _dataset_title(rec["dataset"]),
                    _diverged_text(base) if _is_diverged(base) else _fmt_pct(rec["base_test_acc"]),
                    _diverged_text(chal) if _is_diverged(chal) else _fmt_pct(rec["chal_test_acc"]),
                    gain_text,
                    _fmt_int(rec["base_params"]),
                    _fmt_int(rec["chal_params"]),
                    _fmt_ratio(rec["params_ratio"]),
                    _fmt_ratio(rec["macs_ratio"]),
                ]
            )
            sentence = (
                f"- **{_dataset_title(rec['dataset'])}**: {c_title} {_acc_sentence(chal)}, "
                f"{b_title} {_acc_sentence(base)}"
            )
            if not math.isnan(gain):
                sentence += f" ({gain:+.2f} points for {c_title})"
            if not math.isnan(_float(rec["params_ratio"])):
                sentence += f"; {c_title} has {_fmt_ratio(rec['params_ratio'])} the parameters"
            sentences.append(sentence + ".")
        parts.append(_markdown_table(header, rows, numeric="lrrrrrrr"))
        parts += ["", *sentences]

    if figures:
        parts += ["", "## Figures"]
        datasets = list(dict.fromkeys(str(r["dataset"]) for r in ordered))
        keys = [d for d in datasets if d in figures] + [k for k in figures if k not in datasets]
        for key in keys:
            caption = f"Learning curves on {_dataset_title(key)}" if key in datasets else str(key)
            caption = caption.replace("[", "(").replace("]", ")")
            parts += ["", f"### {caption}", "", f"![{caption}]({_link_target(figures[key])})"]

    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# across experiments

_EXPERIMENT_RUN_COLUMNS = [
    "dataset",
    "model",
    "test_acc_pct",
    "test_top5_pct",
    "best_val_acc_pct",
    "best_epoch",
    "final_val_acc_pct",
    "epochs_completed",
    "train_seconds",
    "status",
]


def experiment_table(rows: Sequence[Mapping[str, Any]], varied: Sequence[str]) -> pd.DataFrame:
    """One row per experiment and run: what the experiment changed, then how the run did.

    ``rows`` hold ``experiment`` (its name), ``rev``, ``label``, ``params`` (the experiment's
    flattened params) and ``run`` (the evaluate stage's metrics, or ``{"dataset", "model",
    "failed": True}`` for a run of an experiment that failed: status "failed", no numbers,
    so that it is seen and counted rather than missing). ``varied`` names the params
    that differ between the experiments; each gets a column, so the CSV can be filtered and
    pivoted on them. Rows come by dataset, then model, then experiment in the given order
    (the order the experiments were run), which keeps each comparison together.
    """
    records = []
    order: dict[str, int] = {}
    for row in rows:
        order.setdefault(str(row["experiment"]), len(order))
        run = row["run"]
        record: dict[str, Any] = {
            "experiment": str(row["experiment"]),
            "rev": str(row["rev"])[:7],
            "label": str(row["label"]),
        }
        record.update({key: param_text(row["params"].get(key)) for key in varied})
        record.update(
            {
                "dataset": str(run["dataset"]),
                "model": str(run["model"]),
                "test_acc_pct": _pct(_quality(run, "test_acc")),
                "test_top5_pct": _pct(_quality(run, "test_top5")),
                "best_val_acc_pct": _pct(_quality(run, "best_val_acc")),
                "best_epoch": _int(run.get("best_epoch")),
                "final_val_acc_pct": _pct(_quality(run, "final_val_acc")),
                "epochs_completed": _int(run.get("epochs_completed")),
                "train_seconds": _float(run.get("train_seconds")),
                "status": "failed" if run.get("failed") else _status(run),
            }
        )
        records.append(record)
    columns = ["experiment", "rev", "label", *varied, *_EXPERIMENT_RUN_COLUMNS]
    table = pd.DataFrame(records, columns=columns)
    if not table.empty:
        datasets = list(dict.fromkeys(table["dataset"]))
        models = list(dict.fromkeys(table["model"]))
        table = table.sort_values(
            ["dataset", "model", "experiment"],
            key=lambda col: col.map(
                {"dataset": datasets.index, "model": models.index, "experiment": order.get}[
                    str(col.name)
                ]
            ),
            kind="stable",
        ).reset_index(drop=True)
    return table.astype({"best_epoch": "Int64", "epochs_completed": "Int64"})


def param_text(value: Any) -> str:
    """A param value as one would type it after ``-S key=``: null, true, [a, b]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(param_text(v) for v in value) + "]"
    return str(value)


def experiment_markdown(
    table: pd.DataFrame,
    varied: Sequence[str],
    figures: Sequence[str],
    sections: Sequence[str] = (),
) -> str:
    """The Markdown page of a cross-experiment comparison.

    First the reference's shape (one row per experiment, one column per dataset and model,
    the test accuracy), then every number per run, then the figures (``figures`` are file
    names relative to the page). Accuracies are those of the best checkpoint by validation
    accuracy, as everywhere in this project, not the last epoch's: the last epoch's is the
    "final val acc" column. ``sections`` (Markdown, e.g. :func:`group_markdown`) come right
    after the introduction: a summary over seeds is what one reads first.
    """
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
    labels = list(dict.fromkeys(table["label"]))
    header = ["Experiment"] + [f"{_dataset_title(d)} {_model_title(m)}" for d, m in runs]
    cells: dict[tuple[str, str, str], str] = {}
    for row in table.itertuples(index=False):
        text = row.status if row.status != "ok" else _fmt_float(row.test_acc_pct, 2)
        cells[(row.label, row.dataset, row.model)] = text
    rows = [[label] + [cells.get((label, d, m), _DASH) for d, m in runs] for label in labels]
    parts += ["", "## Test accuracy (%)", "", _markdown_table(header, rows, "l" + "r" * len(runs))]

    header = [
        "Experiment",
        "Dataset",
        "Model",
        "Test acc (%)",
        "Top-5 (%)",
        "Best val acc (%)",
        "Best epoch",
        "Final val acc (%)",
        "Epochs",
        "Train time (s)",
        "Status",
    ]
    rows = [
        [
            row.label,
            _dataset_title(row.dataset),
            _model_title(row.model),
            _fmt_float(row.test_acc_pct, 2),
            _fmt_float(row.test_top5_pct, 2),
            _fmt_float(row.best_val_acc_pct, 2),
            _fmt_int(row.best_epoch),
            _fmt_float(row.final_val_acc_pct, 2),
            _fmt_int(row.epochs_completed),
            _fmt_float(row.train_seconds, 1),
            row.status,
        ]
        for row in table.itertuples(index=False)
    ]
    parts += ["", "## Every run", "", _markdown_table(header, rows, "lllrrrrrrrl")]
    if figures:
        parts += ["", "## Figures"]
        for name in figures:
            parts += ["", f"![{name}]({_link_target(name)})"]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# across experiments: seeds, differences, the tuned choice (tables of cnnlab.stats)

#: Past this many pairs per run, the differences section keeps the pairs that differ in one
#: param (the rest are in the CSV).
_MAX_PAIRS = 15


def _interval_text(n: Any, low: Any, high: Any, half: Any) -> str:
    count = _int(n) or 0
    if count == 0:
        return _DASH
    if count == 1:
        return "n=1: no interval"
    if math.isnan(_float(low)):
        return _DASH
    return f"{_float(low):.2f} – {_float(high):.2f} (±{_float(half):.2f})"


def _mean_text(n: Any, mean: Any, half: Any) -> str:
    count = _int(n) or 0
    if count == 0:
        return _DASH
    if count == 1:
        return f"{_float(mean):.2f} (n=1: no interval)"
    return f"{_float(mean):.2f} ± {_float(half):.2f} (n={count})"


def group_markdown(groups: pd.DataFrame) -> str:
    """The section on repeats: per configuration and run, the test accuracy's mean, standard
    deviation and 95% interval over the seeds (``cnnlab.stats.group_table``)."""
    parts = [
        "## Test accuracy over seeds (%)",
        "",
        "Experiments that differ only in `seed` are one configuration. Mean and standard "
        "deviation over its seeds; 95% confidence interval of the mean, Student's t "
        "(n=1 gives none). Diverged and failed seeds are counted under Status and left out "
        "of every number.",
        "",
    ]
    header = [
        "Configuration",
        "Dataset",
        "Model",
        "n",
        "Mean",
        "SD",
        "95% CI",
        "Best val mean",
        "Seeds",
        "Status",
    ]
    rows = [
        [
            str(row["group"]),
            _dataset_title(str(row["dataset"])),
            _model_title(str(row["model"])),
            str(_int(row["n"]) or 0),
            _fmt_float(row["test_acc_mean_pct"], 2),
            _fmt_float(row["test_acc_sd_pct"], 2),
            _interval_text(
                row["n"],
                row["test_acc_ci_low_pct"],
                row["test_acc_ci_high_pct"],
                row["test_acc_ci95_pct"],
            ),
            _fmt_float(row["best_val_acc_mean_pct"], 2),
            str(row["seeds"]) or _DASH,
            str(row["status"]),
        ]
        for row in groups.to_dict("records")
    ]
    parts.append(_markdown_table(header, rows, "lllrrrrrll") if rows else "_No runs._")
    return "\n".join(parts) + "\n"


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
    """The section on pairs of the same run: A − B in points of test accuracy with Welch's
    95% interval, and the verdict in words (``cnnlab.stats.difference_table``)."""
    parts = [
        f"## {title}",
        "",
        "Mean test accuracy of A minus that of B, in percentage points, with Welch's 95% "
        "interval for a difference of means. An interval that includes zero means the seeds "
        "run cannot tell the two apart.",
        "",
    ]
    shown, trimmed = _shown_pairs(diffs)
    if trimmed:
        where = f" (every pair: {csv_name})" if csv_name else ""
        parts += [
            f"Runs with more than {_MAX_PAIRS} pairs show those differing in one param{where}.",
            "",
        ]
    header = ["Dataset", "Model", "A", "B", "A − B", "95% CI", "Verdict"]
    rows = []
    for row in shown.to_dict("records"):
        diff = _float(row["diff_points"])
        low, high = _float(row["ci_low_points"]), _float(row["ci_high_points"])
        rows.append(
            [
                _dataset_title(str(row["dataset"])),
                _model_title(str(row["model"])),
                str(row["a"]),
                str(row["b"]),
                _DASH if math.isnan(diff) else f"{diff:+.2f}",
                _DASH if math.isnan(low) else f"{low:+.2f} to {high:+.2f}",
                str(row["verdict"]),
            ]
        )
    parts.append(_markdown_table(header, rows, "llllrrl") if rows else "_No pairs._")
    return "\n".join(parts) + "\n"


def tuned_markdown(tuned: pd.DataFrame, key: str) -> str:
    """The tuned comparison: per family, the ``key`` value chosen on mean validation
    accuracy and the test accuracy there, next to the default value's
    (``cnnlab.stats.tuned_table``)."""
    parts = [
        f"## Tuned `{key}`",
        "",
        f"Within each family (every param equal but `{key}` and `seed`), the `{key}` with the "
        "best mean validation accuracy (best_val_acc) over its seeds is chosen; values with a "
        "diverged seed are not candidates. The test accuracy is that of the chosen value "
        "only and played no part in the choice. The validation mean it was chosen on is "
        "biased upwards by the choice; the test mean is not.",
        "",
    ]
    header = [
        "Family",
        "Dataset",
        "Model",
        f"Chosen {key}",
        "Val mean (chosen on)",
        "Test mean ± 95% CI",
        f"Default {key}: test",
        "Tuned − default",
        "Candidates",
    ]
    rows = []
    for row in tuned.to_dict("records"):
        chosen = f"{row[key]} (default)" if row["is_default"] is True else str(row[key])
        default = row[f"default_{key}"]
        if not pd.isna(row["default_n"]):
            default = "null (default)" if default == "null" else f"{default} (default)"
        gain = _float(row["gain_points"])
        gain_text = row["gain_verdict"] if isinstance(row["gain_verdict"], str) else _DASH
        if not math.isnan(gain):
            low, high = _float(row["gain_ci_low_points"]), _float(row["gain_ci_high_points"])
            interval = "" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]"
            gain_text = f"{gain:+.2f}{interval}: {gain_text}"
        rows.append(
            [
                str(row["family"]),
                _dataset_title(str(row["dataset"])),
                _model_title(str(row["model"])),
                chosen if row["tuned"] == "yes" else str(row["tuned"]),
                _fmt_float(row["best_val_acc_mean_pct"], 2),
                _mean_text(row["n"], row["test_acc_mean_pct"], row["test_acc_ci95_pct"]),
                (
                    f"{default}: "
                    + _mean_text(
                        row["default_n"],
                        row["default_test_acc_mean_pct"],
                        row["default_test_acc_ci95_pct"],
                    )
                    if not pd.isna(row["default_n"])
                    else "not run"
                ),
                gain_text,
                str(row["candidates"]),
            ]
        )
    parts.append(_markdown_table(header, rows, "llllrrrll") if rows else "_No runs._")
    return "\n".join(parts) + "\n"
