"""`make verify` and `make baseline` on a tiny project: the reproducibility check passes under
two numeric platforms of one machine (saying which rule it applied), fails naming the stage
or run for a stale lock and a wrong metric, and `make baseline` returns a workspace left by an
experiment and a failed `-S` to the committed params and results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import built_once
from e2e import COMMIT, TINY_PARAMS, copy_repository, dvc, run, tiny_project

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # each runs `make verify` or a forced rerun

ROOT = Path(__file__).resolve().parents[1]
#: Small enough that a `dvc repro -f` of both models takes seconds, AlexNet included.
PARAMS = {**TINY_PARAMS, "epochs": 1}
DATA = {"max_train": 200, "max_test": 100}
#: A deadline for one `make verify` of the tiny project (one or two forced runs): fails loudly
#: past it.
VERIFY_DEADLINE = 600


def _commit(path: Path, message: str) -> None:
    run(["git", "add", "-A"], path)
    run([*COMMIT, message], path)


def _verify(project: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python ci/verify.py` as `make verify` runs it, with extra environment variables."""
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        return run(["python", "ci/verify.py"], project, check=False, timeout=VERIFY_DEADLINE)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _lines(result: subprocess.CompletedProcess, tag: str) -> list[str]:
    return [line.strip() for line in result.stdout.splitlines() if f"[{tag}]" in line]


