#!/usr/bin/env bash
# `make bench-gpu`: every GPU figure of the project in one budgeted run (tools/bench_gpu.py does it).
#
#   scripts/bench-gpu.sh [--dry-run]
#
# Python: $PY when set, else the first of python3 and .venv/bin/python whose torch sees a CUDA
# device, used as it is (an NGC container's or a cluster image's own torch). Only when neither has
# one (and nvidia-smi is there) is .venv set up the Makefile's way (torch==2.13.0). Then only what is
# missing is installed: the dependencies that do not import (DALI for torch's CUDA major) and the
# project itself (pip install --no-deps -e .), from WHEELS=DIR with `pip install --no-index
# --find-links DIR` (no network) when it is set. FFCV is used when it imports or WHEELS holds it;
# nothing is compiled.
#
# Settings (environment): OUT (default bench-gpu/: bench-gpu.json, bench-gpu.md, bench-gpu.png),
# BENCH_MINUTES (default 8: sizes the data set and the steps; every run has a timeout inside it),
# STAGES (comma-separated: cuda-tests, ceiling, loaders, train, dali-sweep, or single runs such as
# train-dali), LOADERS (default dali,torch and ffcv when it imports), BENCH_DATA (a prepared folder
# instead of the synthetic set), BENCH_FAIL (runs made to fail on purpose, to see the failure path).
# --dry-run (or DEVICE=cpu): every stage on the CPU with tiny sizes; it measures nothing.
set -uo pipefail
# Paths given relative to where the script was started, before it moves to the checkout (PY only
# when it is a path, not a command name such as python3).
for var in OUT BENCH_DATA WHEELS PY; do
  val=${!var:-}
  [ -n "$val" ] && [ "${val#/}" = "$val" ] && { [ "$var" != PY ] || [ "${val#*/}" != "$val" ]; } && export "$var=$PWD/$val"
done
export OUT=${OUT:-$PWD/bench-gpu}
cd "$(dirname "$0")/.." || exit 1

dry=
for arg in "$@"; do
  case $arg in
    --dry-run) dry=1 ;;
    -h | --help) sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "bench-gpu: unknown argument $arg; the only one is --dry-run (the settings are environment variables, see --help)" >&2; exit 2 ;;
  esac
done
[ "${DEVICE:-cuda}" = cpu ] && dry=1

has_torch() { "$1" -c "import sys, torch; sys.exit(0 if ${2:-True} else 1)" >/dev/null 2>&1; }
has_cuda_torch() { has_torch "$1" 'torch.cuda.is_available()'; }

find_python() {  # prints the interpreter to use, or nothing
  local cand
  for cand in python3 .venv/bin/python; do
    command -v "$cand" >/dev/null 2>&1 && has_cuda_torch "$cand" && { echo "$cand"; return; }
  done
  [ -n "$dry" ] || return 0
  for cand in .venv/bin/python python3; do
    command -v "$cand" >/dev/null 2>&1 && has_torch "$cand" && { echo "$cand"; return; }
  done
}

PY=${PY:-$(find_python)}
if [ -z "$PY" ] && [ -z "$dry" ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "bench-gpu: no CUDA torch in python3 or .venv/bin/python and no nvidia-smi; run it on a GPU machine, or with --dry-run to check its plumbing on the CPU" >&2
    exit 1
  fi
  echo "bench-gpu: neither python3 nor .venv/bin/python has a CUDA torch; setting up .venv as the Makefile does (torch==2.13.0)"
  make .venv/.installed || exit 1
  PY=.venv/bin/python
fi
# One look at $PY: "cuda", "cpu" or "none" (its torch), then the project's dependencies that do not
# import, as pip names (DALI built for torch's CUDA major).
probe=$("$PY" - 2>/dev/null <<'EOF'
import importlib.util

def found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing (nvidia for nvidia.dali)
        return False

try:
    import torch
except ImportError:
    print("none")
    raise SystemExit
needs = {"numpy": "numpy", "numba": "numba", "PIL": "pillow", "click": "click", "tqdm": "tqdm",
         "matplotlib": "matplotlib", "scipy": "scipy", "pytest": "pytest",
         "nvidia.dali": f"nvidia-dali-cuda{(torch.version.cuda or '13').split('.')[0]}0"}
print("cuda" if torch.cuda.is_available() else "cpu", *(pkg for module, pkg in needs.items() if not found(module)))
EOF
)
read -r torch_kind missing <<<"${probe:-none}"
if [ "$torch_kind" = none ]; then
  echo "bench-gpu: ${PY:-neither python3 nor .venv/bin/python} does not import torch; install a CUDA torch or set PY=/path/to/python" >&2
  exit 1
fi
if [ -z "$dry" ] && [ "$torch_kind" != cuda ]; then
  echo "bench-gpu: torch in $PY sees no CUDA device; run it on a GPU machine, or with --dry-run to check its plumbing on the CPU" >&2
  exit 1
fi

pip_install() {
  if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" "$@"
  else
    "$PY" -m pip install --quiet "$@"
  fi
}

if [ -n "$missing" ]; then
  echo "bench-gpu: installing what $PY lacks: $missing${WHEELS:+ (from $WHEELS)}"
  # shellcheck disable=SC2086  # one word per package
  pip_install $missing || exit 1
fi
if [ -n "${WHEELS:-}" ] && compgen -G "$WHEELS/ffcv-*" >/dev/null && ! "$PY" -c 'import ffcv' >/dev/null 2>&1; then
  pip_install ffcv opencv-python || echo "bench-gpu: FFCV from $WHEELS did not install; its runs are left out"
fi
# This checkout, importable as alexnet (an installed copy of another checkout would be measured instead).
here=$("$PY" -c 'import alexnet.tools, pathlib; print(pathlib.Path(alexnet.tools.__file__).resolve().parent.parent)' 2>/dev/null)
if [ "$here" != "$(pwd -P)" ]; then
  echo "bench-gpu: installing this checkout into $PY (pip install --no-deps -e .)"
  pip_install --no-deps --no-build-isolation -e . || exit 1
fi

exec "$PY" -m alexnet.tools.bench_gpu ${dry:+--dry-run}
