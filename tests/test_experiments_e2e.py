"""The experiment workflow end to end: `dvc exp run` in the workspace, `--temp` and the queue,
what each change reruns, the diffs and `dvc exp show`, a `-S` typo, and the cross-experiment
comparison.

tests/test_pipeline_e2e.py covers the first `dvc repro`, a diverging run and a typo written
into params.yaml; this module covers the experiments. One baseline (the session's tiny
project, see conftest), two experiments and, last, one queued LeNet-only epoch keep it small.
The seeds test has a project of its own (nothing reproduced first: the queue runs it all).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser import charts, colours, inked, needs_chromium, rendered_dom, screenshot
from PIL import Image
from test_experiments import in_a_cell, starts_a_row
from test_pipeline_e2e import copy_repository, dvc, run, stages_run, tiny_project

pytestmark = pytest.mark.e2e

LENET = {"train@lenet-digits", "evaluate@lenet-digits"}
ALEXNET = {"train@alexnet-digits", "evaluate@alexnet-digits"}
DATA = {"download@digits", "prepare@digits"}


#: The console scripts `pip install -e .` put beside this Python (pyproject's [project.scripts]).
BIN = Path(sys.executable).parent


def compare_experiments(project: Path, *args: str, check: bool = True):
    return run([str(BIN / "cnnlab-compare"), *args], project, check=check, timeout=300)


@pytest.fixture(scope="module")
def baseline(reproduced_digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed, reproduced tiny project: LeNet and AlexNet on digits, Adam (a copy of
    the session's, see conftest)."""
    source, _ = reproduced_digits
    return copy_repository(source, tmp_path_factory.mktemp("exps") / "repo")


def test_each_change_marks_only_the_stages_that_read_it(baseline: Path) -> None:
    """`-S` applied with DVC's own parser, then `dvc status`: the stages whose inputs changed.
    (Stages further down rerun only if those stages' outputs then change.)"""
    from dvc.utils.hydra import apply_overrides

    params = baseline / "params.yaml"
    saved = params.read_text()
    trains = {"train@lenet-digits", "train@alexnet-digits"}
    # validate reads every param (a second's check whose output never changes) and compare
    # only `datasets` and `models`: the recipe its report states (optimizer, lr, epochs,
    # split sizes) comes from each run's record (cnnlab.record), written by evaluate.
    cases = {
        ("optimizer=sgd",): trains | {"validate"},
        ("epochs=3", "lr=0.003"): trains | {"validate"},
        ("optimizers.sgd.lr=0.02",): {"validate"},  # not the chosen optimizer's row
        ("optimizers.adam.lr=0.002",): trains | {"validate"},
        # evaluate rebuilds the model from its checkpoint's header: no model params of its own
        ("model.alexnet.dropout=0.3",): {"train@alexnet-digits", "validate"},
        ("model.lenet.activation=tanh",): {"train@lenet-digits", "validate"},
        ("data.max_test=100",): {"prepare@digits", "validate"},
        ("models=[lenet]",): {"compare", "validate"},
    }
    try:
        for overrides, expected in cases.items():
            apply_overrides(params, list(overrides))
            status = json.loads(dvc("status", "--json", cwd=baseline).stdout)
            assert set(status) == expected, overrides
            params.write_text(saved)
    finally:
        params.write_text(saved)


def test_compare_experiments_without_experiments_says_what_to_do(baseline: Path) -> None:
    result = compare_experiments(baseline, check=False)
    assert result.returncode == 2
    assert "no finished experiments of the current commit" in result.stderr
    assert "dvc exp run -S optimizer=sgd" in result.stderr


@pytest.fixture(scope="module")
def experiments(baseline: Path) -> dict[str, str]:
    """Two experiments with different optimizers, one in the workspace, one in --temp
    restricted to LeNet; their logs. (The queue has its own test, last: its worker costs
    about 20 s more than a --temp run.)"""
    logs = {}
    ran = dvc("exp", "run", "-n", "sgd", "-S", "optimizer=sgd", "-S", "lr=0.05", cwd=baseline)
    logs["sgd"] = ran.stdout
    logs["sgd_metrics_diff"] = dvc("metrics", "diff", "--json", cwd=baseline).stdout
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], baseline)  # back to the baseline
    restrict = ["-S", "lr=null", "-S", "models=[lenet]"]
    ran = dvc("exp", "run", "--temp", "-n", "mom", "-S", "optimizer=momentum", *restrict,
              cwd=baseline)  # fmt: skip
    logs["mom"] = ran.stdout
    return logs


