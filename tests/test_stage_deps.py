"""dvc.yaml's deps are the truth about what each stage runs, and it cannot drift.

Every stage of a tiny project (digits and a folder of images, so both kinds of dataset code
run) is run by the real `dvc repro` with tests/tracer/ on PYTHONPATH: each stage process
records the files of every module it loaded. A loaded project file (a stage script, a
`cnnlab` module) that no dep of its stage covers is a gap (`dvc status` would call stale
outputs up to date); a code dep that no item of the stage loads is an extra (edits to it
rerun the stage for nothing). Then touching each module makes `dvc status` list exactly the
stages that load it.

`foreach`/`matrix` items share one deps list, so a stage template is checked against the
union of what its items load (download@<folder> reads folders.py, download@digits does not).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_clean_checkout
from fake_datasets import write_image_folder
from test_pipeline_e2e import COMMIT, dvc, run

#: Where the project's own code lives; any other loaded file (torch, dvc, ...) is a library's.
CODE_DIRS = ("src/", "stages/")


def template(stage: str) -> str:
    """``train@lenet-digits`` -> ``train``: the dvc.yaml entry whose deps list it shares."""
    return stage.split("@", 1)[0]


def code_files(root: Path, dep: str) -> set[str]:
    """The project code under a dep: the file itself, or every .py below a folder."""
    path = root / dep
    if path.is_dir():
        return {p.relative_to(root).as_posix() for p in path.rglob("*.py")}
    return {dep} if dep.endswith(".py") else set()


def coverage_problems(
    deps: dict[str, list[str]], loaded: dict[str, set[str]], root: Path
) -> list[str]:
    """Gaps and extras, per stage template; ``deps`` and ``loaded`` are keyed by stage name."""
    problems = []
    for name in sorted({template(s) for s in deps}):
        items = [s for s in deps if template(s) == name]
        declared = set().union(*(set(deps[s]) for s in items))
        used = set().union(*(loaded.get(s, set()) for s in items))
        covered = set().union(*(code_files(root, d) for d in declared))
        for path in sorted(used - covered):
            problems.append(f"{name}: loads {path}, which is not among its deps in dvc.yaml")
        for dep in sorted(d for d in declared if d.startswith(CODE_DIRS)):
            unused = sorted(code_files(root, dep) - used)
            if unused:
                problems.append(
                    f"{name}: declares {dep} but never loads {', '.join(unused)}: edits to it "
                    "would rerun the stage for nothing"
                )
    return problems


def stage_deps(root: Path) -> dict[str, tuple[list[str], list[str]]]:
    """stage name -> (its command's argv after ``python``, its path deps), as DVC sees them."""
    script = (
        "import json, shlex\n"
        "from dvc.repo import Repo\n"
        "from dvc.dependency.param import ParamsDependency\n"
        "with Repo('.') as repo:\n"
        "    print(json.dumps({s.addressing: [s.cmd, [d.def_path for d in s.deps\n"
        "        if not isinstance(d, ParamsDependency)]] for s in repo.index.stages}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return {name: (shlex.split(cmd)[1:], deps) for name, (cmd, deps) in json.loads(out).items()}


def project_file(path: str, roots: Iterable[Path]) -> str | None:
    """A loaded file as a path inside the project (the copy, or the checkout whose src/ the
    editable install points at), or None for a library's file."""
    for root in roots:
        try:
            relative = Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
        if relative.startswith(CODE_DIRS):
            return relative
    return None


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]], dict]:
    """The traced first `dvc repro` of a tiny project: its path, what each stage loaded, and
    the stages' deps."""
    path = copy_clean_checkout(tmp_path_factory.mktemp("deps") / "repo")
    write_image_folder(path / "datasets" / "pics", per_class=4)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params.update(datasets=["digits", "pics"], models=["lenet"], epochs=1, threads=1)
    params["data"].update(max_train=200, max_test=100)
    params["dataset"]["pics"] = {"size": 32}
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], path)
    run(["git", "add", "-A"], path)
    run([*COMMIT, "traced"], path)
    traces = tmp_path_factory.mktemp("traces")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "tests" / "tracer"),
        "CNNLAB_TRACE_DIR": str(traces),
        "CI": "true",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "repro"],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run(["git", "add", "-A"], path)
    run([*COMMIT, "reproduced"], path)
    stages = stage_deps(path)
    by_argv = {tuple(argv): name for name, (argv, _) in stages.items()}
    loaded: dict[str, set[str]] = {}
    for trace in traces.glob("*.json"):
        record = json.loads(trace.read_text())
        name = by_argv.get(tuple(record["argv"]))
        if name is None:
            continue  # dvc itself, or a helper process
        files = {project_file(f, (path, ROOT)) for f in record["files"]}
        loaded[name] = {f for f in files if f} | {record["argv"][0]}
    assert set(loaded) == set(stages), f"stages without a trace: {set(stages) - set(loaded)}"
    return path, loaded, {name: deps for name, (_, deps) in stages.items()}


