"""What a user sees when a stage fails for a reason that is theirs to fix: one line, no trace."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "stages"))
from common import run_stage

from cnnlab.params import ParamsError


def _run(monkeypatch, error: BaseException, capsys) -> tuple[int, str]:
    def main() -> None:
        raise error

    monkeypatch.setattr(sys, "argv", ["stage.py"])
    with pytest.raises(SystemExit) as info:
        run_stage(main, 0, "python stages/stage.py")
    return info.value.code, capsys.readouterr().err


def test_bad_params_give_the_message_and_exit_2(monkeypatch, capsys) -> None:
    code, err = _run(monkeypatch, ParamsError("params.yaml: lr: got -1"), capsys)
    assert code == 2 and err == "error: params.yaml: lr: got -1\n"


def test_a_full_disk_is_named(monkeypatch, capsys) -> None:
    error = OSError(28, "No space left on device", "models/x/best.pt")
    code, err = _run(monkeypatch, error, capsys)
    assert code == 2
    assert "no space left on the device while writing models/x/best.pt" in err


def test_interrupt_says_how_to_continue(monkeypatch, capsys) -> None:
    code, err = _run(monkeypatch, KeyboardInterrupt(), capsys)
    assert code == 130 and "resumes from its last completed epoch" in err


def test_other_errors_keep_their_traceback(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["stage.py"])
    with pytest.raises(OSError, match="Input/output error"):
        run_stage(lambda: (_ for _ in ()).throw(OSError(5, "Input/output error")), 0, "x")
    with pytest.raises(ValueError, match="a bug"):
        run_stage(lambda: (_ for _ in ()).throw(ValueError("a bug")), 0, "x")


def test_an_unwritable_output_is_named(monkeypatch, capsys) -> None:
    error = PermissionError(13, "Permission denied", "checkpoints/lenet-digits.pt")
    code, err = _run(monkeypatch, error, capsys)
    assert code == 2 and "Traceback" not in err
    assert "permission denied on checkpoints/lenet-digits.pt: make it" in err


@pytest.mark.parametrize("command", ["cnnlab-plots", "cnnlab-compare"])
def test_out_refuses_a_folder_it_did_not_write(tmp_path: Path, command: str) -> None:
    """`--out` replaces its folder as a whole: pointed at a folder of notes, it says so and
    leaves the notes as they were."""
    import subprocess

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ideas.md").write_text("keep me\n")
    result = subprocess.run(
        [str(Path(sys.executable).parent / command), "--out", "notes"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--out notes: holds files this command did not write" in result.stderr
    assert "Traceback" not in result.stderr
    assert (notes / "ideas.md").read_text() == "keep me\n"
    assert sorted(p.name for p in notes.iterdir()) == ["ideas.md"]


def test_out_replaces_a_folder_it_wrote(tmp_path: Path) -> None:
    from cnnlab.files import check_output_folder, mark_output_folder

    out = tmp_path / "plots"
    out.mkdir()
    (out / "old.svg").write_text("<svg/>")
    mark_output_folder(out)
    check_output_folder(out)  # its own: no complaint
    check_output_folder(tmp_path / "new")  # not there yet: fine
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty")