def test_each_run_reruns_only_what_it_changed(experiments: dict[str, str]) -> None:
    # workspace: an optimizer change retrains both models, never touches the data
    assert set(stages_run(experiments["sgd"])) == LENET | ALEXNET | {"compare", "validate"}
    # --temp with `models=[lenet]`: AlexNet's stages are not even defined
    assert set(stages_run(experiments["mom"])) == LENET | {"compare", "validate"}


def test_diffs_show_every_runs_test_accuracy(baseline: Path, experiments) -> None:
    # the workspace's run against HEAD, as `dvc metrics diff` shows it right after the run
    assert "lenet-digits.test_acc" in json.loads(experiments["sgd_metrics_diff"])["metrics.json"]
    diff = json.loads(dvc("exp", "diff", "--all", "main", "sgd", "--json", cwd=baseline).stdout)
    for run_name in ("lenet-digits", "alexnet-digits"):
        change = diff["metrics"]["metrics.json"][f"{run_name}.test_acc"]
        assert 0 <= change["old"] <= 1 and 0 <= change["new"] <= 1, change
    params = diff["params"]["params.yaml"]
    assert params["optimizer"] == {"old": "adam", "new": "sgd"}
    assert params["lr"] == {"old": None, "new": 0.05}
    shown = json.loads(dvc("exp", "show", "--json", cwd=baseline).stdout)
    exps = {e["name"]: e["revs"][0]["data"] for e in shown[1]["experiments"]}
    assert set(exps) == {"sgd", "mom"}
    restricted = exps["mom"]  # LeNet's metrics only
    assert restricted["params"]["params.yaml"]["data"]["models"] == ["lenet"]
    assert set(restricted["metrics"]["metrics.json"]["data"]) == {"lenet-digits"}
    # the table a user reads: the experiment's own metrics, not DVC's "!" for missing ones
    table = dvc("exp", "show", "--no-pager", "--csv", cwd=baseline).stdout.splitlines()
    # DVC names a file's first column `<file>:<key>` and the rest `<key>`
    header = table[0].split(",")
    column = next(i for i, name in enumerate(header) if name.endswith("lenet-digits.test_acc"))
    row = next(line.split(",") for line in table[1:] if ",sgd," in line)
    assert 0 < float(row[column]) <= 1


