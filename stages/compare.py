"""compare: one table of every run, the first model of `models` against the second per dataset
(LeNet vs AlexNet with the default params), learning curves and confusion matrices.

One table of the runs (cnnlab.reporting.run_table) is built once; from it come
reports/summary.json, metrics.json (DVC's metrics: accuracy per run, a part of the summary),
reports/report.md and the titles and legends of plots/compare/*.png.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import (
    COMPARE_PLOTS,
    EVAL_PLOTS,
    METRICS,
    METRICS_FILE,
    PREPARED,
    REPORTS,
    TRAIN_LOGS,
    run_name,
    run_stage,
)

from cnnlab.history import read_history
from cnnlab.params import load_params


def read_classes(run: str) -> list[str]:
    return [row["class"] for row in json.loads((EVAL_PLOTS / run / "classes.json").read_text())]


def read_confusion(run: str, classes: list[str]) -> list[list[int]]:
    import pandas as pd

    records = json.loads((EVAL_PLOTS / run / "predictions.json").read_text())
    frame = pd.DataFrame(records, columns=["actual", "predicted"])
    table = pd.crosstab(frame["actual"], frame["predicted"]).reindex(
        index=classes, columns=classes, fill_value=0
    )
    return table.astype(int).values.tolist()


def run_metrics(summary: dict) -> dict[str, dict]:
    """What `dvc exp show` and `dvc metrics diff` compare: a few numbers per run of
    summary.json (a diverged run's accuracies are null). The rest of each run's record is in
    metrics/<run>.json."""
    runs = summary["runs"]
    return {
        name: {"test_acc": runs[name]["test_acc"], "best_val_acc": runs[name]["best_val_acc"]}
        for name in sorted(runs)
    }


def main() -> None:
    params = load_params()
    from cnnlab.figures import plot_confusion_matrix, plot_learning_curves
    from cnnlab.files import write_json, write_text
    from cnnlab.reporting import (
        recipe,
        report_markdown,
        run_table,
        schedule_text,
        summary_json,
    )

    runs, recipes = [], {}
    settings = params.optimizer_settings()
    for dataset in params.datasets:
        # prepare's record of the splits (cnnlab.data.prepare.META_FILE; read here as JSON
        # so that this stage does not import torch)
        meta = json.loads((PREPARED / dataset / "meta.json").read_text())
        for model in params.models:
            name = run_name(model, dataset)
            metrics = json.loads((METRICS / f"{name}.json").read_text())
            runs.append({**metrics, "num_classes": len(read_classes(name))})
            recipes[name] = recipe(
                settings,
                params.optimizer,
                schedule_text(params.scheduler.model_dump()),
                params.epochs,
                params.batch_size,
                meta["counts"],
                params.data.max_train,
                params.data.max_test,
            )
    table = run_table(runs)  # the one table: summary.json, report.md and the figures' titles
    figures: dict[str, str] = {}  # caption or dataset -> path relative to the report
    confusions: dict[str, str] = {}
    for dataset, rows in table.groupby("dataset", sort=False):
        histories, diverged, title = {}, {}, rows["dataset_title"].iloc[0]
        for run in rows.to_dict("records"):
            name, label = run_name(run["model"], dataset), run["model_title"]
            histories[label] = read_history(TRAIN_LOGS / name)
            if run["diverged"]:
                diverged[label] = run["diverged_epoch"]
            classes = read_classes(name)
            confusion = COMPARE_PLOTS / f"confusion-{name}.png"
            plot_confusion_matrix(
                read_confusion(name, classes), classes, f"{label} on {title}: test set", confusion
            )
            confusions[f"Confusion matrix of {label} on {title}"] = str(Path("..") / confusion)
        figure = COMPARE_PLOTS / f"curves-{dataset}.png"
        plot_learning_curves(
            histories, f"{' vs '.join(histories)} on {title}", figure, diverged=diverged
        )
        figures[str(dataset)] = str(Path("..") / figure)
    # The first model is the baseline; the second (if any) is compared against it.
    pair = {"baseline": params.models[0], "challenger": (params.models[1:] or [None])[0]}
    summary = summary_json(table, **pair, recipes=recipes)
    write_json(METRICS_FILE, run_metrics(summary))
    write_json(REPORTS / "summary.json", summary)
    report = report_markdown(table, {**figures, **confusions}, **pair, recipes=recipes)
    write_text(REPORTS / "report.md", report)
    plural = "run" if len(runs) == 1 else "runs"
    print(f"compare: {len(runs)} {plural} -> {REPORTS / 'report.md'}, {COMPARE_PLOTS}/")


if __name__ == "__main__":
    run_stage(main, 0, "python stages/compare.py")