def _second_platform() -> dict[str, str]:
    """Environment variables that make this CPU compute like another one (a lower instruction
    set for ATen and oneDNN), whatever this CPU has."""
    import torch

    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        return {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    return {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project whose results, platform and seed-to-seed spread are committed, as
    `make lock` and `make tolerance` leave them; built once per test run (`built_once`)."""

    def build(folder: Path) -> None:
        path = tiny_project(folder / "repo", PARAMS, DATA)
        dvc("repro", cwd=path, timeout=VERIFY_DEADLINE)
        run(["python", "ci/verify.py", "--record"], path)
        seeds = ["--seeds", "1", "2", "3"]
        run(["python", "ci/tolerance.py", *seeds], path, timeout=VERIFY_DEADLINE)
        _commit(path, "results")

    folder, _ = built_once(tmp_path_factory, "verify-committed", build)
    return folder / "repo"


@pytest.fixture
def project(committed: Path, tmp_path: Path) -> Path:
    return copy_repository(committed, tmp_path / "repo")


@pytest.fixture(scope="module")
def verified_elsewhere(
    committed: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the committed project after `make verify` under the second numeric platform,
    and what it printed; built once per test run (`built_once`). Its scratch clone shared the
    project's DVC cache, so the cache now also holds that platform's run of the committed
    params, as on a machine that did not make the results once `make verify` has run there."""

    def build(folder: Path) -> dict:
        path = copy_repository(committed, folder / "repo")
        result = _verify(path, _second_platform())
        return {k: getattr(result, k) for k in ("args", "returncode", "stdout", "stderr")}

    folder, result = built_once(tmp_path_factory, "verify-elsewhere", build)
    return folder / "repo", subprocess.CompletedProcess(**result)


@pytest.fixture(scope="module")
def experimented(committed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed project after a workspace experiment (`dvc exp run -S lr=0.002`), where
    both `make baseline` tests start; built once per test run (`built_once`)."""

    def build(folder: Path) -> None:
        path = copy_repository(committed, folder / "repo")
        dvc("exp", "run", "-S", "lr=0.002", cwd=path, timeout=VERIFY_DEADLINE)

    folder, _ = built_once(tmp_path_factory, "verify-experimented", build)
    return folder / "repo"


@pytest.fixture
def after_experiment(experimented: Path, tmp_path: Path) -> Path:
    return copy_repository(experimented, tmp_path / "repo")


def test_tolerance_records_each_runs_spread_over_the_seeds(committed: Path) -> None:
    tolerance = json.loads((committed / "ci" / "tolerance.json").read_text())
    assert tolerance["measured_with"]["seeds"] == [1, 2, 3]
    assert set(tolerance["runs"]) == {"lenet-digits", "alexnet-digits"}
    for entry in tolerance["runs"].values():
        accs = list(entry["test_acc_by_seed"].values())
        assert len(accs) == 3 and entry["confidence"] == 0.99
        # two seeds' runs differ by less than the bound (it is wider than the seeds' range)
        assert entry["test_acc_bound"] >= max(accs) - min(accs)
        assert set(entry["agreement_by_pair"]) == {"1-2", "1-3", "2-3"}
        assert 0.0 <= entry["agreement_bound"] <= min(entry["agreement_by_pair"].values())
    record = json.loads((committed / "metrics" / "lenet-digits.json").read_text())
    assert len(record["test_predictions"]) == record["test_images"] == 100


@pytest.mark.slow
def test_verify_passes_exactly_on_the_platform_that_made_the_results(project: Path) -> None:
    result = _verify(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the same numeric platform: training must match bit for bit" in result.stdout
    assert _lines(result, "lock") == [
        "ok    [lock] 8 stages: code, params and committed files match"
    ]
    assert len(_lines(result, "exact, every machine")) == 3  # validate, download, prepare
    exact = _lines(result, "exact, same platform")
    assert any("train@alexnet-digits: every output is the committed bytes" in x for x in exact)
    assert any("evaluate@lenet-digits" in x for x in exact)
    # the committed bytes were made by another run on this platform: one forced run suffices
    same = _lines(result, "same machine, same bytes")
    assert len(same) == 1 and same[0].startswith("ok"), result.stdout
    assert "the committed bytes, made by another run on this numeric platform" in same[0]
    assert result.stdout.count("dvc repro -f") == 1, result.stdout
    assert result.stdout.splitlines()[-1].startswith("verify: passed")
    assert not (run(["git", "status", "--porcelain"], project).stdout.strip())


@pytest.mark.slow
def test_verify_passes_within_the_tolerance_on_a_second_numeric_platform(
    verified_elsewhere: tuple[Path, subprocess.CompletedProcess],
) -> None:
    result = verified_elsewhere[1]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "another numeric platform (aten_cpu_capability, onednn_isa differ)" in result.stdout
    assert len(_lines(result, "exact, every machine")) == 3
    tolerance = _lines(result, "tolerance")
    assert [line.split("] ")[1].split(":")[0] for line in tolerance] == [
        "lenet-digits",
        "alexnet-digits",
    ]
    assert all(line.startswith("ok") and "predictions agree on" in line for line in tolerance)
    assert any("[derived] compare" in line for line in result.stdout.splitlines())
    assert "3. forced rerun here: dvc repro -f" in result.stdout  # no committed bytes to match
    same = _lines(result, "same machine, same bytes")
    assert len(same) == 1 and same[0].startswith("ok"), result.stdout
    assert "bit-identical to the first run's" in same[0]


@pytest.mark.slow
def test_a_wrong_metric_recorded_in_the_lock_fails_the_exact_rule(project: Path) -> None:
    """Edited and then `dvc commit`ed, so dvc.lock agrees: the run itself disagrees."""
    path = project / "metrics" / "alexnet-digits.json"
    record = json.loads(path.read_text())
    record["test_acc"] = 0.999
    path.write_text(json.dumps(record, indent=2) + "\n")
    dvc("commit", "--force", cwd=project)
    _commit(project, "better, with the lock")
    result = _verify(project)
    assert result.returncode == 1
    failed = [x for x in _lines(result, "exact, same platform") if x.startswith("FAIL")]
    assert failed and failed[0].startswith(
        "FAIL  [exact, same platform] evaluate@alexnet-digits: metrics/alexnet-digits.json "
        "differ from the committed bytes on the platform that made them (test acc"
    ), result.stdout
    assert "99.90% committed" in failed[0]
    # the run differs from the committed bytes, so a forced rerun tells noise from a wrong
    # result: it gives the first run's bytes, so the committed metric is what is wrong
    same = _lines(result, "same machine, same bytes")
    assert len(same) == 1 and same[0].startswith("ok"), result.stdout
    assert "bit-identical to the first run's" in same[0]


@pytest.mark.slow
def test_baseline_restores_this_machines_run_from_the_run_cache(
    verified_elsewhere: tuple[Path, subprocess.CompletedProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a platform that did not make the committed results, where `make verify` has run
    the committed params: nothing trains twice."""
    project = copy_repository(verified_elsewhere[0], tmp_path / "repo")
    for key, value in _second_platform().items():
        monkeypatch.setenv(key, value)
    committed = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], project).stdout)["stages"]
    stage = "train@alexnet-digits"
    cache = project / ".dvc" / "cache" / "files" / "md5"
    for out in committed[stage]["outs"]:  # as on a machine that never had the committed bytes
        (cache / out["md5"][:2] / out["md5"][2:]).unlink(missing_ok=True)
    dvc("exp", "run", "-S", "lr=0.002", cwd=project, timeout=VERIFY_DEADLINE)
    result = run(["python", "ci/baseline.py"], project, timeout=VERIFY_DEADLINE)
    assert f"Stage '{stage}' is cached - skipping run" in result.stdout, result.stdout
    assert f"Running stage '{stage}'" not in result.stdout
    assert "Data and pipelines are up to date." in dvc("status", cwd=project).stdout
    # this platform's run, which `make verify` made: the committed run's outputs are gone
    # from the cache, so it is the run cache's one usable run of these params
    now = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert now[stage]["outs"] != committed[stage]["outs"], "the second platform gave the same bytes"


