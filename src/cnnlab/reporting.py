"""The tables of the comparisons and what renders from them: JSON, Markdown, the figures.

Each report has ONE tidy table, built once with pandas, and every output of the report
comes from it:

* :func:`run_table` (the ``compare`` stage): one row per run, in the evaluate stage's key
  names and units (accuracies as fractions 0..1) plus the titles to show. ``reports/
  summary.json`` (:func:`summary_json`), ``reports/report.md`` (:func:`report_markdown`) and
  the stage's figures (their titles and legends) render from it; :func:`comparison` is its
  baseline-vs-challenger view per dataset, shared by the JSON and the Markdown so that the
  two cannot disagree.
* The cross-experiment tables (``cnnlab-compare``) live in :mod:`cnnlab_compare.reporting`,
  which formats them with the helpers here, so both kinds of report read alike.

Everything here is a pure function of its inputs, so the same runs always give the same
table, JSON and text (no clock, no paths, no DVC). summary.json is for ``dvc metrics``/
``dvc exp show``: it keeps the evaluate stage's keys and units and only adds derived values
(``gain_points`` in percentage points, ratios). Markdown is for reading: 2-decimal
percentages, thousands separators, tables written by pandas (``DataFrame.to_markdown``).

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

from cnnlab.data.catalog import title as dataset_title
from cnnlab.models.options import title as model_title
from cnnlab.record import DID_NOT_LEARN_ADVICE, status_of

__all__ = [
    "DID_NOT_LEARN",
    "comparison",
    "dataset_title",
    "model_title",
    "param_text",
    "recipe",
    "report_markdown",
    "run_table",
    "schedule_text",
    "summary_json",
]


_ROUND = 4

#: What a model learned: blanked (NaN) for a diverged run.
_QUALITY = ("test_acc", "test_top5", "test_loss", "best_val_acc", "final_val_acc")
_COUNTS = ("best_epoch", "epochs", "epochs_completed", "params", "macs")

#: The run table's columns, with their dtypes (nullable integers: a missing count stays <NA>
#: instead of turning the column into floats). summary.json holds all but the titles per run,
#: in this order.
_RUN_DTYPES: dict[str, str] = {
    "model": "str",
    "dataset": "str",
    "status": "str",
    "diverged": "bool",
    "diverged_epoch": "Int64",
    **dict.fromkeys(_QUALITY, "float64"),
    **dict.fromkeys(_COUNTS, "Int64"),
    "num_classes": "Int64",
    "model_title": "str",
    "dataset_title": "str",
}
_JSON_KEYS = (
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
    "num_classes",
)

DID_NOT_LEARN = "did not learn"
#: Top-5 accuracy is 100% by definition with 5 classes or fewer: shown only above that.
TOP5_MIN_CLASSES = 6


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


def _rounded(values: pd.Series) -> pd.Series:
    """Python's ``round`` (correctly rounded, unlike numpy's) to 4 decimals; NaN stays."""
    return values.astype(float).map(lambda v: round(v, _ROUND) if math.isfinite(v) else math.nan)


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    top, bottom = numerator.astype(float), denominator.astype(float)
    return _rounded((top / bottom).where(bottom != 0))


def _json_value(value: Any) -> Any:
    """Make one value JSON-safe: numpy scalars become Python ones and NaN/inf become null,
    because ``json.dumps`` would otherwise write ``NaN``, which is not JSON and which
    ``dvc metrics`` cannot read back. Not ``DataFrame.to_json``: it rounds floats to 10
    digits (``double_precision`` at most 15), where summary.json keeps evaluate's values."""
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
        key = f"{run['model']}-{run['dataset']}"
        if key in seen_keys:
            raise ValueError(f"run {key!r} appears twice; each model/dataset pair must be unique")
        seen_keys.add(key)
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in runs))
    models = list(dict.fromkeys(str(r["model"]) for r in runs))
    return sorted(
        runs, key=lambda r: (datasets.index(str(r["dataset"])), models.index(str(r["model"])))
    )


# --------------------------------------------------------------------------------------------
# the compare stage: one row per run