@pytest.mark.parametrize("columns", [120, 200])
def test_the_readmes_exp_show_fits_the_terminal(baseline: Path, experiments, columns) -> None:
    """The README's `dvc exp show` line, run as written: each experiment's test accuracy per
    run and the params that differ, nothing cut off (two experiments, before the queued one
    adds the queue's State and Executor columns)."""
    import os
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("dvc exp show "))
    env = {**os.environ, "COLUMNS": str(columns)}
    args = [str(Path(sys.executable).parent / "dvc"), *shlex.split(line)[1:], "--no-pager"]
    table = subprocess.run(
        args, cwd=baseline, env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    lines = table.splitlines()
    assert lines and max(len(x) for x in lines) <= columns, table
    header = next(x for x in lines if "Experiment" in x)
    assert "lenet-digits.test_acc" in header and "alexnet-digits.test_acc" in header
    assert "optimizer" in header and "…" not in table, table
    assert "best_val_acc" not in header and "train_seconds" not in header
    assert any("[sgd]" in x and "sgd" in x.split("[sgd]")[1] for x in lines), table


def test_cross_experiment_figure_gif_and_table(baseline: Path, experiments) -> None:
    out = baseline / "reports" / "experiments"
    result = compare_experiments(baseline)
    assert "compared 2 experiments" in result.stdout
    assert (out / ".written-by-cnnlab").is_file()  # --out may replace it next time
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "curves-alexnet-digits.gif",
        "curves-alexnet-digits.png",
        "curves-lenet-digits.gif",
        "curves-lenet-digits.png",
        "experiments.csv",
        "experiments.md",
        "index.html",
    ]
    rows = list(csv.DictReader((out / "experiments.csv").open()))
    shown = json.loads(dvc("exp", "show", "--json", cwd=baseline).stdout)
    recorded = {
        (e["name"], run): values["test_acc"]
        for e in shown[1]["experiments"]
        for run, values in e["revs"][0]["data"]["metrics"]["metrics.json"]["data"].items()
    }
    # one row per experiment and run, each with the accuracy that experiment recorded
    table = {(r["experiment"], f"{r['model']}-{r['dataset']}"): r for r in rows}
    assert set(table) == set(recorded)
    for key, acc in recorded.items():
        assert float(table[key]["test_acc_pct"]) == pytest.approx(acc * 100, abs=1e-3), key
    labels = {r["experiment"]: r["label"] for r in rows}
    assert labels == {"sgd": "optimizer=sgd, lr=0.05", "mom": "optimizer=momentum, lr=null"}
    markdown = (out / "experiments.md").read_text()
    for label in labels.values():
        assert in_a_cell(markdown, label)
    gif = Image.open(out / "curves-lenet-digits.gif")
    assert gif.n_frames == 2  # one frame per epoch
    png = Image.open(out / "curves-lenet-digits.png")
    assert png.size == (1200, 900)

    # the baseline by its branch name: only the optimizer differs from `mom`
    again = compare_experiments(baseline, "--exp", "mom", "main", "--out", "reports/two")
    assert "compared 2 experiments" in again.stdout
    two = list(csv.DictReader((baseline / "reports/two/experiments.csv").open()))
    assert {(r["experiment"], r["label"]) for r in two} == {
        ("mom", "optimizer=momentum"),
        ("main", "optimizer=adam"),
    }
    assert (out / "curves-lenet-digits.png").read_bytes() != (
        baseline / "reports/two/curves-lenet-digits.png"
    ).read_bytes()

    unknown = compare_experiments(baseline, "--exp", "adamm", check=False)
    assert unknown.returncode == 2
    assert "no finished experiment 'adamm'; known: sgd, mom, main" in unknown.stderr


@needs_chromium
def test_the_experiments_page_in_a_browser_offline(
    baseline: Path, experiments, tmp_path: Path
) -> None:
    """The page of the two experiments (written by the test above), opened with every host
    unreachable: one table row per experiment, every chart drawn, a screenshot with ink."""
    page = baseline / "reports" / "experiments" / "index.html"
    if not page.exists():
        compare_experiments(baseline)
    dom = rendered_dom(page)
    assert 'data-rendered="' in dom and "data-error" not in dom
    table = dom.split('id="experiments"')[1].split("</table>")[0]
    rows = re.findall(r"<tr data-line=\"([^\"]*)\"", table)
    assert sorted(rows) == ["optimizer=momentum, lr=null", "optimizer=sgd, lr=0.05"]
    # curves of LeNet and AlexNet, params against accuracy: each drawn
    assert charts(dom) == 3 == page.read_text().count('<div class="chart" id=')
    image = screenshot(page, tmp_path / "experiments.png", (1200, 1400))
    assert colours(image) > 50 and inked(image) > 0.03, "the screenshot is (nearly) blank"


@needs_chromium
def test_dvc_plots_diff_page_draws_offline(baseline: Path, experiments) -> None:
    """Plain `dvc plots diff` of the two experiments: the repository's template inlines Vega."""
    dvc("plots", "diff", "sgd", "mom", "-o", "reports/dvc-diff", cwd=baseline, timeout=120)
    page = baseline / "reports" / "dvc-diff" / "index.html"
    plots = page.read_text().split("</head>")[-1].count("vegaEmbed(")
    assert plots >= 10 and charts(rendered_dom(page)) == plots


def test_offline_dvc_plots_of_two_experiments(baseline: Path, experiments) -> None:
    run([str(BIN / "cnnlab-plots"), "sgd", "mom", "--out", "reports/dvc"], baseline)
    page = (baseline / "reports/dvc/index.html").read_text()
    assert page.count("<svg") == len(list((baseline / "reports/dvc").glob("*.svg"))) >= 6
    assert "<script" not in page
    assert "train_lenet-digits_plots_metrics_val_acc.tsv.svg" in {
        p.name for p in (baseline / "reports/dvc").iterdir()
    }


