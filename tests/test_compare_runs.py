"""The cross-experiment comparison counts runs, not experiments: one run reached by two
experiments is one measurement, a timing is shown only for the run it timed, and missing or
unreadable files cost one line each instead of a traceback.

DVC's side is faked here (the files each experiment committed, as ``dvc.api.DVCFileSystem``
would read them); tests/test_compare_runs_e2e.py runs the real thing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_experiments import (
    compare_main,
    experiment,
    fake_sweep,
    in_a_cell,
    lenet_run,
    run_metrics,
    sweep,
)

from cnnlab.runs import lock_key, lock_keys
from cnnlab_compare import stats
from cnnlab_compare.experiments import Experiment, ExperimentError, collect_runs

RUN = "lenet-mnist"


def lock(optimizer: str) -> str:
    """A dvc.lock whose train@lenet-mnist was trained with this optimizer."""
    entry = {
        "cmd": "python stages/train.py 'lenet' 'mnist'",
        "deps": [{"path": "stages/train.py", "hash": "md5", "md5": "0" * 32, "size": 10}],
        "params": {"params.yaml": {"optimizer": optimizer, "seed": 42}},
        "outs": [{"path": "models/lenet-mnist", "hash": "md5", "md5": "1" * 32 + ".dir"}],
    }
    return yaml.safe_dump({"schema": "2.0", "stages": {f"train@{RUN}": entry}})


def key_of(optimizer: str) -> str:
    return lock_keys(yaml.safe_load(lock(optimizer)))[f"train@{RUN}"]


def tsv(metric: str, values: list[float]) -> str:
    return f"step\t{metric}\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values))


def committed(
    optimizer: str,
    acc: float,
    timings: object = None,
    history: bool = True,
) -> dict[str, object]:
    """The files of an experiment of LeNet on MNIST: path -> text (or an exception that
    reading it raises)."""
    files: dict[str, object] = {
        "dvc.lock": lock(optimizer),
        f"metrics/{RUN}.json": json.dumps(
            {k: v for k, v in run_metrics("lenet", "mnist", acc).items() if k != "train_seconds"}
        ),
    }
    if history:
        for split in ("train", "val"):
            for metric in ("loss", "acc"):
                files[f"plots/train/{RUN}/plots/metrics/{split}/{metric}.tsv"] = tsv(
                    metric, [0.5, acc]
                )
    if timings is not None:
        files["timings.json"] = timings if isinstance(timings, str) else json.dumps(timings)
    return files


@pytest.fixture
def fake_cache(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, object]]:
    """rev -> the files that experiment committed; `dvc.api.DVCFileSystem` reads them."""
    import dvc.api

    revs: dict[str, dict[str, object]] = {}

    class FakeFileSystem:
        def __init__(self, root: str, rev: str) -> None:
            self.files = revs[rev]

        def exists(self, path: str) -> bool:
            return path in self.files

        def read_text(self, path: str) -> str:
            found = self.files.get(path)
            if found is None:
                raise FileNotFoundError(path)
            if isinstance(found, Exception):
                raise found
            return str(found)

    monkeypatch.setattr(dvc.api, "DVCFileSystem", FakeFileSystem)
    return revs


def experiments(revs: dict[str, dict[str, object]], **files: dict[str, object]) -> list:
    exps = []
    for name, content in files.items():
        exp = experiment(name, datasets=["mnist"], models=["lenet"])
        revs[exp.rev] = content
        exps.append(exp)
    return exps


def collect(exps: list[Experiment]) -> list:
    return collect_runs(Path("."), exps)  # the layout of cnnlab_compare.layout


# --------------------------------------------------------------------------------------------
# a run is what produced it


def test_the_run_key_is_dvcs_run_cache_key() -> None:
    from dvc.stage.cache import _get_cache_hash

    entry = yaml.safe_load(lock("adam"))["stages"][f"train@{RUN}"]
    assert lock_key(entry) == _get_cache_hash(json.loads(json.dumps(entry)), key=True)
    assert key_of("adam") != key_of("sgd")
    assert lock_keys(None) == {} and lock_keys({"stages": "junk"}) == {}


def test_experiments_that_reached_the_same_run_are_one_measurement() -> None:
    table, varied = sweep(
        [
            ("adam", {"seed": 1}, lenet_run(0.9694)),
            ("adam-again", {"seed": 1}, lenet_run(0.9694)),  # a no-op: the same run
            ("adam-2", {"seed": 2}, lenet_run(0.9600)),
        ]
    )
    # the sweep's rows as the comparison builds them, each with what trained it
    keys = {"adam": "a" * 64, "adam-again": "a" * 64, "adam-2": "b" * 64}
    table["run_id"] = table["experiment"].map(lambda n: keys[n][:12])
    groups = stats.group_table(table, stats.group_columns(varied))
    (group,) = groups.to_dict("records")
    assert group["n"] == 2  # not 3: the repeat of one run is no second seed
    assert group["seeds"] == ["1", "2"]
    # the experiments stay a list (and one line in the CSV): both were run
    assert group["experiments"] == ["adam", "adam-again", "adam-2"]
    assert stats.for_output(groups)["experiments"].tolist() == ["adam adam-again adam-2"]
    assert group["same_run"] == "adam-again = adam"
    assert group["test_acc_mean_pct"] == pytest.approx((96.94 + 96.00) / 2)
    assert group["test_acc_sd_pct"] > 0.5  # two different values, not 96.94 twice


def test_configurations_that_share_a_run_are_no_pair_to_compare() -> None:
    """Adam reads no sgd row: seeds 1 and 2 of two values of it are the same runs, only their
    third seeds differ. No interval between them means anything, whatever it says."""
    specs = [
        (f"{lr}-{seed}", {"optimizers__sgd__lr": lr, "seed": seed}, lenet_run(acc))
        for lr, accs in (
            (0.01, {1: 0.980, 2: 0.982, 3: 0.990}),
            (0.1, {1: 0.980, 2: 0.982, 4: 0.950}),
        )
        for seed, acc in accs.items()
    ]  # fmt: skip
    table, varied = sweep(specs)
    table["run_id"] = table["experiment"].map(lambda n: n.split("-")[1] * 12)  # by seed
    by = stats.group_columns(varied)
    (pair,) = stats.difference_table(table, by).to_dict("records")
    assert pair["verdict"] == (
        "2 runs in both: training reads none of these params, one configuration"
    )
    table["run_id"] = table["experiment"]  # no run shared: a comparison as any other
    (pair,) = stats.difference_table(table, by).to_dict("records")
    assert pair["verdict"] == "not distinguishable with n=3 seeds"


def test_runs_of_one_seed_count_once_in_n() -> None:
    """Experiments of two commits (`--all`): adam's params and seeds twice, each a run of its
    own (other code). Four runs are two draws of the seed's randomness: counted as four, the
    interval shrinks and adam reads "higher"; averaged per seed it cannot tell."""
    specs = [
        (f"{when}adam-{seed}", {"seed": seed}, lenet_run(acc))
        for when in ("old-", "new-")
        for seed, acc in ((1, 0.9800), (2, 0.9810))
    ]
    specs += [("sgd-1", {"optimizer": "sgd", "seed": 1}, lenet_run(0.9780))]
    specs += [("sgd-2", {"optimizer": "sgd", "seed": 2}, lenet_run(0.9785))]
    table, varied = sweep(specs)
    table["run_id"] = table["experiment"]  # six runs
    by = stats.group_columns(varied)
    adam, sgd = stats.group_table(table, by).to_dict("records")
    assert (adam["n"], adam["seeds"]) == (2, ["1", "2", "1", "2"])
    assert adam["test_acc_ci95_pct"] == pytest.approx(sgd["test_acc_ci95_pct"] * 2, abs=1e-3)
    assert adam["status"] == "seed 1 in 2 runs, seed 2 in 2 runs: averaged, n counts seeds"
    (pair,) = stats.difference_table(table, by).to_dict("records")
    assert pair["verdict"] == "not distinguishable with n=2 seeds"


def test_the_comparison_lists_experiments_that_reached_the_same_run(
    tmp_path: Path,
    fake_cache: dict[str, dict[str, object]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import cnnlab_compare.experiments as module

    exps = experiments(
        fake_cache,
        adam=committed("adam", 0.9694),
        noop=committed("adam", 0.9694),  # `-S optimizer=adam` on an adam baseline
    )
    exps = [replace(e, timestamp=str(i)) for i, e in enumerate(exps)]
    monkeypatch.setattr(module, "list_experiments", lambda *a, **k: exps)
    out = tmp_path / "out"
    compare_main()(["--out", str(out)])
    said = capsys.readouterr()
    assert "experiment 'noop' reached the same runs as 'adam'" in said.err
    assert not (out / "groups.csv").exists()  # one run: no seeds, no interval
    page = (out / "experiments.md").read_text()
    assert "## Experiments that reached the same run" in page
    assert f"- LeNet on MNIST: `adam`, `noop` (run {key_of('adam')[:12]})" in page
    table = pd.read_csv(out / "experiments.csv")
    assert table["run_id"].tolist() == [key_of("adam")[:12]] * 2


# --------------------------------------------------------------------------------------------
# timings bound to their run


def test_a_timing_is_shown_only_for_the_run_it_timed(
    fake_cache: dict[str, dict[str, object]],
) -> None:
    sgd_timing = {RUN: {"train_seconds": 31.8, "train_run": key_of("sgd")}}
    exps = experiments(
        fake_cache,
        sgd=committed("sgd", 0.4373, timings=sgd_timing),
        # restored from the run cache: the workspace still held sgd's timings.json
        noop=committed("adam", 0.9694, timings=sgd_timing),
        # an old timings.json without run keys: nobody can tell which run it timed
        old=committed("rmsprop", 0.95, timings={RUN: {"train_seconds": 5.0}}),
    )
    seconds = {r.experiment.name: r.metrics.get("train_seconds") for r in collect(exps)}
    assert seconds == {"sgd": 31.8, "noop": None, "old": None}

    # the run that trained it is among those compared: its time is this run's time
    adam_timing = {RUN: {"train_seconds": 12.5, "train_run": key_of("adam")}}
    exps += experiments(fake_cache, adam=committed("adam", 0.9694, timings=adam_timing))
    seconds = {r.experiment.name: r.metrics.get("train_seconds") for r in collect(exps)}
    assert seconds == {"sgd": 31.8, "noop": 12.5, "old": None, "adam": 12.5}


def test_an_unmeasured_run_says_so_in_the_table() -> None:
    from cnnlab_compare.reporting import NOT_MEASURED, experiment_markdown

    table, varied = sweep(
        [
            ("sgd", {"optimizer": "sgd"}, {**lenet_run(0.5), "train_seconds": 31.8}),
            ("adam", {"optimizer": "adam"}, {**lenet_run(0.9), "train_seconds": None}),
        ]
    )
    page = experiment_markdown(table, varied, [])
    assert in_a_cell(page, "31.8") and in_a_cell(page, NOT_MEASURED)


# --------------------------------------------------------------------------------------------
# never a traceback for missing or bad data


def test_missing_or_unreadable_experiments_are_skipped_with_one_line_each(
    fake_cache: dict[str, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    from dvc_data.index.index import DataIndexDirError

    gone = committed("sgd", 0.9)
    gone[f"plots/train/{RUN}/plots/metrics/train/loss.tsv"] = DataIndexDirError(
        "failed to load directory ('plots', 'train')"
    )
    conflict = "<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> theirs\n"
    # after `dvc gc -w`: dvc.lock lists the file, the cache has no copy of it
    collected = committed("momentum", 0.9)
    collected[f"plots/train/{RUN}/plots/metrics/val/acc.tsv"] = FileNotFoundError(
        "[Errno 2] No storage files available"
    )
    exps = experiments(
        fake_cache,
        ok=committed("adam", 0.97),
        gone=gone,
        collected=collected,
        conflicted=committed("rmsprop", 0.95, timings=conflict),
        broken={**committed("nag", 0.9), f"metrics/{RUN}.json": conflict},
    )
    runs = collect(exps)
    assert [r.experiment.name for r in runs] == ["ok", "conflicted"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4, err
    assert err[0].startswith("note: skipping experiment 'gone'")
    assert "is not in this machine's DVC cache" in err[0]
    assert "`dvc exp pull <remote> gone` fetches it" in err[0]
    assert err[1].startswith("note: skipping experiment 'collected'")
    assert f"{RUN}/plots/metrics/val/acc.tsv is not in this machine's DVC cache" in err[1]
    err = err[1:]
    assert err[1] == (
        "note: experiment 'conflicted': timings.json is not valid JSON (a merge conflict "
        "left in it?): its times are not shown"
    )
    assert err[2].startswith("note: skipping experiment 'broken'")
    assert f"metrics/{RUN}.json is not valid JSON" in err[2]

    with pytest.raises(ExperimentError, match="none of the chosen experiments has results"):
        collect([e for e in exps if e.name in ("gone", "broken")])


def test_a_named_experiment_without_a_logged_epoch_is_compared_without_its_curve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_sweep(monkeypatch, [("first", {"optimizer": "sgd"}, lenet_run(None, diverged=True))])
    import cnnlab_compare.experiments as module

    (run,) = module.collect_runs()
    empty = run.history.iloc[:0]
    monkeypatch.setattr(
        module, "collect_runs", lambda *a, **k: [module.replace(run, history=empty)]
    )
    out = tmp_path / "out"
    compare_main()(["--out", str(out), "--exp", "first"])
    said = capsys.readouterr()
    assert "no logged epoch to draw for 'first'" in said.err
    assert "compared 1 experiments" in said.out
    assert not list(out.glob("curves-*"))
    assert "diverged" in (out / "experiments.md").read_text()


def test_experiments_that_reached_the_same_run_share_one_line() -> None:

    from test_experiments import history

    from cnnlab_compare.cli import _lines
    from cnnlab_compare.experiments import ExperimentRun

    exps = [experiment(name, datasets=["mnist"], models=["lenet"]) for name in "abc"]
    keys = {"a": "k1", "b": "k2", "c": "k1"}
    group = [
        ExperimentRun(e, "lenet", "mnist", lenet_run(0.9), history(i), keys[e.name])
        for i, e in enumerate(exps)
    ]
    labels = {"a": "optimizer=adam", "b": "optimizer=sgd", "c": "optimizer=adam"}
    histories, _, _ = _lines(group, labels, None, [])
    assert list(histories) == ["optimizer=adam (also c: the same run)", "optimizer=sgd"]


def test_the_page_says_not_measured_here_instead_of_a_partial_time() -> None:
    from fake_experiments import fake_comparison
    from test_experiment_page import experiments_table

    from cnnlab_compare.experiment_page import experiment_page
    from cnnlab_compare.reporting import NOT_MEASURED

    c = fake_comparison(configs=2)
    unmeasured = (c.table["experiment"] == "exp-01-0") & (c.table["model"] == "alexnet")
    c.table.loc[unmeasured, "train_seconds"] = float("nan")
    _, rows = experiments_table(experiment_page(c.table, c.varied, c.histories))
    assert [row[-1] for row in rows] == ["20.0", NOT_MEASURED]


# --------------------------------------------------------------------------------------------
# the record's status, as evaluate wrote it


def test_a_run_at_chance_level_is_flagged_did_not_learn_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record says "did not learn" (cnnlab.record decides it once): the table, the
    Markdown, the groups and the page say so too, and never "ok"; its accuracy is a result
    (in the mean), shown with the flag."""
    from test_experiment_page import experiments_table
    from test_experiments import compare_main, fake_sweep, lenet_run, run_metrics

    flat = run_metrics("lenet", "mnist", 0.1135, status="did not learn")
    specs = [
        ("adam-1", {"optimizer": "adam", "seed": 1}, lenet_run(0.97)),
        ("adam-2", {"optimizer": "adam", "seed": 2}, lenet_run(0.96)),
        ("sgd-1", {"optimizer": "sgd", "seed": 1}, flat),
        ("sgd-2", {"optimizer": "sgd", "seed": 2}, lenet_run(0.60)),
    ]
    fake_sweep(monkeypatch, specs)
    out = tmp_path / "out"
    compare_main()(["--out", str(out)])
    runs = pd.read_csv(out / "experiments.csv").set_index("experiment")
    assert runs.loc["sgd-1", "status"] == "did not learn"
    groups = pd.read_csv(out / "groups.csv").set_index("group")
    assert groups.loc["optimizer=sgd", "status"] == "1 of 2 did not learn"
    assert groups.loc["optimizer=sgd", "n"] == 2  # a measurement at chance: in the mean
    assert groups.loc["optimizer=sgd", "test_acc_mean_pct"] == pytest.approx((11.35 + 60) / 2)
    assert groups.loc["optimizer=adam", "status"] == "ok"
    text = (out / "experiments.md").read_text()
    assert "## Runs that did not learn" in text and "- `sgd-1`: LeNet on MNIST, 11.35%" in text
    assert "11.35 (did not learn)" in text
    page = (out / "index.html").read_text()
    headers, body = experiments_table(page)
    status = headers.index("status")
    rows = {row[0]: row for row in body if len(row) == len(headers)}
    assert rows["sgd-1"][status] == "lenet-mnist: did not learn"
    assert "11.35 (did not learn)" in rows["sgd-1"]
    assert rows["adam-1"][status] == "ok"


def test_metrics_from_before_the_run_record_are_skipped_with_the_fix(
    fake_cache: dict[str, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    old = {"model": "lenet", "dataset": "mnist", "test_acc": 0.9, "diverged": False}
    exps = experiments(
        fake_cache,
        ok=committed("adam", 0.97),
        old={**committed("sgd", 0.9), f"metrics/{RUN}.json": json.dumps(old)},
    )
    assert [r.experiment.name for r in collect(exps)] == ["ok"]
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("note: skipping experiment 'old'")
    assert f"metrics/{RUN}.json: not a run record" in line
    assert "`dvc repro evaluate@<run>`" in line


def test_a_history_that_is_not_dvclives_tsv_skips_its_experiment_with_one_line(
    fake_cache: dict[str, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = committed("sgd", 0.9)
    bad[f"plots/train/{RUN}/plots/metrics/val/acc.tsv"] = "<<<<<<< HEAD\nstep\tacc\n=======\n"
    exps = experiments(fake_cache, ok=committed("adam", 0.97), bad=bad)
    assert [r.experiment.name for r in collect(exps)] == ["ok"]
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("note: skipping experiment 'bad'")
    assert f"plots/train/{RUN}: a per-epoch log is not DVCLive's TSV" in line
