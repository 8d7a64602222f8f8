"""compare: one table of every run, the first model of `models` against the second per dataset
(LeNet vs AlexNet with the default params), learning curves and confusion matrices.

Writes metrics.json (DVC's metrics: accuracy per run), reports/summary.json (the table),
reports/report.md and plots/compare/*.png.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import (
    COMPARE_PLOTS,
    EVAL_PLOTS,
    METRICS,
    METRICS_FILE,
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


def run_metrics(runs: list[dict]) -> dict[str, dict]:
    """What `dvc exp show` and `dvc metrics diff` compare: a few numbers per run (a diverged
    run's accuracies are null). The rest of each run's record is in metrics/<run>.json."""
    table = {}
    for run in runs:
        ok = not run["diverged"]
        table[run_name(run["model"], run["dataset"])] = {
            "test_acc": run["test_acc"] if ok else None,
            "best_val_acc": run["best_val_acc"] if ok else None,
        }
    return dict(sorted(table.items()))


def main() -> None:
    params = load_params()
    from cnnlab.figures import plot_confusion_matrix, plot_learning_curves
    from cnnlab.files import write_json, write_text
    from cnnlab.reporting import report_markdown, summary_json

    runs = []
    figures: dict[str, str] = {}  # caption or dataset -> path relative to the report
    confusions: dict[str, str] = {}
    from cnnlab.data.catalog import title as dataset_title
    from cnnlab.models.options import title as model_title

    for dataset in params.datasets:
        histories, diverged = {}, {}
        title = dataset_title(dataset)
        for model in params.models:
            name, label = run_name(model, dataset), model_title(model)
            metrics = json.loads((METRICS / f"{name}.json").read_text())
            runs.append(metrics)
            histories[label] = read_history(TRAIN_LOGS / name)
            if metrics["diverged"]:
                diverged[label] = metrics["diverged_epoch"]
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
        figures[dataset] = str(Path("..") / figure)
    # The first model is the baseline; the second (if any) is compared against it.
    pair = {"baseline": params.models[0], "challenger": (params.models[1:] or [None])[0]}
    write_json(METRICS_FILE, run_metrics(runs))
    write_json(REPORTS / "summary.json", summary_json(runs, **pair))
    write_text(REPORTS / "report.md", report_markdown(runs, {**figures, **confusions}, **pair))
    plural = "run" if len(runs) == 1 else "runs"
    print(f"compare: {len(runs)} {plural} -> {REPORTS / 'report.md'}, {COMPARE_PLOTS}/")


if __name__ == "__main__":
    run_stage(main, 0, "python stages/compare.py")
