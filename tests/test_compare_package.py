"""cnnlab-compare is a package of its own: installed commands, and the pipeline's library
never depends on it (a DVC stage must not rerun because a comparison changed)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

#: `pip install -e .` puts pyproject's [project.scripts] beside the venv's Python.
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("command", "flags"),
    [("cnnlab-compare", ["--exp", "--all", "--tune", "--out"]), ("cnnlab-plots", ["--out"])],
)
def test_the_console_scripts_are_installed(command: str, flags: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / command), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert all(flag in result.stdout for flag in flags)


def test_python_m_runs_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab_compare", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and "--tune" in result.stdout


def test_ctrl_c_is_one_line_and_exit_130(capsys: pytest.CaptureFixture[str]) -> None:
    from cnnlab_compare import console

    def main(argv: list[str] | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exited:
        console(main, [])
    assert exited.value.code == 130
    assert capsys.readouterr().err == "interrupted: the earlier pages, if any, are as they were\n"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_pipeline_never_imports_the_comparison_package() -> None:
    files = [*(ROOT / "src" / "cnnlab").rglob("*.py"), *(ROOT / "stages").glob("*.py")]
    offending = [
        str(f.relative_to(ROOT))
        for f in files
        if any(name.split(".")[0] == "cnnlab_compare" for name in _imports(f))
    ]
    assert offending == []


def test_stages_holds_only_dvc_stages() -> None:
    assert sorted(p.stem for p in (ROOT / "stages").glob("*.py")) == [
        "common", "compare", "download", "evaluate", "prepare", "train", "validate",
    ]  # fmt: skip


def test_the_layout_it_reads_is_the_stages_layout() -> None:
    sys.path.insert(0, str(ROOT / "stages"))
    import common

    from cnnlab_compare import layout

    assert (layout.METRICS, layout.TRAIN_LOGS, layout.TIMINGS) == (
        common.METRICS, common.TRAIN_LOGS, common.TIMINGS,
    )  # fmt: skip
    assert layout.run_name("lenet", "mnist") == common.run_name("lenet", "mnist")
