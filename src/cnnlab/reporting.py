"""The run table of the ``compare`` stage and what renders from it: summary.json, report.md.

One tidy table (:func:`run_table`, one row per run, evaluate's keys and units) is built once;
summary.json (for ``dvc metrics``: evaluate's keys and units plus derived values) and the
Markdown report (for reading) both render from it, and :func:`comparison` is the one
baseline-vs-challenger view both use, so they cannot disagree. Everything here is a pure
function of its inputs (no clock, no paths), so the outputs reproduce byte for byte. A diverged
run's accuracies are blanked (NaN, ``null``, "diverged (epoch N)"), never compared.
cnnlab_compare.reporting formats the cross-experiment tables with the helpers here.
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

_ROUND = 4
_F, _I = "float64", "Int64"  # nullable integers: a missing count stays <NA>, not a float
#: The run table's columns and dtypes; summary.json holds all but the titles, in this order.
_RUN_DTYPES: dict[str, str] = {
    "model": "str",
    "dataset": "str",
    "status": "str",
    "diverged": "bool",
    "diverged_epoch": _I,
    "test_acc": _F,
    "test_top5": _F,
    "test_loss": _F,
    "best_val_acc": _F,
    "best_epoch": _I,
    "final_val_acc": _F,
    "epochs": _I,
    "epochs_completed": _I,
    "params": _I,
    "macs": _I,
    "num_classes": _I,
    "model_title": "str",
    "dataset_title": "str",
}
_JSON_KEYS = list(_RUN_DTYPES)[:-2]
#: What a model learned (blanked for a diverged run), and the counts.
_QUALITY = [key for key, dtype in _RUN_DTYPES.items() if dtype == _F]
_COUNTS = ["best_epoch", "epochs", "epochs_completed", "params", "macs"]

DID_NOT_LEARN = "did not learn"
#: Top-5 accuracy is 100% by definition with 5 classes or fewer: shown only above that.
TOP5_MIN_CLASSES = 6


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
    """JSON-safe: numpy scalars become Python ones, NaN/inf null (``dvc metrics`` cannot read
    ``NaN``). Not ``DataFrame.to_json``: it rounds floats to at most 15 digits."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()  # numpy scalar -> Python scalar
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def in_order_seen(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``table`` sorted by ``columns``, each in order of first appearance rather than
    alphabetically: params order, so the baseline comes before the challenger and a report
    reads the way the experiment was configured."""
    if table.empty:
        return table
    firsts = {c: {v: i for i, v in enumerate(dict.fromkeys(table[c]))} for c in columns}
    by_first = table.sort_values(
        columns, key=lambda col: col.map(firsts[str(col.name)]), kind="stable"
    )
    return by_first.reset_index(drop=True)


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
    """One row per run (evaluate's metrics dicts), by dataset then model in the order given,
    with the titles to show and ``status``. A diverged run's accuracies and loss are NaN;
    params and MACs stay (they describe the model). Measured times are left out (they are in
    timings.json), so that everything made from this table reproduces byte for byte."""
    records = [_run_record(run) for run in runs]
    table = pd.DataFrame(
        {
            column: pd.Series([r[column] for r in records], dtype=dtype)
            for column, dtype in _RUN_DTYPES.items()
        }
    )
    twice = table[table.duplicated(["model", "dataset"])]
    if not twice.empty:
        key = f"{twice['model'].iloc[0]}-{twice['dataset'].iloc[0]}"
        raise ValueError(f"run {key!r} appears twice; each model/dataset pair must be unique")
    return in_order_seen(table, ["dataset", "model"])


def comparison(table: pd.DataFrame, baseline: str, challenger: str) -> pd.DataFrame:
    """Baseline vs challenger per dataset that has runs of both: the gain in points (NaN if
    either diverged) and challenger/baseline ratios. Columns are named after the models
    (``lenet_test_acc``) so that a ``dvc metrics`` key reads on its own."""
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
    """``reports/summary.json``: each run's metrics (and :func:`recipe`, and ``advice`` if it
    did not learn) and the comparison, in a fixed key order so that the file is byte-stable.
    Per-class accuracies stay in the per-run files: they would swamp ``dvc exp show``."""
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
# Markdown: 2-decimal percentages, thousands separators, pipe tables written by pandas

_DASH = "–"


def _fmt_float(value: Any, digits: int = 2) -> str:
    """A number (an accuracy already in percent: 2 decimals), with thousands separators."""
    number = _float(value)
    return _DASH if math.isnan(number) else f"{number:,.{digits}f}"


def _fmt_pct(value: Any) -> str:
    """A fraction in percent (a run's accuracies are fractions)."""
    number = _float(value)
    return _DASH if math.isnan(number) else f"{number * 100:.2f}"


def _fmt_int(value: Any) -> str:
    number = _int(value)
    return _DASH if number is None else f"{number:,}"


def _fmt_ratio(value: Any) -> str:
    number = _float(value)
    if math.isnan(number):
        return _DASH
    return f"{number:,.1f}×" if number >= 10 else f"{number:.2f}×"


#: What Markdown would act on rather than show: escapes, ``$`` maths, code, emphasis, links,
#: HTML (a name like ``<script>`` is shown, not run); a newline would end a heading. ``_``
#: is left: GitHub ignores it inside words, where names have it.
_MARKDOWN_ESCAPES = str.maketrans({c: "\\" + c for c in "\\$`*~[]<>&"} | {"\n": " "})


def _text(text: str) -> str:
    return text.translate(_MARKDOWN_ESCAPES)


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|")


def _markdown(frame: pd.DataFrame, align: str) -> str:
    """A GitHub pipe table of ``frame`` (text cells); ``align``: one letter per column, ``r``
    (numbers, digits line up) or ``l``."""
    escaped = frame.map(_cell).rename(columns=_cell)
    aligns = ["right" if kind == "r" else "left" for kind in align]
    # Cells are text already: tabulate must not reparse "98.50" as a number and drop the 0.
    return escaped.to_markdown(index=False, disable_numparse=True, colalign=aligns)


#: What a spreadsheet reads as the start of a formula (OWASP's list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` for a CSV that may be opened in a spreadsheet: a text cell that starts a
    formula (``=HYPERLINK(...)``) gets a leading ``'``; numbers (-0.5) are left alone."""

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


_RECIPE_KEYS = ("optimizer", "lr", "weight_decay", "schedule", "epochs", "batch_size")
_RECIPE_KEYS += ("train_images", "val_images", "test_images", "max_train", "max_test")


def recipe(r: Mapping[str, Any]) -> dict[str, Any]:
    """What a run was trained with (its record's ``recipe``), for the report and summary.json;
    ``lr`` None is PyTorch's default."""
    schedule = schedule_text(r.get("scheduler") or {})
    return {key: schedule if key == "schedule" else r.get(key) for key in _RECIPE_KEYS}


def schedule_text(s: Mapping[str, Any]) -> str:
    """params.yaml's ``scheduler`` section in a few words: its name and the keys it reads."""
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
        decay = r.get("weight_decay")
        rows.append(
            {
                "Dataset": row["dataset_title"],
                "Model": row["model_title"],
                "Optimizer": str(r["optimizer"]),
                "lr": "PyTorch's default" if r.get("lr") is None else f"{r['lr']:g}",
                "Weight decay": _DASH if decay is None else f"{decay:g}",
                "Schedule": str(r["schedule"]),
                "Epochs": _fmt_int(r["epochs"]),
                "Batch": _fmt_int(r["batch_size"]),
                "Train / val / test images": sizes,
                "Subsampled": _subsampling(r),
            }
        )
    return _markdown(pd.DataFrame(rows), "llllllrrrl") if rows else "_No recipe recorded._"


def _not_learned_markdown(table: pd.DataFrame) -> list[str]:
    return [
        f"- **{_text(row['model_title'])} on {_text(row['dataset_title'])}** did not learn: "
        f"test accuracy {_fmt_pct(row['test_acc'])}%, chance {100 / row['num_classes']:.2f}% "
        f"({row['num_classes']} classes); {DID_NOT_LEARN_ADVICE}."
        for row in table[table["status"] == DID_NOT_LEARN].to_dict("records")
    ]


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
    return [_markdown(shown, "lrrrrrrr"), "", *sentences, "", ONE_SEED]


#: Under the gains: what one run per model can and cannot say.
ONE_SEED = (
    "_Each run is one seed: a gain smaller than the seed-to-seed spread is no evidence that "
    "either model is better. `dvc exp run --queue -S 'seed=1,2,3'`, then `cnnlab-compare`, "
    "gives the interval of each mean and of their difference (docs/comparisons.md)._"
)


def report_markdown(
    table: pd.DataFrame,
    figures: Mapping[str, str],
    baseline: str,
    challenger: str | None,
    recipes: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """``reports/report.md``: recipe, summary, comparison (with a ``challenger``), figures.

    ``figures`` maps a dataset (or any caption: a confusion matrix) to an image path relative
    to the report, so the images render on GitHub and in ``dvc plots`` alike; a subsampled
    recipe is named in the title.
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