def _run_record(run: Mapping[str, Any]) -> dict[str, Any]:
    diverged = bool(run.get("diverged"))
    epoch = _int(run.get("diverged_epoch"))
    classes = _int(len(run["classes"]) if "classes" in run else run.get("num_classes"))
    quality = {key: math.nan if diverged else _float(run.get(key)) for key in _QUALITY}
    if classes is not None and classes < TOP5_MIN_CLASSES:
        quality["test_top5"] = math.nan
    status = run.get("status")  # the record's (cnnlab.record.status_of)
    if status is None and classes is not None:
        status = status_of(_float(run.get("test_acc")), classes, diverged)
    if status == "diverged" or (status is None and diverged):
        status = "diverged" if epoch is None else f"diverged at epoch {epoch}"
    return {
        "model": str(run["model"]),
        "dataset": str(run["dataset"]),
        "status": status or "ok",
        "diverged": diverged,
        "diverged_epoch": epoch,
        **quality,
        **{key: _int(run.get(key)) for key in _COUNTS},
        "num_classes": classes,
        "model_title": model_title(str(run["model"])),
        "dataset_title": dataset_title(str(run["dataset"])),
    }


def run_table(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The compare stage's table: one row per run (the evaluate stage's metrics dicts), by
    dataset then model in the order given, in the evaluate stage's units, with the titles
    the report and the figures show and ``status`` ("ok", "diverged at epoch N").

    A diverged run's accuracies and loss are NaN. Params and MACs stay filled: they describe
    the model, not what was learned, and are still worth comparing. Measured times differ
    from run to run and are left out (they are in ``timings.json``), so that everything made
    from this table reproduces byte for byte.
    """
    records = [_run_record(run) for run in _ordered(runs)]
    return pd.DataFrame(
        {
            column: pd.Series([r[column] for r in records], dtype=dtype)
            for column, dtype in _RUN_DTYPES.items()
        }
    )


def comparison(table: pd.DataFrame, baseline: str, challenger: str) -> pd.DataFrame:
    """Baseline vs challenger per dataset of ``table`` (:func:`run_table`) that has runs of
    both, with the gain in percentage points.

    Columns are named after the models (``lenet_test_acc``) rather than "baseline"/
    "challenger" so that a ``dvc metrics`` key is readable on its own. Ratios are
    challenger / baseline ("AlexNet has 940x the parameters"). The gain is NaN when either
    run diverged: a difference against a meaningless accuracy would be meaningless too.
    """
    if baseline == challenger:
        raise ValueError(f"baseline and challenger are both {baseline!r}")
    b, c = baseline, challenger
    base = table[table["model"] == b].set_index("dataset")
    chal = table[table["model"] == c].set_index("dataset")
    datasets = base.index.intersection(chal.index, sort=False)
    base, chal = base.loc[datasets], chal.loc[datasets]
    frame = pd.DataFrame(
        {
            f"{b}_test_acc": base["test_acc"],
            f"{c}_test_acc": chal["test_acc"],
            "gain_points": _rounded((chal["test_acc"] - base["test_acc"]) * 100.0),
            f"{b}_params": base["params"],
            f"{c}_params": chal["params"],
            "params_ratio": _ratio(chal["params"], base["params"]),
            f"{b}_macs": base["macs"],
            f"{c}_macs": chal["macs"],
            "macs_ratio": _ratio(chal["macs"], base["macs"]),
            f"{b}_status": base["status"],
            f"{c}_status": chal["status"],
        },
        index=datasets,
    )
    return frame.rename_axis("dataset").reset_index()


def summary_json(
    table: pd.DataFrame,
    baseline: str,
    challenger: str | None,
    recipes: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The content of ``reports/summary.json``: the run table's metrics per run and the
    comparison (none without a challenger).

    ``recipes`` (run name -> :func:`recipe`) are written with each run, and a run that did
    not learn gets ``advice``. Keys come in a fixed order (runs by dataset then model, fields
    in a fixed list) so that the file is byte-stable and ``git diff`` shows real changes
    only. Per-class accuracies are left to the per-run files: they would swamp
    ``dvc exp show``.
    """
    runs = {}
    for row in table.to_dict("records"):
        name = f"{row['model']}-{row['dataset']}"
        runs[name] = {key: _json_value(row[key]) for key in _JSON_KEYS}
        if row["status"] == DID_NOT_LEARN:
            runs[name]["advice"] = DID_NOT_LEARN_ADVICE
        if recipes and name in recipes:
            runs[name]["recipe"] = _json_value(dict(recipes[name]))
    pairs: dict[str, Any] = {}
    if challenger is not None:
        for row in comparison(table, baseline, challenger).to_dict("records"):
            dataset = row.pop("dataset")
            pairs[dataset] = _json_value({"baseline": baseline, "challenger": challenger, **row})
    return {"runs": runs, "comparison": pairs}


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