@pytest.mark.slow
def test_baseline_after_an_experiment_and_a_failed_set(
    committed: Path, after_experiment: Path
) -> None:
    committed_params = (committed / "params.yaml").read_bytes()
    project = after_experiment  # `dvc exp run -S lr=0.002` done
    assert yaml.safe_load((project / "params.yaml").read_text())["lr"] == 0.002
    failed = dvc("exp", "run", "-S", "epochs=0", cwd=project, check=False, timeout=300)
    assert failed.returncode != 0
    assert b"epochs: 0" in (project / "params.yaml").read_bytes()
    result = run(["python", "ci/baseline.py"], project, timeout=VERIFY_DEADLINE)
    assert (project / "params.yaml").read_bytes() == committed_params
    assert "every committed output: dvc checkout" in result.stdout, result.stdout
    assert run(["git", "status", "--porcelain"], project).stdout.strip() == ""
    status = dvc("status", cwd=project).stdout
    assert "Data and pipelines are up to date." in status
    backups = sorted((project / ".dvc" / "tmp" / "baseline").iterdir())
    assert b"epochs: 0" in (backups[-1] / "params.yaml").read_bytes()


@pytest.mark.slow
def test_baseline_after_a_run_stopped_midway_keeps_what_it_left(after_experiment: Path) -> None:
    """A workspace run stopped in AlexNet's training (Ctrl-C): DVC had removed the stage's
    outputs and DVCLive had written its first epoch, files no cache holds, which `dvc
    checkout` refuses to replace. `make baseline` moves them aside and restores the rest."""
    project = after_experiment
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("seed: 42", "seed: 11"))
    shutil.rmtree(project / "models" / "alexnet-digits")
    loss = project / "plots/train/alexnet-digits/plots/metrics/train/loss.tsv"
    partial = "step\tloss\n1\t2.25\n"
    loss.write_text(partial)
    result = run(["python", "ci/baseline.py"], project, timeout=VERIFY_DEADLINE)
    assert "output file(s) that no finished run made" in result.stdout, result.stdout
    assert run(["git", "status", "--porcelain"], project).stdout.strip() == ""
    assert "Data and pipelines are up to date." in dvc("status", cwd=project).stdout
    assert loss.read_text() != partial
    backup = sorted((project / ".dvc" / "tmp" / "baseline").iterdir())[-1]
    assert (backup / loss.relative_to(project)).read_text() == partial
    assert b"seed: 11" in (backup / "params.yaml").read_bytes()


