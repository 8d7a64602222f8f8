#!/usr/bin/env bash
# The whole GPU check in one command, on a bare GPU machine with no network (docs/gpu.md):
#
#   MNIST_MIRROR=/path/holding/mnist benchmarks/gpu_check.sh           # on the GPU machine
#   MNIST_MIRROR=/path/holding/mnist benchmarks/gpu_check.sh --dry-run # CPU rehearsal (or CPU_DRY_RUN=1)
#
# 1. a venv with --system-site-packages (the machine's own torch is used, never reinstalled)
#    gets dvc, dvclive, pydantic, PyYAML from the carried wheels, and this project (--no-deps -e);
# 2. the tests marked `gpu` (tests/test_gpu.py; its CPU tests too);
# 3. the default pipeline (LeNet + AlexNet, datasets=[mnist]) with `dvc repro` on real MNIST
#    (data.mirror: a directory holding mnist/ with the four published .gz files), timed; then
#    `dvc repro -f`, and the two dvc.lock files compared byte for byte (their diff if not);
# 4. the GPU LeNet preset (presets/lenet-mnist-gpu.yaml) through `dvc repro`: test accuracy and
#    training seconds against the target (>= 99.0% in under 1 s of training);
# 5. benchmarks/gpu_speed.py: AlexNet (32x32) images/s in float32, bf16 and fp16 and their share
#    of the dense matmul ceiling measured in the same run.
#
# Environment (all optional but MNIST_MIRROR):
#   MNIST_MIRROR     directory holding mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#                    (default: benchmarks/mirror, git-ignored, so it can travel with the tree)
#   WHEELS           directory of the wheels to install (default: benchmarks/wheels, git-ignored)
#   PYTHON           the interpreter whose torch to use (default: python3)
#   GPU_CHECK_WORK   scratch directory (default: a new one under $TMPDIR)
#   GPU_CHECK_OUT    where the summary, logs and both dvc.lock files go (default: $OUT if set,
#                    else $GPU_CHECK_WORK/results)
#   CPU_DRY_RUN=1    same as --dry-run: device=cpu, 2,000 training images, 1 epoch
#
# The wheels are not in git; fetch them once on a machine with PyPI (Python 3.12, x86-64):
#   pip wheel --no-deps -w benchmarks/wheels antlr4-python3-runtime==4.9.3   # no wheel on PyPI
#   pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
#       --find-links benchmarks/wheels -d benchmarks/wheels \
#       dvc==3.67.1 dvclive==3.49.1 pydantic==2.14.3 PyYAML==6.0.3 tqdm==4.70.1 \
#       ruamel.yaml.clib==0.2.15 setuptools
set -uo pipefail

DRY_RUN=${CPU_DRY_RUN:-0}
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h | --help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-$ROOT/benchmarks/wheels}
MNIST_MIRROR=${MNIST_MIRROR:-$ROOT/benchmarks/mirror}
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/cnnlab-gpu-check.XXXXXX")}
RESULTS=${GPU_CHECK_OUT:-${OUT:-$WORK/results}}
#: The JSON that holds a run's training time and throughput ({run} = <model>-<dataset>). If the
#: timings move to another file (to keep them out of hashed outputs), change this line only.
TIMINGS_JSON='plots/train/{run}/metrics.json'
#: The JSON that holds a run's test accuracy.
METRICS_JSON='metrics/{run}.json'
PRESET=$ROOT/presets/lenet-mnist-gpu.yaml

mkdir -p "$WORK" "$RESULTS"
VENV=$WORK/venv
PROJECT=$WORK/project
FAILED=()
started_all=$(date +%s.%N)

say() { printf '\n== %s\n' "$*"; }
# limit <seconds> <command...>: a deadline for each step, so a hang cannot eat the machine's
# time (GPU times: a normal run takes a third of them; a dry run on a slow CPU gets 4x more).
limit() {
    local seconds=$1
    shift
    [ "$DRY_RUN" = 1 ] && seconds=$((seconds * 4))
    if command -v timeout > /dev/null; then timeout "$seconds" "$@"; else "$@"; fi
}
fail() { FAILED+=("$1"); echo "FAILED: $1" >&2; }
elapsed() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

# ------------------------------------------------------------------ 0. what this machine has
say "machine"
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "error: $PYTHON cannot import torch; set PYTHON to the interpreter that has it" >&2
    exit 2
fi
CUDA=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')
"$PYTHON" -c 'import sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")'
if [ "$CUDA" != 1 ] && [ "$DRY_RUN" != 1 ]; then
    echo "error: no CUDA device here; --dry-run (or CPU_DRY_RUN=1) rehearses the check on the CPU" >&2
    exit 2
fi
if [ "$DRY_RUN" = 1 ]; then
    echo "dry run: device=cpu, 2,000 training images, 1 epoch; GPU tests skip"
    DEVICE=cpu
else
    DEVICE=cuda
fi
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "error: no wheels in $WHEELS; see the top of $0 for how to fetch them" >&2
    exit 2
