"""What `make verify`, `make tolerance`, `make lock` and `make baseline` share: a scratch clone
of the committed tree, `dvc` run in it, dvc.lock read per stage, and the numeric platform.

The numeric platform is what decides the last bits of training: the torch build, the device,
the CPU model and caches (MKL and oneDNN choose kernels and blocking by them), the instruction
sets ATen and oneDNN dispatch to (ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA change them), and
on a GPU its model and the CUDA and cuDNN versions. Threads, processes and every other setting
that changes the order of float sums are params, so dvc.lock records them already.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
#: Where the committed results were made: written by `make lock`, read by `make verify`.
PLATFORM_FILE = Path("ci/platform.json")
#: How far apart runs of the committed params land with other seeds: `make tolerance`.
TOLERANCE_FILE = Path("ci/tolerance.json")
#: Stages whose outputs are the same bytes on every machine (no float arithmetic that
#: depends on the CPU): checked exactly everywhere.
DATA_STAGES = ("validate", "download", "prepare")


class VerifyError(Exception):
    """A problem the user can fix, said in one line (no traceback)."""


def is_data_stage(stage: str) -> bool:
    return stage.split("@")[0] in DATA_STAGES


def git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise VerifyError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def dvc_env(repo: Path) -> dict[str, str]:
    """DVC runs each stage's `python ...` from PATH: this venv's, importing the repo's own src
    (a path on PYTHONPATH comes before the editable install's)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")
    return env


def dvc(repo: Path, *args: str, quiet: bool = False) -> str:
    """Run `dvc` in ``repo``; its output streams through unless ``quiet``."""
    command = [str(Path(sys.executable).parent / "dvc"), *args]
    if quiet:
        done = subprocess.run(
            command, cwd=repo, env=dvc_env(repo), capture_output=True, text=True, check=False
        )
    else:
        done = subprocess.run(command, cwd=repo, env=dvc_env(repo), text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip().splitlines()[-3:] if quiet else []
        raise VerifyError(
            f"`dvc {' '.join(args)}` failed in {repo}" + "".join(f"\n  {line}" for line in detail)
        )
    return done.stdout or ""


@contextmanager
def scratch_clone(rev: str = "HEAD", keep_on_error: bool = True) -> Iterator[Path]:
    """A clone of ``rev`` in a temporary folder that shares this workspace's DVC cache (what it
    builds is kept, and nothing in the workspace changes). Removed afterwards, or kept for
    inspection when something failed."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-verify-"))
    ok = False
    try:
        git("clone", "--quiet", "--no-checkout", str(ROOT), str(folder))
        git("checkout", "--quiet", "--detach", sha, cwd=folder)
        cache = ROOT / ".dvc" / "cache"
        dvc(folder, "config", "--local", "cache.dir", str(cache), quiet=True)
        yield folder
        ok = True
    finally:
        if ok or not keep_on_error:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"(the scratch clone is kept for inspection: {folder})", file=sys.stderr)


def read_lock(text: str) -> dict[str, dict[str, Any]]:
    """stage -> {"outs": {path: md5}, "deps": {path: md5}, "params": {...}} of a dvc.lock."""
    stages = (yaml.safe_load(text) or {}).get("stages") or {}
    return {
        name: {
            "outs": {o["path"]: o.get("md5") for o in stage.get("outs") or []},
            "deps": {d["path"]: d.get("md5") for d in stage.get("deps") or []},
            "params": stage.get("params") or {},
        }
        for name, stage in stages.items()
    }


def train_runs(lock: dict[str, dict[str, Any]]) -> list[str]:
    """The runs (``lenet-digits``) a lock has trained, in its order."""
    return [name.split("@", 1)[1] for name in lock if name.startswith("train@")]


def cpu_caches() -> str:
    """Each cache level's size, as Linux reports them (empty where it does not)."""
    sizes = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        sizes.append(
            f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''} {size}"
        )
    return ", ".join(sizes)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_ISA_PROBE = """
import torch
with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
    torch.nn.functional.conv2d(torch.ones(2, 3, 32, 32), torch.ones(64, 3, 5, 5))
"""


def onednn_isa() -> str:
    """The instruction set oneDNN dispatches to, as its verbose mode names it (a subprocess,
    since the verbose lines go to the C library's stdout)."""
    done = subprocess.run(
        [sys.executable, "-c", _ISA_PROBE], capture_output=True, text=True, check=False
    )
    found = re.search(r"info,cpu,isa:(.*)", done.stdout)
    return found.group(1).strip() if found else "unknown"


def numeric_platform(device: str = "cpu") -> dict[str, str]:
    """What decides the bits of a training run on this machine (see the module's docstring)."""
    import torch

    found = {"torch": torch.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name()
        found["cuda"] = str(torch.version.cuda)
        found["cudnn"] = str(torch.backends.cudnn.version())
    else:
        found["cpu"] = cpu_model()
        found["cpu_caches"] = cpu_caches()
        found["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        found["onednn_isa"] = onednn_isa()
    return found


def describe(found: dict[str, str]) -> str:
    keys = ("torch", "gpu", "cuda", "cudnn", "cpu", "aten_cpu_capability", "onednn_isa")
    return ", ".join(f"{k} {found[k]}" for k in keys if k in found)


def params_device(repo: Path) -> str:
    """The device the committed params train on ("auto": CUDA where there is one)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    device = str(params.get("device", "cpu"))
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    return device


def write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def run_record(repo: Path, run: str) -> dict[str, Any]:
    return json.loads((repo / "metrics" / f"{run}.json").read_text())


def recipe_key(lock: dict[str, dict[str, Any]], run: str) -> str:
    """The params of train@<run> but the seed and thread count: what a seed-to-seed spread
    measured for this run holds for (a short hash, so that a changed recipe is noticed)."""
    params = dict(lock[f"train@{run}"]["params"].get("params.yaml") or {})
    params.pop("seed", None)
    params.pop("threads", None)
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def agreement(a: list[int] | None, b: list[int] | None) -> float | None:
    """Share of test images on which two runs predict the same class (None: not comparable)."""
    if not a or not b or len(a) != len(b):
        return None
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
