"""Compare finished DVC experiments: curves, an animated GIF and a final-accuracy table.

Outside the pipeline: it reads what each experiment committed (``dvc exp show``, and its
metrics and per-epoch histories from the DVC cache), so it runs after a sweep, e.g.

    python stages/compare_experiments.py                     # every experiment of HEAD
    python stages/compare_experiments.py --exp sgd adam      # these (names or revisions)
    python stages/compare_experiments.py --all --out reports/all-experiments

Per dataset and model: curves-<model>-<dataset>.png (2x2: train/val loss and accuracy, one
line per experiment, labelled by the params that differ) and .gif (the same, growing epoch by
epoch); experiments.md and experiments.csv (test accuracy per experiment and run). The output
folder is replaced as a whole, so it never mixes two comparisons.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import METRICS, TIMINGS, TRAIN_LOGS, run_name

OUT = Path("reports/experiments")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", nargs="+", metavar="NAME", help="experiments to compare")
    parser.add_argument("--all", action="store_true", help="experiments of every commit")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the project's folder")
    args = parser.parse_args(argv)

    from cnnlab.data.catalog import DATASETS
    from cnnlab.experiments import (
        collect_runs,
        experiment_labels,
        flatten_params,
        list_experiments,
        varying_params,
    )
    from cnnlab.figures import animate_learning_curves, plot_learning_curves
    from cnnlab.files import atomic_directory
    from cnnlab.models.options import MODEL_TITLES
    from cnnlab.reporting import experiment_markdown, experiment_table

    experiments = list_experiments(args.repo, args.exp, args.all)
    varied = varying_params(experiments)
    labels = experiment_labels(experiments, varied)
    runs = collect_runs(
        args.repo,
        experiments,
        metrics_path=lambda model, dataset: f"{METRICS}/{run_name(model, dataset)}.json",
        log_dir=lambda model, dataset: f"{TRAIN_LOGS}/{run_name(model, dataset)}",
        strict=bool(args.exp),
        timings=(str(TIMINGS), run_name),
    )
    table = experiment_table(
        [
            {
                "experiment": r.experiment.name,
                "rev": r.experiment.rev,
                "label": labels[r.experiment.name],
                "params": flatten_params(r.experiment.params),
                "run": r.metrics,
            }
            for r in runs
        ],
        varied,
    )
    figures = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(args.out) as out:
        for dataset, model in dict.fromkeys((r.dataset, r.model) for r in runs):
            group = [r for r in runs if (r.dataset, r.model) == (dataset, model)]
            histories = {labels[r.experiment.name]: r.history for r in group}
            diverged = {
                labels[r.experiment.name]: r.metrics.get("diverged_epoch")
                for r in group
                if r.metrics.get("diverged")
            }
            data_title = DATASETS[dataset].title if dataset in DATASETS else dataset
            title = f"{MODEL_TITLES.get(model, model)} on {data_title}"
            if varied:
                title += f", by {', '.join(varied)}"
            name = f"curves-{run_name(model, dataset)}"
            # Best-accuracy labels stack up; past four lines the table says it better.
            plot_learning_curves(
                histories, title, out / f"{name}.png", diverged, mark_best=len(group) <= 4
            )
            animate_learning_curves(histories, title, out / f"{name}.gif", diverged)
            figures += [f"{name}.png", f"{name}.gif"]
        table.to_csv(out / "experiments.csv", index=False, lineterminator="\n")
        (out / "experiments.md").write_text(experiment_markdown(table, varied, figures))
    print(
        f"compared {len(experiments)} experiments "
        f"({'; '.join(n if n == t else f'{n}: {t}' for n, t in labels.items())}) "
        f"-> {args.out}/experiments.md, experiments.csv, {len(figures)} figures"
    )


if __name__ == "__main__":
    from cnnlab.experiments import ExperimentError

    try:
        main()
    except ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
