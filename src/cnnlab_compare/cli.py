"""Compare finished DVC experiments: curves, an animated GIF and a final-accuracy table.

Outside the pipeline: it reads what each experiment committed (``dvc exp show``, and its
metrics and per-epoch histories from the DVC cache), so it runs after a sweep, e.g.

    cnnlab-compare                     # every experiment of HEAD
    cnnlab-compare --exp sgd adam      # these (names or revisions)
    cnnlab-compare --all --out reports/all-experiments
    cnnlab-compare --tune lr           # best lr per optimizer, by val

(``python -m cnnlab_compare`` is the same command.)

Per dataset and model: curves-<model>-<dataset>.png (2x2: train/val loss and accuracy, one
line per experiment, labelled by the params that differ) and .gif (the same, growing epoch by
epoch); curves-<model>-<dataset>-panels.png (validation accuracy, one panel per line) where
lines would lie on top of each other or past eight lines; experiments.md and experiments.csv
(test accuracy per experiment and run); index.html, one self-contained interactive page of it
all (cnnlab_compare.experiment_page: a sortable, filterable table, curves to hover, params
against accuracy; no network needed). Each run's status is its record's (cnnlab.record): a
run at chance level is flagged "did not learn" everywhere. The output folder is replaced as a
whole, so it never mixes two comparisons; a non-empty folder this command did not write is
refused.

Experiments that differ only in ``seed`` (queue them with ``-S 'seed=1,2,3'``) are repeats
of one configuration: then the curves show one mean line per configuration with the band its
seeds span, accuracy-<model>-<dataset>.png the mean test accuracy with its 95% interval, and
groups.csv / differences.csv (also in experiments.md) the statistics (cnnlab_compare.stats).
``--tune KEY`` picks, per family of configurations that differ only in KEY, the value with
the best mean validation accuracy and reports the test accuracy there: tuned.csv,
tuned-differences.csv, tuned-<model>-<dataset>.png. Queued runs that failed are counted as
failed, never averaged. A run is what trained it (DVC's run-cache key of its train stage,
cnnlab.runs): experiments that reached the same run are one measurement, counted once and
listed together, and a training time is shown only for the run it timed. Experiments whose
outputs are not in this machine's DVC cache, or whose files are unreadable, are skipped with
one line each; the command fails (exit 2, one line) only when nothing is left to compare.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.files import check_output_folder, mark_output_folder, shortened
from cnnlab_compare import console
from cnnlab_compare.layout import METRICS, TIMINGS, TRAIN_LOGS, run_name

if TYPE_CHECKING:
    import pandas as pd

    from cnnlab_compare.experiments import Experiment, ExperimentRun

OUT = Path("reports/experiments")
PROG = "cnnlab-compare"


def _rows(
    experiments: list[Experiment],
    runs: list[ExperimentRun],
    labels: dict[str, str],
    flats: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """experiment_table's rows in the experiments' order; a failed experiment gets one row
    per run it was queued for, marked failed, so that it is counted and not lost."""
    rows = []
    for exp in experiments:
        if exp.failed:
            found = [
                ({"dataset": dataset, "model": model, "failed": True}, None)
                for dataset in exp.params.get("datasets") or []
                for model in exp.params.get("models") or []
            ]
        else:
            found = [(r.metrics, r.run_key) for r in runs if r.experiment is exp]
        rows += [
            {
                "experiment": exp.name,
                "rev": exp.rev,
                "label": labels[exp.name],
                "params": flats[exp.name],
                "run": run,
                "run_key": key,
            }
            for run, key in found
        ]
    return rows


def _lines(
    group: list[ExperimentRun],
    labels: dict[str, str],
    table: pd.DataFrame | None,
    by: list[str],
) -> tuple[dict[str, pd.DataFrame], dict[str, int | None], dict[str, Any]]:
    """One run's curves: a line per experiment (experiments that reached the same run share
    one), or with ``table`` (the run's rows, when some
    configuration has several seeds) a mean line per configuration and its seeds' band."""
    from cnnlab_compare.stats import curve_groups

    diverged = {  # the record's status (cnnlab.record), never re-derived here
        r.experiment.name: r.metrics.get("diverged_epoch")
        for r in group
        if r.metrics.get("status") == "diverged"
    }
    if table is None:
        # one line per run: experiments that reached the same run share it
        first: dict[str, ExperimentRun] = {}
        also: dict[str, list[str]] = {}
        for r in group:
            owner = first.setdefault(r.run_key or r.experiment.name, r)
            if owner is not r:
                also.setdefault(owner.experiment.name, []).append(r.experiment.name)

        flat = {r.experiment.name for r in group if r.metrics.get("status") == "did not learn"}

        def label(name: str) -> str:
            others = also.get(name)
            text = labels[name] + (" (did not learn)" if name in flat else "")
            return text + (f" (also {', '.join(others)}: the same run)" if others else "")

        drawn = [r.experiment.name for r in first.values()]
        histories = {label(r.experiment.name): r.history for r in first.values()}
        return (
            histories,
            {label(name): epoch for name, epoch in diverged.items() if name in drawn},
            {},
        )
    lines = curve_groups(table, by, {r.experiment.name: r.history for r in group}, diverged)
    return (
        {line.label: line.history for line in lines},
        {line.label: line.diverged_epoch for line in lines if line.diverged},
        {line.label: line.band for line in lines if line.band is not None},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--exp", nargs="+", metavar="NAME", help="experiments to compare")
    parser.add_argument("--all", action="store_true", help="experiments of every commit")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the project's folder")
    parser.add_argument(
        "--tune",
        metavar="KEY",
        help="param to tune (e.g. lr): per family, the value with the best mean validation "
        "accuracy, and the test accuracy there",
    )
    args = parser.parse_args(argv)
    check_output_folder(args.out)

    from cnnlab.files import atomic_directory
    from cnnlab.reporting import dataset_title, model_title, param_text, spreadsheet_safe
    from cnnlab_compare import stats
    from cnnlab_compare.experiment_page import experiment_page
    from cnnlab_compare.experiments import (
        ExperimentError,
        collect_runs,
        experiment_labels,
        flatten_params,
        list_experiments,
        run_labels,
        same_runs,
        varying_params,
    )
    from cnnlab_compare.figures import (
        Interval,
        animate_learning_curves,
        needs_small_multiples,
        plot_intervals,
        plot_learning_curves,
        plot_small_multiples,
    )
    from cnnlab_compare.reporting import (
        difference_markdown,
        experiment_markdown,
        experiment_table,
        group_markdown,
        tuned_markdown,
    )

    experiments = list_experiments(args.repo, args.exp, args.all, include_failed=True)
    flats = {e.name: flatten_params(e.params) for e in experiments}
    key = args.tune
    if key is not None and (
        key in ("seed", "datasets", "models") or all(key not in flat for flat in flats.values())
    ):
        raise ExperimentError(
            f"--tune {key}: not a param the experiments can differ in; give one of their "
            "params in -S spelling, e.g. --tune lr or --tune optimizers.sgd.momentum"
        )
    varied = varying_params(experiments)
    labels = experiment_labels(experiments, varied)
    runs = collect_runs(
        args.repo,
        experiments,
        metrics_path=lambda model, dataset: f"{METRICS}/{run_name(model, dataset)}.json",
        log_dir=lambda model, dataset: f"{TRAIN_LOGS}/{run_name(model, dataset)}",
        timings=str(TIMINGS),
        run_stage=lambda model, dataset: f"train@{run_name(model, dataset)}",
    )
    same = same_runs(runs)
    for name, first in same.items():
        print(
            f"note: experiment {name!r} reached the same runs as {first!r} (nothing it "
            "changed is read by training): one measurement, counted once",
            file=sys.stderr,
        )
    columns = [*varied, *([key] if key and key not in varied else [])]
    table = experiment_table(_rows(experiments, runs, labels, flats), columns)

    # Statistics over seeds once some configuration has several; else as without seeds.
    by = stats.group_columns(varied)
    groups = stats.group_table(table, by)
    repeated = bool((groups["n"] + groups["n_diverged"] + groups["n_failed"] > 1).any())
    sections, csvs = [], {}
    page_tables = []  # (title, frame) for the HTML page, as in the CSVs
    if repeated:
        sections.append(group_markdown(groups))
        csvs["groups.csv"] = groups
        page_tables.append(("Test accuracy over seeds (groups.csv)", groups))
        diffs = stats.difference_table(table, by)
        if not diffs.empty:  # one configuration per run: nothing to compare it with
            sections.append(difference_markdown(diffs, csv_name="differences.csv"))
            csvs["differences.csv"] = diffs
            page_tables.append(("Differences between configurations (differences.csv)", diffs))
    tuned = None
    if key is not None:
        defaults = {n: param_text(stats.optimizer_default(f, key)) for n, f in flats.items()}
        tuned = stats.tuned_table(table, varied, key, defaults)
        sections.append(tuned_markdown(tuned, key))
        csvs["tuned.csv"] = tuned
        page_tables.append((f"The tuned {key} per family (tuned.csv)", tuned))
        tuned_diffs = stats.tuned_differences(table, tuned)
        if not tuned_diffs.empty:
            title = "Differences between tuned families"
            sections.append(difference_markdown(tuned_diffs, title, "tuned-differences.csv"))
            csvs["tuned-differences.csv"] = tuned_diffs
            page_tables.append((f"{title} (tuned-differences.csv)", tuned_diffs))

    figures = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(args.out) as out:
        for dataset, model in dict.fromkeys((r.dataset, r.model) for r in runs):
            name = run_name(model, dataset)
            group = [r for r in runs if (r.dataset, r.model) == (dataset, model)]
            of_run = (table["dataset"] == dataset) & (table["model"] == model)
            title = f"{model_title(model)} on {dataset_title(dataset)}"
            # lines labelled by what differs among this run's experiments and the run reads
            # (one line per run: an experiment that repeated another's run draws no line)
            distinct = {r.run_key or r.experiment.name: r.experiment for r in reversed(group)}
            plotted = [e for e in experiments if any(d is e for d in distinct.values())]
            own_labels, own_varied = run_labels(plotted, varied, model, dataset)
            histories, diverged, bands = _lines(
                group, own_labels, table[of_run] if repeated else None, by
            )
            empty = [label for label, history in histories.items() if history.empty]
            if empty:
                names = shortened([repr(n) for n in empty])
                print(
                    f"note: {title}: no logged epoch to draw for {names} "
                    "(it diverged in its first epoch, or its logs are missing)",
                    file=sys.stderr,
                )
                histories = {k: h for k, h in histories.items() if k not in empty}
                bands = {k: b for k, b in bands.items() if k not in empty}
            if not histories:
                continue  # its table rows stay: the run counts, it has no curve
            shown = by if repeated else own_varied
            title += f", by {shortened(shown)}" if shown else ""
            curves_title = title + (" (mean over seeds)" if repeated else "")
            # Best-accuracy labels stack up; past four lines the table says it better.
            plot_learning_curves(
                histories,
                curves_title + ("; band: the seeds' range" if bands else ""),
                out / f"curves-{name}.png",
                diverged,
                mark_best=len(histories) <= 4,
                bands=bands,
            )
            animate_learning_curves(histories, curves_title, out / f"curves-{name}.gif", diverged)
            figures += [f"curves-{name}.png", f"curves-{name}.gif"]
            if needs_small_multiples(histories):
                # lines on top of each other, or too many for one panel: one panel per line
                panels = f"curves-{name}-panels.png"
                plot_small_multiples(histories, curves_title, out / panels, diverged)
                figures.append(panels)
            charts = []
            if repeated:
                own = groups[(groups["dataset"] == dataset) & (groups["model"] == model)]
                rows = stats.interval_rows(own, table, lambda row: str(row["group"]))
                charts.append((f"accuracy-{name}.png", "test accuracy over seeds, 95% CI", rows))
            if tuned is not None:
                own = tuned[(tuned["dataset"] == dataset) & (tuned["model"] == model)]
                rows = stats.interval_rows(own, table, lambda row: str(row["choice"]))
                what = f"test accuracy at the {key} chosen on validation, 95% CI"
                charts.append((f"tuned-{name}.png", what, rows))
            for file, what, rows in charts:
                plot_intervals([Interval(**r) for r in rows], f"{title}: {what}", out / file)
                figures.append(file)
        # Names and labels stay text in a spreadsheet: '=...' is not run as a formula.
        spreadsheet_safe(table).to_csv(out / "experiments.csv", index=False, lineterminator="\n")
        for file, frame in csvs.items():
            frame = stats.for_output(frame)
            spreadsheet_safe(frame).to_csv(out / file, index=False, lineterminator="\n")
        (out / "experiments.md").write_text(experiment_markdown(table, varied, figures, sections))
        histories = {(r.experiment.name, r.dataset, r.model): r.history for r in runs}
        shown_tables = [(title, stats.for_output(frame)) for title, frame in page_tables]
        page = experiment_page(
            table, varied, histories, groups if repeated else None, by, shown_tables
        )
        (out / "index.html").write_text(page, encoding="utf-8")
        mark_output_folder(out)
    compared = [e.name for e in experiments if e.failed or any(r.experiment is e for r in runs)]
    named = [n if n == labels[n] else f"{n}: {labels[n]}" for n in compared]
    print(
        f"compared {len(compared)} experiments ({shortened(named, '; ', shown=5)}) "
        f"-> {args.out}/index.html, experiments.md, experiments.csv"
        + "".join(f", {file}" for file in csvs)
        + f", {len(figures)} figures"
    )


def run(argv: list[str] | None = None) -> None:
    """The console script (pyproject's ``[project.scripts]``)."""
    console(main, argv)


if __name__ == "__main__":
    run()