fi
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ ! -f "$MNIST_MIRROR/mnist/$name.gz" ]; then
        echo "error: $MNIST_MIRROR/mnist/$name.gz is missing; set MNIST_MIRROR to a directory holding mnist/" >&2
        exit 2
    fi
done
MNIST_MIRROR=$(cd "$MNIST_MIRROR" && pwd)
echo "wheels: $WHEELS ($(du -sh "$WHEELS" | cut -f1)); mirror: $MNIST_MIRROR; work: $WORK"

# ------------------------------------------------------------------ 1. the environment
say "1. venv with the machine's torch, the carried wheels, this project"
t0=$(date +%s.%N)
# Without python3-venv's ensurepip, the machine's own pip (seen through the system site) serves.
"$PYTHON" -m venv --system-site-packages "$VENV" 2>/dev/null \
    || "$PYTHON" -m venv --clear --without-pip --system-site-packages "$VENV" \
    || { echo "error: cannot make a venv with $PYTHON" >&2; exit 2; }
# A PYTHON that is itself a venv (the dry run's) shares its packages the same way.
parent_site=$("$PYTHON" -c 'import sys, sysconfig
print(sysconfig.get_paths()["purelib"] if sys.prefix != sys.base_prefix else "")')
if [ -n "$parent_site" ]; then
    venv_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$parent_site" > "$venv_site/parent-site.pth"
fi
PY=$VENV/bin/python
PIP=("$PY" -m pip --disable-pip-version-check --no-input)
"${PIP[@]}" install --quiet --no-index --find-links "$WHEELS" \
    dvc==3.67.1 dvclive==3.49.1 pydantic==2.14.3 PyYAML tqdm > "$RESULTS/pip.log" 2>&1 \
    || { tail -20 "$RESULTS/pip.log"; echo "error: installing the wheels failed" >&2; exit 2; }
"${PIP[@]}" install --quiet --no-index --find-links "$WHEELS" --no-deps -e "$ROOT" \
    >> "$RESULTS/pip.log" 2>&1 \
    || { tail -20 "$RESULTS/pip.log"; echo "error: installing the project failed" >&2; exit 2; }
"$PY" -c '
import subprocess, sys, torch, dvc, pydantic, cnnlab
theirs = subprocess.run([sys.argv[1], "-c", "import torch; print(torch.__file__)"],
                        capture_output=True, text=True).stdout.strip()
print(f"torch {torch.__version__} from {torch.__file__}")
print(f"dvc {dvc.__version__}, pydantic {pydantic.VERSION}, cnnlab from {cnnlab.__file__}")
sys.exit(0 if theirs == torch.__file__ else 1)' "$PYTHON" || fail "the venv's torch is not the machine's"
export PATH="$VENV/bin:$PATH"  # the stages' `python` and `dvc` are the venv's
TOOLS=("$PY" "$ROOT/benchmarks/gpu_check_tools.py")
echo "set up in $(elapsed "$t0") s"

# ------------------------------------------------------------------ 2. the tests
say "2. tests/test_gpu.py (the gpu-marked tests skip without CUDA)"
t0=$(date +%s.%N)
(cd "$ROOT" && limit 240 "$PY" -m pytest tests/test_gpu.py -q -rs -p no:cacheprovider \
    -p no:benchmark) > "$RESULTS/pytest.log" 2>&1
tests_rc=$?
tail -15 "$RESULTS/pytest.log"
[ $tests_rc = 0 ] || fail "tests/test_gpu.py (exit $tests_rc; $RESULTS/pytest.log)"
TESTS_LINE=$(tail -1 "$RESULTS/pytest.log")
echo "tests took $(elapsed "$t0") s"

# ------------------------------------------------------------------ 3. the default pipeline, twice
say "3. default pipeline on MNIST: dvc repro, then dvc repro -f"
mkdir -p "$PROJECT"
(cd "$ROOT" && tar --exclude=__pycache__ --exclude='*.egg-info' -cf - \
    dvc.yaml params.yaml .dvcignore stages src datasets) | (cd "$PROJECT" && tar -xf -) \
    || { echo "error: copying the project to $PROJECT failed" >&2; exit 2; }
(cd "$PROJECT" && dvc init --no-scm -q && dvc config core.analytics false) \
    || { echo "error: dvc init failed" >&2; exit 2; }
DEFAULTS=("datasets=[mnist]" "models=[lenet, alexnet]" "data.mirror=$MNIST_MIRROR" "device=$DEVICE")
if [ "$DRY_RUN" = 1 ]; then
    DEFAULTS+=("data.max_train=2000" "data.max_test=500" "epochs=1")
fi
"${TOOLS[@]}" set-params "$PROJECT/params.yaml" "${DEFAULTS[@]}" || exit 2

repro() {  # repro <log name> [dvc repro args]: runs and times `dvc repro`, keeps its log
    local log=$RESULTS/$1.log t rc
    shift
    t=$(date +%s.%N)
    (cd "$PROJECT" && CI=true limit 180 dvc repro "$@") > "$log" 2>&1
    rc=$?
    REPRO_SECONDS=$(elapsed "$t")
    grep -E "^(lenet|alexnet)-mnist|diverged|^error" "$log"
    [ $rc = 0 ] || { tail -30 "$log"; return 1; }
}
read_run() { "${TOOLS[@]}" read-run "$PROJECT" "$1" "$TIMINGS_JSON" "$METRICS_JSON"; }

REPRO1=""; REPRO2=""; LOCK_SAME="not compared"; LOCK_CHANGED=""; MODELS_SAME="not compared"
if repro repro-1; then
    REPRO1=$REPRO_SECONDS
    echo "dvc repro: $REPRO1 s"
    cp "$PROJECT/dvc.lock" "$RESULTS/dvc.lock.1"
    "${TOOLS[@]}" checksums "$PROJECT" "$RESULTS/models.md5.1"
    read -r LENET_ACC LENET_S LENET_IPS <<< "$(read_run lenet-mnist)"
    read -r ALEX_ACC ALEX_S ALEX_IPS <<< "$(read_run alexnet-mnist)"
    if repro repro-2 -f; then
        REPRO2=$REPRO_SECONDS
        echo "dvc repro -f: $REPRO2 s"
        cp "$PROJECT/dvc.lock" "$RESULTS/dvc.lock.2"
        "${TOOLS[@]}" checksums "$PROJECT" "$RESULTS/models.md5.2"
        # cmp where the machine has it; the tool compares the same bytes and explains a change
        if command -v cmp > /dev/null && cmp -s "$RESULTS/dvc.lock.1" "$RESULTS/dvc.lock.2"; then
            LOCK_SAME=yes
        elif "${TOOLS[@]}" compare-locks "$RESULTS/dvc.lock.1" "$RESULTS/dvc.lock.2" \
                > "$RESULTS/dvc.lock.diff"; then
            LOCK_SAME=yes
        else
            LOCK_SAME=no
            LOCK_CHANGED=$(head -1 "$RESULTS/dvc.lock.diff")
            echo "dvc.lock differs between the two runs; $LOCK_CHANGED"
            tail -n +2 "$RESULTS/dvc.lock.diff"
        fi
        if "${TOOLS[@]}" same-bytes "$RESULTS/models.md5.1" "$RESULTS/models.md5.2"; then
            MODELS_SAME=yes
        else
            MODELS_SAME=no
            cat "$RESULTS/models.md5.1" "$RESULTS/models.md5.2"
        fi
    else
        fail "dvc repro -f ($RESULTS/repro-2.log)"
    fi
else
    fail "dvc repro ($RESULTS/repro-1.log)"
fi

# ------------------------------------------------------------------ 4. the GPU LeNet preset
say "4. LeNet preset (presets/lenet-mnist-gpu.yaml) through dvc repro"
PRESET_PAIRS=()
while IFS= read -r pair; do PRESET_PAIRS+=("$pair"); done < <("${TOOLS[@]}" preset-pairs "$PRESET")
"${TOOLS[@]}" set-params "$PROJECT/params.yaml" "${PRESET_PAIRS[@]}" \
    "data.mirror=$MNIST_MIRROR" "device=$DEVICE" || exit 2
FAST_ACC=""; FAST_S=""; FAST_IPS=""
if repro repro-preset; then
    read -r FAST_ACC FAST_S FAST_IPS <<< "$(read_run lenet-mnist)"
else
    fail "dvc repro of the preset ($RESULTS/repro-preset.log)"
fi

# ------------------------------------------------------------------ 5. AlexNet against the ceiling
say "5. benchmarks/gpu_speed.py"
SPEED_ARGS=(--lenet --json "$RESULTS/gpu_speed.json")
[ "$DRY_RUN" = 1 ] && SPEED_ARGS+=(--quick)
(cd "$ROOT" && limit 180 "$PY" benchmarks/gpu_speed.py "${SPEED_ARGS[@]}") \
    > "$RESULTS/gpu_speed.log" 2>&1
speed_rc=$?
grep -v "^ epoch\|amp: .* runs on CUDA only" "$RESULTS/gpu_speed.log"
[ $speed_rc = 0 ] || fail "gpu_speed.py ($RESULTS/gpu_speed.log)"

# ------------------------------------------------------------------ summary
say "summary"
DRY_RUN=$DRY_RUN DEVICE=$DEVICE TESTS_LINE=$TESTS_LINE REPRO1=$REPRO1 REPRO2=$REPRO2 \
LOCK_SAME=$LOCK_SAME LOCK_CHANGED=$LOCK_CHANGED MODELS_SAME=$MODELS_SAME \
LENET_ACC=${LENET_ACC:-} LENET_S=${LENET_S:-} LENET_IPS=${LENET_IPS:-} \
ALEX_ACC=${ALEX_ACC:-} ALEX_S=${ALEX_S:-} ALEX_IPS=${ALEX_IPS:-} \
FAST_ACC=$FAST_ACC FAST_S=$FAST_S FAST_IPS=$FAST_IPS SPEED_JSON=$RESULTS/gpu_speed.json \
    "${TOOLS[@]}" summary "$RESULTS/summary.json"
echo "results in $RESULTS; the whole check took $(elapsed "$started_all") s"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}" >&2
    exit 1
fi