@pytest.mark.e2e
def test_every_stage_declares_exactly_the_code_it_runs(traced) -> None:
    path, loaded, deps = traced
    problems = coverage_problems(deps, loaded, path)
    assert not problems, "dvc.yaml's deps do not match the code the stages ran:\n  " + (
        "\n  ".join(problems)
    )


@pytest.mark.e2e
def test_a_planted_gap_is_named_with_its_stage_and_path(traced) -> None:
    path, loaded, deps = traced
    planted = {name: [d for d in ds if d != "src/cnnlab/runtime.py"] for name, ds in deps.items()}
    problems = coverage_problems(planted, loaded, path)
    assert problems == [
        "evaluate: loads src/cnnlab/runtime.py, which is not among its deps in dvc.yaml",
        "train: loads src/cnnlab/runtime.py, which is not among its deps in dvc.yaml",
    ]
    extra = {
        name: [*ds, "src/cnnlab/dvcplots.py"] for name, ds in deps.items() if name == "compare"
    }
    assert coverage_problems({**deps, **extra}, loaded, path) == [
        "compare: declares src/cnnlab/dvcplots.py but never loads src/cnnlab/dvcplots.py: "
        "edits to it would rerun the stage for nothing"
    ]


@pytest.mark.e2e
def test_touching_a_module_reruns_exactly_the_stages_that_load_it(traced) -> None:
    path, loaded, deps = traced
    modules = sorted(
        p.relative_to(path).as_posix()
        for d in CODE_DIRS
        for p in (path / d).rglob("*.py")
        if "__pycache__" not in p.parts
    )
    wrong = []
    for module in modules:
        target = path / module
        original = target.read_bytes()
        try:
            target.write_bytes(original + b"\n# touched\n")
            status = json.loads(dvc("status", "--json", cwd=path).stdout or "{}")
        finally:
            target.write_bytes(original)
        changed = {s for s in status if s in deps}
        users = {t for s, files in loaded.items() if module in files for t in [template(s)]}
        expected = {s for s in deps if template(s) in users}
        if changed != expected:
            wrong.append(f"{module}: reruns {sorted(changed)}, loaded by {sorted(expected)}")
    assert not wrong, "\n".join(wrong)
    assert json.loads(dvc("status", "--json", cwd=path).stdout or "{}") == {}


def _declared_params(stage: dict) -> set[str]:
    """A stage's ``params:`` keys as dvc.yaml spells them, ``${item...}`` as ``{}``."""
    keys = set()
    for entry in stage.get("params", []):
        for key in entry if isinstance(entry, dict) else [entry]:
            keys.add(re.sub(r"\$\{[^}]*\}", "{}", str(key)))
    return keys


def _slice_keys(script: Path) -> set[str]:
    """The keys a stage script passes to cnnlab.slices.load_slice, f-string fields as ``{}``."""
    keys = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_slice":
            for arg in node.args:
                if isinstance(arg, ast.Constant):
                    keys.add(arg.value)
                elif isinstance(arg, ast.JoinedStr):
                    parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in arg.values]
                    keys.add("".join(parts))
    return keys


@pytest.mark.parametrize("stage", ["download", "prepare", "evaluate", "compare"])
def test_a_stage_reads_exactly_the_params_it_declares(stage: str) -> None:
    """download, prepare, evaluate and compare read their slice of params.yaml, not the whole
    schema: what they read is what dvc.yaml declares, so no other key reruns them."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    spec = spec.get("do", spec)
    assert _slice_keys(ROOT / "stages" / f"{stage}.py") == _declared_params(spec)


@pytest.mark.parametrize(
    ("stage", "allowed"),
    [
        ("download", ("src/cnnlab/data", "src/cnnlab/__init__.py", "src/cnnlab/errors.py",
                      "src/cnnlab/files.py", "src/cnnlab/slices.py")),
        ("prepare", ("src/cnnlab/data", "src/cnnlab/__init__.py", "src/cnnlab/errors.py",
                     "src/cnnlab/files.py", "src/cnnlab/slices.py")),
    ],
)  # fmt: skip
def test_download_and_prepare_depend_on_data_code_only(stage: str, allowed: tuple) -> None:
    """A new optimizer or model option must not rerun a 170 MB download or any prepare."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["do"]
    code = [d for d in spec["deps"] if d.startswith("src/")]
    assert code and all(d.startswith(allowed) for d in code), code


def test_evaluate_does_not_depend_on_the_training_code() -> None:
    """Editing a schedule or the loop does not re-evaluate every run."""
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]["deps"]
    for module in ("training.py", "schedulers.py", "optimizers.py", "distributed.py", "params.py"):
        assert f"src/cnnlab/{module}" not in deps