def test_s_typos_fail_before_any_work(baseline: Path, experiments) -> None:
    bad_value = dvc("exp", "run", "-S", "optimizer=adamm", cwd=baseline, check=False)
    assert bad_value.returncode != 0
    text = bad_value.stdout + bad_value.stderr
    assert "optimizer: got 'adamm': Input should be 'sgd', 'momentum'" in text
    assert "epoch" not in text.lower().replace("epochs", "")  # no training happened
    unknown_key = dvc("exp", "run", "-S", "optimizr=sgd", cwd=baseline, check=False)
    assert unknown_key.returncode != 0
    assert "Key 'optimizr' is not in struct" in unknown_key.stderr
    assert stages_run(unknown_key.stdout) == []
    run(["git", "checkout", "--", "params.yaml"], baseline)


def test_a_queued_run_keeps_its_restriction(baseline: Path, experiments) -> None:
    """The sweep's path: `--queue`, then the queue's worker (`--run-all` waits for it), with
    `models=[lenet]`; one epoch, as only what the queue adds is under test here."""
    dvc("exp", "run", "--queue", "-n", "queued", "-S", "optimizer=nag", "-S", "lr=null",
        "-S", "models=[lenet]", "-S", "epochs=1", "-S", "threads=1", cwd=baseline)  # fmt: skip
    dvc("exp", "run", "--run-all", cwd=baseline)
    status = dvc("queue", "status", cwd=baseline).stdout
    assert re.search(r"^\w+\s+queued\s.*\sSuccess\s*$", status, re.MULTILINE), status
    logs = dvc("queue", "logs", "queued", cwd=baseline).stdout
    assert set(stages_run(logs)) == LENET | {"compare", "validate"}  # no AlexNet stages
    shown = json.loads(dvc("exp", "show", "--json", cwd=baseline).stdout)
    queued = next(e for e in shown[1]["experiments"] if e["name"] == "queued")
    assert set(queued["revs"][0]["data"]["metrics"]["metrics.json"]["data"]) == {"lenet-digits"}


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed tiny project (digits, LeNet, one epoch on 200 images, one thread) with
    one configuration queued with two seeds (`-S 'seed=1,2'`: DVC's grid makes two
    experiments) and the queue run to the end."""
    params = {
        "datasets": ["digits"],
        "models": ["lenet"],
        "epochs": 1,
        "batch_size": 32,
        "eval_batch_size": 100,
        "threads": 1,
    }
    path = tiny_project(
        tmp_path_factory.mktemp("seeds") / "repo", params, {"max_train": 200, "max_test": 200}
    )
    dvc("exp", "run", "--queue", "-S", "seed=1,2", cwd=path, timeout=120)
    dvc("exp", "run", "--run-all", cwd=path, timeout=300)  # waits for the queue's worker
    return path


def test_two_seeds_of_one_configuration_are_one_row_with_their_mean(two_seeds: Path) -> None:
    shown = json.loads(dvc("exp", "show", "--json", cwd=two_seeds, timeout=120).stdout)
    recorded = {}  # seed -> the test accuracy that experiment committed (metrics.json)
    for exp in shown[1]["experiments"]:
        data = exp["revs"][0]["data"]
        seed = data["params"]["params.yaml"]["data"]["seed"]
        recorded[seed] = data["metrics"]["metrics.json"]["data"]["lenet-digits"]["test_acc"]
    assert sorted(recorded) == [1, 2]
    result = compare_experiments(two_seeds)
    assert "compared 2 experiments" in result.stdout and "groups.csv" in result.stdout
    out = two_seeds / "reports" / "experiments"
    (row,) = list(csv.DictReader((out / "groups.csv").open()))
    assert (row["group"], row["dataset"], row["model"]) == ("every experiment", "digits", "lenet")
    assert (row["n"], row["n_diverged"], row["n_failed"], row["seeds"]) == ("2", "0", "0", "1 2")
    mean = sum(recorded.values()) / 2 * 100
    assert float(row["test_acc_mean_pct"]) == pytest.approx(mean, abs=1e-3)
    assert float(row["test_acc_ci_low_pct"]) <= mean <= float(row["test_acc_ci_high_pct"])
    page = (out / "experiments.md").read_text()
    assert "## Test accuracy over seeds (%)" in page
    row_start = ("every experiment", "scikit-learn digits", "LeNet", "2", f"{mean:.2f}")
    assert starts_a_row(page, *row_start)
    assert Image.open(out / "accuracy-lenet-digits.png").size[0] == 1200