@pytest.mark.slow
def test_baseline_reruns_the_committed_params_when_the_cache_lacks_their_outputs(
    after_experiment: Path,
) -> None:
    """As on a machine whose platform differs from the one that made the results: the
    committed outputs were never in its cache."""
    project = after_experiment  # `dvc exp run -S lr=0.002` done
    lock = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], project).stdout)
    cache = project / ".dvc" / "cache" / "files" / "md5"
    for out in lock["stages"]["train@lenet-digits"]["outs"]:
        md5 = out["md5"]
        if md5.endswith(".dir"):
            listing = json.loads((cache / md5[:2] / md5[2:]).read_text())
            for item in listing:
                (cache / item["md5"][:2] / item["md5"][2:]).unlink(missing_ok=True)
        (cache / md5[:2] / md5[2:]).unlink(missing_ok=True)
    result = run(["python", "ci/baseline.py"], project, timeout=VERIFY_DEADLINE)
    assert "not in this machine's DVC cache (train@lenet-digits:" in result.stdout, result.stdout
    assert "Data and pipelines are up to date." in dvc("status", cwd=project).stdout
    # the same machine retrained the committed params: the committed bytes again (and the
    # new run's own training times, which are measurements)
    changed = run(["git", "status", "--porcelain"], project).stdout.split("\n")
    assert [line for line in changed if line.strip()] == [" M timings.json"]


def test_a_params_change_committed_without_results_fails_naming_stage_and_key(
    project: Path,
) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["lr"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    training = project / "src" / "cnnlab" / "training.py"
    training.write_text(training.read_text() + "\n# a change\n")
    _commit(project, "stale")
    result = _verify(project)
    assert result.returncode == 1
    failed = _lines(result, "lock")
    assert (
        "FAIL  [lock] train@alexnet-digits: params changed since dvc.lock: lr (modified)" in failed
    )
    assert (
        "FAIL  [lock] train@lenet-digits: src/cnnlab/training.py modified since dvc.lock" in failed
    )
    assert "dvc repro -f" not in result.stdout  # nothing trained
    assert "verify: FAILED" in result.stdout


def test_a_metric_edited_by_hand_fails_naming_the_file(project: Path) -> None:
    path = project / "metrics" / "alexnet-digits.json"
    record = json.loads(path.read_text())
    record["test_acc"] = 0.999
    path.write_text(json.dumps(record, indent=2) + "\n")
    _commit(project, "better")
    result = _verify(project)
    assert result.returncode == 1
    assert (
        "FAIL  [lock] evaluate@alexnet-digits: the committed metrics/alexnet-digits.json is not "
        "what dvc.lock records (modified): edited by hand, or committed without `make lock`"
    ) in _lines(result, "lock")


def test_baseline_refuses_when_code_differs_and_changes_nothing(project: Path) -> None:
    (project / "params.yaml").write_text(
        (project / "params.yaml").read_text().replace("epochs: 1", "epochs: 3")
    )
    training = project / "src" / "cnnlab" / "training.py"
    training.write_text(training.read_text() + "\n# work in progress\n")
    result = run(["python", "ci/baseline.py"], project, check=False)
    assert result.returncode == 1
    assert "these tracked files differ from HEAD: src/cnnlab/training.py." in result.stderr
    assert "Nothing was changed." in result.stderr
    assert "epochs: 3" in (project / "params.yaml").read_text()
    assert not (project / ".dvc" / "tmp" / "baseline").exists()


def test_the_scratch_clone_is_removed_after_a_run(project: Path, tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path / "scratch")}
    (tmp_path / "scratch").mkdir()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["lr"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _commit(project, "stale")
    _verify(project, env)
    assert list((tmp_path / "scratch").iterdir()) == []
    shutil.rmtree(tmp_path / "scratch")
