#!/usr/bin/env bash
# One command on a GPU machine (issue 14): the GPU tests, the NumPy/CuPy parity checks, the CuPy step
# benchmarks on both nets with the truncation solvers, tutorial 07, and a 5-epoch MNIST run of the README's MLP.
# Writes ONE JSON, benchmarks/results/gpu_<device>.json, and prints a one-screen summary.
#
#   benchmarks/gpu_check.sh              # on a machine with CuPy and a GPU (~2-4 min; every stage has a timeout,
#                                        # their sum is 355 s, so a rerun fits in a 15-min device lease)
#   benchmarks/gpu_check.sh --dry-run    # CPU plumbing check: NumPy backend, tiny sizes, JSON in a temporary folder
#
# Without CuPy or a GPU it prints one line saying so and exits 0 without running anything.
# Exit status: 0 when every stage ran and every test passed (the timing targets are reported, not enforced),
# 1 otherwise. Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_OUT (the JSON path).
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
T0=$(date +%s)

if [ "$DRY" = 0 ]; then
  if ! "$PY" -c "from dlrt_ref.backend import get_backend; get_backend('cupy')" >/dev/null 2>&1; then
    echo "gpu_check: no GPU backend on this machine (CuPy is not installed or no GPU is visible); nothing was run"
    exit 0
  fi
  BACKEND=cupy
  DEVICE=$("$PY" -c "
import cupy
n = cupy.cuda.runtime.getDeviceProperties(0)['name']
print(n.decode() if isinstance(n, bytes) else n)")
else
  BACKEND=numpy
  DEVICE="cpu-dry-run"
fi
SLUG=$(echo "$DEVICE" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '_' | sed 's/__*/_/g; s/^_//; s/_$//')
W=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
if [ "$DRY" = 0 ]; then
  OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu_${SLUG}.json}
else
  OUT=${GPU_CHECK_OUT:-$W/gpu_${SLUG}.json}
fi
echo "gpu_check: device '$DEVICE', backend $BACKEND, work folder $W" >&2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1 DLRT_TUTORIAL_OUT=$W/tutorial_out
# this checkout's dlrt_ref first, installed or not (a GPU machine's python3 has NumPy/CuPy but not dlrt_ref)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stage() {  # stage NAME TIMEOUT_S COMMAND...: run, log to $W/NAME.log, record rc and seconds
  # SIGINT first: pytest then still writes its JUnit XML with the tests done so far
  local name=$1 limit=$2; shift 2
  local s=$(date +%s%N)
  timeout --signal=INT --kill-after=10 "$limit" "$@" >"$W/$name.log" 2>&1
  local rc=$?
  local ms=$(( ($(date +%s%N) - s) / 1000000 ))
  echo "$name $rc $((ms / 1000)).$(printf '%03d' $((ms % 1000))) $limit" >>"$W/stages.txt"
  echo "gpu_check: $name rc=$rc ($((ms / 1000)) s of $limit s)" >&2
}

if [ "$DRY" = 0 ]; then
  # 1. parity (tests marked gpu: layers, integrators, DLRT steps, an MNIST epoch); it also compiles CuPy's kernels
  #    (cached in ~/.cupy), which on a fresh machine takes a good part of its time
  stage parity 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu --junitxml="$W/parity.xml"
  # 2. the rest of the suite's CuPy cases (the backend fixture's "cupy" parameter)
  stage gpu_tests 40 "$PY" -m pytest -q -p no:cacheprovider tests --ignore=tests/gpu -k cupy --junitxml="$W/gpu_tests.xml"
  # 3. step time: paper net (784-5120x4-10, batch 500) at rank 80, every method; truncation solvers on 2r cores
  stage bench_paper 60 "$PY" benchmarks/step_time.py --backend cupy --network paper --ranks 80 \
      --methods dense,ra-bug,bug,ksl,parallel,uv --ortho cholqr2 --solver auto --repeats 5 --warmup 2 \
      --trunc-ks 64,160,320,640 --out "$W/bench_paper.json"
  # 4. step time: thesis net (784-500-300-100-10, batch 256) at ranks [152, 93, 37]; Gram vs SVD truncation
  stage bench_thesis 35 "$PY" benchmarks/step_time.py --backend cupy --network thesis --layer-ranks 152,93,37 \
      --methods dense,ra-bug,bug,ksl,parallel,uv --ortho cholqr2 --solver gram,svd --repeats 5 --warmup 2 \
      --trunc-ks "" --out "$W/bench_thesis.json"
  # 5. tutorial 07 (NumPy and CuPy side by side)
  stage tutorial07 35 "$PY" tutorials/07_gpu_backend.py
  # 6. the README's MLP, 5 epochs of MNIST, ra-bug tau = 0.1, end to end (data loading included)
  stage mnist5 65 "$PY" -m dlrt_ref train --backend cupy --model mlp --method ra-bug --tau 0.1 --epochs 5 \
      --log-every 0 --json --out "$W/mnist_run"
else
  stage parity 60 "$PY" -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_parity.py -k "loss_parity and stand" \
      --junitxml="$W/parity.xml"
  stage gpu_tests 60 "$PY" -m pytest -q -p no:cacheprovider tests/gpu/test_fake_cupy.py -k "truncate_reads" \
      --junitxml="$W/gpu_tests.xml"
  stage bench_paper 60 "$PY" benchmarks/step_time.py --quick --network paper --methods dense,ra-bug,bug \
      --ortho cholqr2 --no-micro --trunc-ks 8 --out "$W/bench_paper.json"
  stage bench_thesis 60 "$PY" benchmarks/step_time.py --quick --network thesis --layer-ranks 4,3,2 \
      --methods dense,ra-bug --ortho cholqr2 --solver gram,svd --no-micro --trunc-ks "" --out "$W/bench_thesis.json"
  stage tutorial07 60 env DLRT_BACKEND=numpy DLRT_QUICK=1 "$PY" tutorials/07_gpu_backend.py
  stage mnist5 60 "$PY" -m dlrt_ref train --model mlp --widths 784,32,10 --method ra-bug --tau 0.1 --epochs 1 \
      --subset 256 --test-subset 100 --log-every 0 --json --out "$W/mnist_run"
fi

"$PY" benchmarks/gpu_summary.py --work "$W" --device "$DEVICE" --backend "$BACKEND" --out "$OUT" \
    --total-s $(( $(date +%s) - T0 )) $([ "$DRY" = 1 ] && echo --dry-run)