def _fmt_acc(value: Any) -> str:
    """An accuracy already in percent."""
    return _fmt_float(value, 2)


def _fmt_ratio(value: Any) -> str:
    number = _float(value)
    if math.isnan(number):
        return _DASH
    return f"{number:,.1f}×" if number >= 10 else f"{number:.2f}×"


#: Characters Markdown would act on rather than show: a backslash escapes, text between two
#: ``$`` is maths on GitHub, backticks make code, ``*``/``~`` emphasis and strike-through,
#: ``[...]`` links, and ``<``/``>``/``&`` HTML tags and entities (an experiment named
#: ``<script>alert(1)<`` must be shown, not run). ``_`` is left: GitHub ignores it inside
#: words, where names have it.
_MARKDOWN_ESCAPES = str.maketrans({c: "\\" + c for c in "\\$`*~[]<>&"} | {"\n": " "})


def _text(text: str) -> str:
    """Escape what Markdown would not show as typed (:data:`_MARKDOWN_ESCAPES`); a newline,
    which would end a heading, becomes a space."""
    return text.translate(_MARKDOWN_ESCAPES)


def _cell(text: str) -> str:
    """:func:`_text`, and a '|', which would end the cell (a newline, which would end the
    row, is a space already)."""
    return _text(text).replace("|", "\\|")


def _markdown(frame: pd.DataFrame, align: str) -> str:
    """A GitHub pipe table of ``frame`` (text cells), written by pandas; ``align`` holds one
    letter per column, ``r`` for right-aligned (numbers, so that digits line up) and ``l``
    for text."""
    escaped = frame.map(_cell).rename(columns=_cell)
    aligns = ["right" if kind == "r" else "left" for kind in align]
    # Cells are text already: tabulate must not reparse "98.50" as a number and drop the 0.
    return escaped.to_markdown(index=False, disable_numparse=True, colalign=aligns)


