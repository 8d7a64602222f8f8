"""The Python half of benchmarks/gpu_check.sh: params edits, figures, comparisons, summary.

Standard library and PyYAML only, so it runs in the check's fresh venv before anything else
works. Subcommands:

    set-params PARAMS KEY=VALUE...       dotted keys of params.yaml; values are YAML
    preset-pairs PRESET                  a preset file as KEY=VALUE lines for set-params
    read-run PROJECT RUN TIMINGS METRICS test acc, training seconds, images/s of one run
    checksums PROJECT OUT                md5 of every checkpoint under PROJECT/models
    compare-locks A B                    exit 0 if byte-identical; else the differing outputs
    same-bytes A B                       exit 0 if the two files hold the same bytes
    summary OUT                          the summary (from environment variables), as JSON too
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml


def set_params(path: str, *pairs: str) -> None:
    params = yaml.safe_load(Path(path).read_text())
    for pair in pairs:
        key, value = pair.split("=", 1)
        *parents, leaf = key.split(".")
        section = params
        for parent in parents:
            section = section[parent]
        if leaf not in section:
            sys.exit(f"{key}: not a key of params.yaml")
        section[leaf] = yaml.safe_load(value)
    Path(path).write_text(yaml.safe_dump(params, sort_keys=False))


def preset_pairs(path: str) -> None:
    for key, value in yaml.safe_load(Path(path).read_text()).items():
        print(f"{key}={json.dumps(value)}")


def read_run(project: str, run: str, timings: str, metrics: str) -> None:
    """``timings``/``metrics``: paths with ``{run}``, the JSON files that hold the figures."""
    root = Path(project)
    t = json.loads((root / timings.format(run=run)).read_text())
    m = json.loads((root / metrics.format(run=run)).read_text())
    print(m.get("test_acc"), t.get("train_seconds"), t.get("train_images_per_second"))


def checksums(project: str, out: str) -> None:
    lines = []
    for path in sorted(Path(project, "models").rglob("*.pt")):
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(project)}\n")
    Path(out).write_text("".join(lines))


def _outputs(lock: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(stage, output path) -> md5, from a dvc.lock."""
    found = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs", []):
            found[(stage, out["path"])] = out.get("md5", "")
    return found


def compare_locks(a: str, b: str) -> int:
    first, second = Path(a).read_bytes(), Path(b).read_bytes()
    if first == second:
        return 0
    outs_a = _outputs(yaml.safe_load(first))
    outs_b = _outputs(yaml.safe_load(second))
    keys = outs_a.keys() | outs_b.keys()
    changed = sorted(
        {path for stage, path in keys if outs_a.get((stage, path)) != outs_b.get((stage, path))}
    )
    print("outputs whose md5 differs: " + (", ".join(changed) or "none (other lines differ)"))
    sys.stdout.writelines(
        difflib.unified_diff(
            first.decode().splitlines(True), second.decode().splitlines(True), a, b
        )
    )
    return 1


def _number(name: str) -> float | None:
    try:
        return float(os.environ.get(name, ""))
    except ValueError:
        return None


def _run(prefix: str) -> dict[str, float | None]:
    return {
        "test_acc": _number(f"{prefix}_ACC"),
        "train_seconds": _number(f"{prefix}_S"),
        "images_per_second": _number(f"{prefix}_IPS"),
    }


def summary(out: str) -> None:
    env = os.environ.get
    speed_file = Path(env("SPEED_JSON", ""))
    speed = json.loads(speed_file.read_text()) if speed_file.is_file() else {}
    preset = _run("FAST")
    acc, seconds = preset["test_acc"], preset["train_seconds"]
    preset["target_met"] = acc is not None and seconds is not None and acc >= 0.99 and seconds < 1
    s = {
        "dry_run": env("DRY_RUN") == "1",
        "device": env("DEVICE"),
        "tests": env("TESTS_LINE"),
        "default_pipeline_repro_seconds": _number("REPRO1"),
        "default_pipeline_repro_f_seconds": _number("REPRO2"),
        "dvc_lock_identical": env("LOCK_SAME"),
        "dvc_lock_differing_outputs": env("LOCK_CHANGED", ""),
        "checkpoints_identical": env("MODELS_SAME"),
        "lenet_default": _run("LENET"),
        "alexnet_default": _run("ALEX"),
        "lenet_preset": preset,
        "speed": speed,
    }
    Path(out).write_text(json.dumps(s, indent=1))
    print(f"tests:                         {s['tests']}")
    print(
        f"default pipeline, dvc repro:   {s['default_pipeline_repro_seconds']} s wall "
        f"(dvc repro -f: {s['default_pipeline_repro_f_seconds']} s)"
    )
    print(
        f"dvc.lock identical after -f:   {s['dvc_lock_identical']}"
        + (f" ({s['dvc_lock_differing_outputs']})" if s["dvc_lock_differing_outputs"] else "")
    )
    print(f"checkpoints identical:         {s['checkpoints_identical']}")
    for key, label in (("lenet_default", "LeNet"), ("alexnet_default", "AlexNet")):
        r = s[key]
        print(
            f"{label + ', default params:':31s}test acc {r['test_acc']}, "
            f"{r['train_seconds']} s of training, {r['images_per_second']} img/s"
        )
    verdict = "met" if preset["target_met"] else "NOT met"
    print(
        f"LeNet, GPU preset:             test acc {acc}, {seconds} s of training "
        f"(target >= 0.99 in < 1 s: {verdict})"
    )
    for amp, a in speed.get("alexnet", {}).items():
        shares = ", ".join(
            f"{100 * v:.1f}% of the {k} matmul ceiling ({speed['ceiling'][k]:.3g} TFLOP/s)"
            for k, v in a["share"].items()
        )
        print(
            f"{'AlexNet 32x32, amp ' + amp + ':':31s}{a['images_per_second']:,.0f} img/s, "
            f"{a['tflops']:.3g} TFLOP/s = {shares}"
        )


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "compare-locks":
        sys.exit(compare_locks(*args))
    if command == "same-bytes":
        a, b = args
        sys.exit(0 if Path(a).read_bytes() == Path(b).read_bytes() else 1)
    {
        "set-params": set_params,
        "preset-pairs": preset_pairs,
        "read-run": read_run,
        "checksums": checksums,
        "summary": summary,
    }[command](*args)


if __name__ == "__main__":
    main()
