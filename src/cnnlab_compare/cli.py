"""Compare finished DVC experiments: curves, an animated GIF and a final-accuracy table.

Outside the pipeline: it reads what each experiment committed (``dvc exp show``, its metrics
and histories from the DVC cache), so it runs after a sweep, e.g.

    cnnlab-compare                     # every experiment of HEAD
    cnnlab-compare --exp sgd adam      # these (names or revisions)
    cnnlab-compare --all --out reports/all-experiments
    cnnlab-compare --tune lr           # best lr per optimizer, by val

What it writes, and how seeds and repeated runs count: docs/comparisons.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.files import check_output_folder, mark_output_folder, shortened
from cnnlab_compare import console
from cnnlab_compare.layout import run_name

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
        found = [(r.metrics, r.run_key) for r in runs if r.experiment is exp]
        if exp.failed:
            pairs = itertools.product(
                exp.params.get("datasets") or [], exp.params.get("models") or []
            )
            found = [({"dataset": d, "model": m, "failed": True}, None) for d, m in pairs]
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


def _of_run(frame: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    return frame[(frame["dataset"] == dataset) & (frame["model"] == model)]


def _lines(
    group: list[ExperimentRun],
    labels: dict[str, str],
    table: pd.DataFrame | None,
    by: list[str],
) -> tuple[dict[str, pd.DataFrame], dict[str, int | None], dict[str, Any]]:
    """One run's curves (histories, diverged epochs, bands by label): a line per run (the
    experiments that reached it share it), or with ``table`` (the run's rows, when some
    configuration has several seeds) a mean line per configuration and its seeds' band."""
    from cnnlab_compare.stats import DID_NOT_LEARN, curve_groups

    diverged = {  # the record's status (cnnlab.record), never re-derived here
        r.experiment.name: r.metrics.get("diverged_epoch")
        for r in group
        if r.metrics.get("status") == "diverged"
    }
    if table is not None:
        return curve_groups(table, by, {r.experiment.name: r.history for r in group}, diverged)
    first: dict[str, ExperimentRun] = {}
    also: dict[str, list[str]] = {}
    for r in group:
        owner = first.setdefault(r.run_key or r.experiment.name, r)
        if owner is not r:
            also.setdefault(owner.experiment.name, []).append(r.experiment.name)
    histories, epochs = {}, {}
    for r in first.values():
        name = r.experiment.name
        label = labels[name] + (
            " (did not learn)" if r.metrics.get("status") == DID_NOT_LEARN else ""
        )
        if name in also:
            label += f" (also {', '.join(also[name])}: the same run)"
        histories[label] = r.history
        if name in diverged:
            epochs[label] = diverged[name]
    return histories, epochs, {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--exp", nargs="+", metavar="NAME", help="experiments to compare")
    parser.add_argument("--all", action="store_true", help="experiments of every commit")
    parser.add_argument("--out", type=Path, help=f"output folder (default: the project's {OUT})")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the project's folder")
    parser.add_argument(
        "--tune",
        metavar="KEY",
        help="param to tune (e.g. lr): per family, the value with the best mean validation "
        "accuracy, and the test accuracy there",
    )
    args = parser.parse_args(argv)
    if args.out is not None:
        check_output_folder(args.out)

    # imported here, not above: --help and a bad --out answer without loading them
    from cnnlab.figures import plot_learning_curves
    from cnnlab.files import atomic_directory
    from cnnlab.reporting import dataset_title, model_title, param_text, spreadsheet_safe
    from cnnlab_compare import experiments, figures, reporting, stats
    from cnnlab_compare.experiment_page import experiment_page

    if args.out is None:  # the project's reports/, wherever this runs from
        args.out = Path(os.path.relpath(experiments.project_root(args.repo) / OUT))
        check_output_folder(args.out)
    exps = experiments.list_experiments(args.repo, args.exp, args.all)
    flats = {e.name: experiments.flatten_params(e.params) for e in exps}
    key = args.tune
    if key is not None and (
        key in ("seed", "datasets", "models") or all(key not in flat for flat in flats.values())
    ):
        raise experiments.ExperimentError(
            f"--tune {key}: not a param the experiments can differ in; give one of their "
            "params in -S spelling, e.g. --tune lr or --tune optimizers.sgd.momentum"
        )
    varied = experiments.varying_params(exps)
    labels, _ = experiments.run_labels(exps, varied)  # what each experiment changed
    runs = experiments.collect_runs(args.repo, exps)
    for name, first in experiments.same_runs(runs).items():
        print(
            f"note: experiment {name!r} reached the same runs as {first!r} (nothing it "
            "changed is read by training): one measurement, counted once",
            file=sys.stderr,
        )
    columns = [*varied, *([key] if key and key not in varied else [])]
    table = reporting.experiment_table(_rows(exps, runs, labels, flats), columns)

    # Statistics over seeds once some configuration has several; else as without seeds.
    by = stats.group_columns(varied)
    groups = stats.group_table(table, by)
    repeated = bool((groups["n"] + groups["n_diverged"] + groups["n_failed"] > 1).any())
    sections, csvs = [], {}  # Markdown sections; CSV file -> (its title on the page, table)
    if repeated:
        sections.append(reporting.group_markdown(groups))
        csvs["groups.csv"] = ("Test accuracy over seeds", groups)
        diffs = stats.difference_table(table, by)
        if not diffs.empty:  # one configuration per run: nothing to compare it with
            sections.append(reporting.difference_markdown(diffs, csv_name="differences.csv"))
            csvs["differences.csv"] = ("Differences between configurations", diffs)
    tuned = None
    if key is not None:
        # a null value falls back to the chosen optimizer's row: optimizers.<name>.<key>
        defaults = {
            n: param_text(f.get(f"optimizers.{f.get('optimizer')}.{key}")) for n, f in flats.items()
        }
        tuned = stats.tuned_table(table, varied, key, defaults)
        sections.append(reporting.tuned_markdown(tuned, key))
        csvs["tuned.csv"] = (f"The tuned {key} per family", tuned)
        tuned_diffs = stats.tuned_differences(table, tuned)
        if not tuned_diffs.empty:
            title = "Differences between tuned families"
            sections.append(
                reporting.difference_markdown(tuned_diffs, title, "tuned-differences.csv")
            )
            csvs["tuned-differences.csv"] = (title, tuned_diffs)

    images = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(args.out) as out:
        for dataset, model in dict.fromkeys((r.dataset, r.model) for r in runs):
            name = run_name(model, dataset)
            group = [r for r in runs if (r.dataset, r.model) == (dataset, model)]
            title = f"{model_title(model)} on {dataset_title(dataset)}"
            # lines labelled by what differs among the experiments that drew one (the first to
            # reach each run) and the run reads
            owners: dict[str, Experiment] = {}
            for r in group:
                owners.setdefault(r.run_key or r.experiment.name, r.experiment)
            own_labels, own_varied = experiments.run_labels(
                list(owners.values()), varied, model, dataset
            )
            histories, diverged, bands = _lines(
                group, own_labels, _of_run(table, dataset, model) if repeated else None, by
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
            figures.animate_learning_curves(
                histories, curves_title, out / f"curves-{name}.gif", diverged
            )
            images += [f"curves-{name}.png", f"curves-{name}.gif"]
            if figures.needs_small_multiples(histories):
                # lines on top of each other, or too many for one panel: one panel per line
                panels = f"curves-{name}-panels.png"
                figures.plot_small_multiples(histories, curves_title, out / panels, diverged)
                images.append(panels)
            charts = []  # (file, what it shows, its table, the column that labels a row)
            if repeated:
                what = "test accuracy over seeds, 95% CI"
                charts.append((f"accuracy-{name}.png", what, groups, "group"))
            if tuned is not None:
                what = f"test accuracy at the {key} chosen on validation, 95% CI"
                charts.append((f"tuned-{name}.png", what, tuned, "choice"))
            for file, what, frame, label in charts:
                rows = stats.interval_rows(_of_run(frame, dataset, model), table, label)
                figures.plot_intervals(rows, f"{title}: {what}", out / file)
                images.append(file)
        # Names and labels stay text in a spreadsheet: '=...' is not run as a formula.
        spreadsheet_safe(table).to_csv(out / "experiments.csv", index=False, lineterminator="\n")
        for file, (_, frame) in csvs.items():
            frame = stats.for_output(frame)
            spreadsheet_safe(frame).to_csv(out / file, index=False, lineterminator="\n")
        (out / "experiments.md").write_text(
            reporting.experiment_markdown(table, varied, images, sections)
        )
        histories = {(r.experiment.name, r.dataset, r.model): r.history for r in runs}
        page_tables = [(f"{t} ({file})", stats.for_output(f)) for file, (t, f) in csvs.items()]
        page = experiment_page(
            table, varied, histories, groups if repeated else None, by, page_tables
        )
        (out / "index.html").write_text(page, encoding="utf-8")
        mark_output_folder(out)
    compared = [e.name for e in exps if e.failed or any(r.experiment is e for r in runs)]
    # a label that tells equal params apart has the name in front already
    named = [
        labels[n] if labels[n] == n or labels[n].startswith(f"{n}: ") else f"{n}: {labels[n]}"
        for n in compared
    ]
    print(
        f"compared {len(compared)} experiments ({shortened(named, '; ', shown=5)}) "
        f"-> {args.out}/index.html, experiments.md, experiments.csv"
        + "".join(f", {file}" for file in csvs)
        + f", {len(images)} figures"
    )


def run(argv: list[str] | None = None) -> None:
    """The console script (pyproject's ``[project.scripts]``)."""
    console(main, argv)