#: What a spreadsheet reads as the start of a formula (OWASP's list): a cell of text that
#: begins with one gets a leading ``'``, which spreadsheets show as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` for a CSV file that may be opened in a spreadsheet: an experiment named
    ``=HYPERLINK(...)`` must stay text. Numbers (-0.5 included) are left as they are."""

    def safe(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
            try:
                float(value)
            except ValueError:
                return "'" + value
        return value

    safe_frame = frame.copy()
    for column in frame.select_dtypes(include=["object", "string"]).columns:
        safe_frame[column] = frame[column].map(safe)
    return safe_frame


def _link_target(path: str | Path) -> str:
    target = Path(path).as_posix()
    # CommonMark needs angle brackets around a destination that contains spaces or parens.
    return f"<{target}>" if any(ch in target for ch in " ()<>") else target


def _outcome(table: pd.DataFrame) -> pd.Series:
    """Per run: "ok", "did not learn", or "diverged (epoch N)"."""
    diverged = table["diverged_epoch"].map(
        lambda epoch: "diverged" if pd.isna(epoch) else f"diverged (epoch {epoch})"
    )
    return diverged.where(table["diverged"], table["status"]).astype(str)


def _test_acc(table: pd.DataFrame) -> pd.Series:
    """Per run: the test accuracy in percent, or the divergence that left none."""
    return table["test_acc"].map(_fmt_pct).where(~table["diverged"], _outcome(table))


_INTRO = (
    "Accuracies are in percent on the held-out test split (top-1 unless marked top-5), "
    "measured once with the checkpoint that had the best validation accuracy. "
    "MACs are multiply-accumulates per image. Training time and throughput are "
    "measurements, not results, and differ from run to run, so they are kept out of this "
    "report (which reproduces byte for byte): `dvc metrics show timings.json` lists them."
)


def _summary_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "_No runs._"
    shown = pd.DataFrame(
        {
            "Dataset": table["dataset_title"],
            "Model": table["model_title"],
            "Best val acc (%)": table["best_val_acc"].map(_fmt_pct),
            "Test acc (%)": _test_acc(table),
            "Top-5 (%)": table["test_top5"].map(_fmt_pct),
            "Final val acc (%)": table["final_val_acc"].map(_fmt_pct),
            "Params": table["params"].map(_fmt_int),
            "MACs": table["macs"].map(_fmt_int),
            "Status": _outcome(table),
        }
    )
    classes = table["num_classes"].dropna()
    if len(classes) == len(table) and (classes < TOP5_MIN_CLASSES).all():
        return _markdown(shown.drop(columns="Top-5 (%)"), "llrrrrrl")  # always 100%
    return _markdown(shown, "llrrrrrrl")


def recipe(r: Mapping[str, Any]) -> dict[str, Any]:
    """What a run was trained with, for the report and summary.json, from its record's
    ``recipe`` (train's checkpoint header plus prepare's split sizes and subsampling)."""
    return {
        "optimizer": r.get("optimizer"),
        "lr": r.get("lr"),  # None: PyTorch's default
        "weight_decay": r.get("weight_decay"),
        "schedule": schedule_text(r.get("scheduler") or {}),
        "epochs": r.get("epochs"),
        "batch_size": r.get("batch_size"),
        "train_images": r.get("train_images"),
        "val_images": r.get("val_images"),
        "test_images": r.get("test_images"),
        "max_train": r.get("max_train"),
        "max_test": r.get("max_test"),
    }


def schedule_text(s: Mapping[str, Any]) -> str:
    """The learning-rate schedule of params.yaml's ``scheduler`` section in a few words: its
    name and the keys that schedule reads."""
    name = str(s.get("name"))
    text = {
        "step": f"step (x{s.get('gamma')} every {s.get('step_size')} epochs)",
        "multistep": f"multistep (x{s.get('gamma')} after epochs "
        f"{param_text(s.get('milestones'))})",
        "cosine": f"cosine (down to {s.get('min_lr')})",
        "onecycle": f"onecycle (peak at {s.get('pct_start')} of the run)",
        "plateau": f"plateau (x{s.get('factor')} when {s.get('monitor')} stalls "
        f"{s.get('patience')} epochs)",
    }.get(name, name)
    warmup = s.get("warmup_epochs")
    if name != "onecycle" and warmup:
        text += f", {warmup} warm-up epochs"
    return text


def _subsampling(r: Mapping[str, Any]) -> str:
    parts = [f"{key}={r[key]:,}" for key in ("max_train", "max_test") if r.get(key) is not None]
    return ", ".join(parts) or "none"


def _recipe_markdown(table: pd.DataFrame, recipes: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for row in table.to_dict("records"):
        r = recipes.get(f"{row['model']}-{row['dataset']}")
        if r is None:
            continue
        sizes = " / ".join(
            _fmt_int(r.get(k)) for k in ("train_images", "val_images", "test_images")
        )
        rows.append(
            {
                "Dataset": row["dataset_title"],
                "Model": row["model_title"],
                "Optimizer": str(r["optimizer"]),
                "lr": "PyTorch's default" if r.get("lr") is None else f"{r['lr']:g}",
                "Weight decay": _DASH
                if r.get("weight_decay") is None
                else f"{r['weight_decay']:g}",
                "Schedule": str(r["schedule"]),
                "Epochs": _fmt_int(r["epochs"]),
                "Batch": _fmt_int(r["batch_size"]),
                "Train / val / test images": sizes,
                "Subsampled": _subsampling(r),
            }
        )
    return _markdown(pd.DataFrame(rows), "llllllrrrl") if rows else "_No recipe recorded._"


def _not_learned_markdown(table: pd.DataFrame) -> list[str]:
    lines = []
    for row in table[table["status"] == DID_NOT_LEARN].to_dict("records"):
        chance = 100 / row["num_classes"]
        lines.append(
            f"- **{_text(row['model_title'])} on {_text(row['dataset_title'])}** did not learn: "
            f"test accuracy {_fmt_pct(row['test_acc'])}%, chance {chance:.2f}% "
            f"({row['num_classes']} classes); {DID_NOT_LEARN_ADVICE}."
        )
    return lines


def _comparison_markdown(table: pd.DataFrame, baseline: str, challenger: str) -> list[str]:
    b_title, c_title = model_title(baseline), model_title(challenger)
    pairs = comparison(table, baseline, challenger)
    if pairs.empty:
        return [f"_No dataset has runs of both {b_title} and {c_title}._"]
    acc = dict(
        zip(zip(table["dataset"], table["model"], strict=True), _test_acc(table), strict=True)
    )
    base = pairs["dataset"].map(lambda d: acc[(d, baseline)])
    chal = pairs["dataset"].map(lambda d: acc[(d, challenger)])
    gain = pairs["gain_points"].map(lambda g: "n/a" if math.isnan(g) else f"{g:+.2f}")
    shown = pd.DataFrame(
        {
            "Dataset": pairs["dataset"].map(dataset_title),
            f"{b_title} test acc (%)": base,
            f"{c_title} test acc (%)": chal,
            "Gain (points)": gain,
            f"{b_title} params": pairs[f"{baseline}_params"].map(_fmt_int),
            f"{c_title} params": pairs[f"{challenger}_params"].map(_fmt_int),
            "Params ratio": pairs["params_ratio"].map(_fmt_ratio),
            "MACs ratio": pairs["macs_ratio"].map(_fmt_ratio),
        }
    )

    def said(text: str) -> str:
        return text if text.startswith("diverged") else f"{text}%"

    sentences = []
    for i, row in enumerate(pairs.to_dict("records")):
        sentence = (
            f"- **{_text(dataset_title(row['dataset']))}**: {c_title} {said(chal[i])}, "
            f"{b_title} {said(base[i])}"
        )
        if not math.isnan(row["gain_points"]):
            sentence += f" ({gain[i]} points for {c_title})"
        if not math.isnan(row["params_ratio"]):
            sentence += f"; {c_title} has {_fmt_ratio(row['params_ratio'])} the parameters"
        sentences.append(sentence + ".")
    return [_markdown(shown, "lrrrrrrr"), "", *sentences]


def report_markdown(
    table: pd.DataFrame,
    figures: Mapping[str, str],
    baseline: str,
    challenger: str | None,
    recipes: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """``reports/report.md`` from the run table: summary, comparison, figures.

    ``baseline`` and ``challenger`` are the first two of ``models`` (no comparison without a
    second); ``recipes`` (run name -> :func:`recipe`) give the Recipe section, and a
    subsampled recipe is named in the title. ``figures`` maps a dataset to the path of its
    learning-curve PNG *relative to where the report is written*, so the images render on
    GitHub and in ``dvc plots`` alike; keys that are not datasets of the runs are still
    shown, under their own name, so that extra figures (a confusion matrix, say) need no
    change here.
    """
    b_title = model_title(baseline)
    title = b_title if challenger is None else f"{b_title} vs {model_title(challenger)}"
    subsampled = sorted({_subsampling(r) for r in (recipes or {}).values()} - {"none"})
    if subsampled:
        title += f" (subsampled: {'; '.join(subsampled)})"
    parts = [f"# {title}", "", _INTRO]
    if recipes:
        parts += ["", "## Recipe", "", _recipe_markdown(table, recipes)]
    parts += ["", "## Summary", "", _summary_markdown(table)]
    not_learned = _not_learned_markdown(table)
    if not_learned:
        parts += ["", "## Runs that did not learn", "", *not_learned]
    if challenger is not None:
        parts += ["", f"## {title} per dataset", ""]
        parts += _comparison_markdown(table, baseline, challenger)
    if figures:
        parts += ["", "## Figures"]
        datasets = list(dict.fromkeys(table["dataset"]))
        keys = [d for d in datasets if d in figures] + [k for k in figures if k not in datasets]
        for key in keys:
            caption = f"Learning curves on {dataset_title(key)}" if key in datasets else str(key)
            caption = _text(caption.replace("[", "(").replace("]", ")"))
            parts += ["", f"### {caption}", "", f"![{caption}]({_link_target(figures[key])})"]
    return "\n".join(parts) + "\n"


def param_text(value: Any) -> str:
    """A param value as one would type it after ``-S key=``: null, true, [a, b]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(param_text(v) for v in value) + "]"
    return str(value)
