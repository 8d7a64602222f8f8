"""compare: one table of every run, the first model of `models` against the second per dataset
(LeNet vs AlexNet with the default params), learning curves and confusion matrices.

Each run's record (metrics/<run>.json, cnnlab.record: metrics, status, confusion matrix,
recipe) is read as evaluate wrote it; one table of the runs (cnnlab.reporting.run_table) is
built once from them, and from it come
reports/summary.json, metrics.json (DVC's metrics: accuracy per run, a part of the summary),
reports/report.md and the titles and legends of plots/compare/*.png.
"""

from __future__ import annotations

from pathlib import Path

from common import (
    COMPARE_PLOTS,
    METRICS,
    METRICS_FILE,
    REPORTS,
    TRAIN_LOGS,
    run_name,
    run_stage,
)

from cnnlab.history import read_history
from cnnlab.slices import load_slice


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
    p = load_slice("datasets", "models")
    from cnnlab.figures import plot_confusion_matrix, plot_learning_curves
    from cnnlab.files import write_json, write_text
    from cnnlab.record import read_record
    from cnnlab.reporting import recipe, report_markdown, run_table, summary_json

    records = {
        run_name(m, d): read_record(METRICS / f"{run_name(m, d)}.json")
        for d in p["datasets"]
        for m in p["models"]
    }
    runs = [r.model_dump() for r in records.values()]
    recipes = {name: recipe(r.recipe) for name, r in records.items()}
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
            record = records[name]
            confusion = COMPARE_PLOTS / f"confusion-{name}.png"
            plot_confusion_matrix(
                record.confusion or [[0] * record.num_classes] * record.num_classes,
                record.classes,
                f"{label} on {title}: test set",
                confusion,
            )
            confusions[f"Confusion matrix of {label} on {title}"] = str(Path("..") / confusion)
        figure = COMPARE_PLOTS / f"curves-{dataset}.png"
        plot_learning_curves(
            histories, f"{' vs '.join(histories)} on {title}", figure, diverged=diverged
        )
        figures[str(dataset)] = str(Path("..") / figure)
    # The first model is the baseline; the second (if any) is compared against it.
    pair = {"baseline": p["models"][0], "challenger": (p["models"][1:] or [None])[0]}
    summary = summary_json(table, **pair, recipes=recipes)
    write_json(METRICS_FILE, run_metrics(summary))
    write_json(REPORTS / "summary.json", summary)
    report = report_markdown(table, {**figures, **confusions}, **pair, recipes=recipes)
    write_text(REPORTS / "report.md", report)
    plural = "run" if len(runs) == 1 else "runs"
    print(f"compare: {len(runs)} {plural} -> {REPORTS / 'report.md'}, {COMPARE_PLOTS}/")


if __name__ == "__main__":
    run_stage(main, 0, "python stages/compare.py")
