#!/usr/bin/env bash
# Table 2 at the paper's settings in ONE call of the GPU machine (docs/TRAINING.md, "Table 2 on the GPU machine"):
# the five variants trained side by side with `aps train --preset paper` (50 epochs), each scored on every test
# object, the tables, the learning curves and two networks (bf16) written into $OUT, all within ~7.5 minutes.
#
#   bash scripts/gpu_table2.sh [ARGS]                  on the GPU machine (needs $OUT, .whl/ and the store)
#   bash scripts/gpu_table2.sh --rehearse [DIR] [ARGS]  here, on the CPU: the same steps with the tiny preset,
#                                                       the same files into DIR (default reports/gpu-table2-rehearsal)
# ARGS go to `python -m experiments.gpu_table2 run` (--budget 420, --repeats 8, --variant fpn+binary, ...).
# The store: GPU_TABLE2_DATA, default data/industrial-parts-gpu (manifests/industrial-parts-gpu.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${GPU_TABLE2_DATA:-data/industrial-parts-gpu}
mode=gpu
if [ "${1:-}" = "--rehearse" ]; then
  mode=rehearse; shift
  out=reports/gpu-table2-rehearsal
  if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then out=$1; shift; fi
fi
[ -f "$data/index.json" ] || { echo "gpu_table2: no store at $data (aps preprocess --manifest manifests/industrial-parts-gpu.toml --out $data; carry it)" >&2; exit 2; }
ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_table2: no wheels in .whl/ (run bash scripts/gpu_wheels.sh; carry .whl)" >&2; exit 2; }
install=(-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
export PYTHONUNBUFFERED=1

if [ $mode = gpu ]; then
  : "${OUT:?gpu_table2: OUT is not set: the command of the GPU machine (here: --rehearse)}"
  python=${PYTHON:-python3}
  "$python" "${install[@]}" --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  work=/tmp/gpu_table2
  run=(--out "$OUT")
else
  python=${PYTHON:-.venv/bin/python}
  # the wheels install for the GPU machine's Python 3.12 (into a scratch folder nothing here reads) ...
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  "$python" "${install[@]}" --target "$scratch/site" --python-version 3.12 --implementation cp --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 .whl/*.whl
  # ... what travels fits the 64 MiB of a call (tree, wheels, store) ...
  tree=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  carried=$(du -cb .whl "$data" | tail -1 | cut -f1)
  echo "gpu_table2: would travel $(( (tree + carried) / 1048576 )) MiB (tree $(( tree / 1048576 )), .whl + store $(( carried / 1048576 ))) of 64"
  [ $((tree + carried)) -le $((64 * 1048576)) ] || { echo "gpu_table2: over the 64 MiB a call carries" >&2; exit 2; }
  # ... and nothing on the way imports a package the GPU machine lacks
  "$python" -m experiments.gpu_table2 blocker "$scratch/blocker" >/dev/null
  export PYTHONPATH=$scratch/blocker${PYTHONPATH:+:$PYTHONPATH}
  work=${out%/}-work
  mkdir -p "$out"
  run=(--out "$out" --rehearse)
fi
"$python" -c 'import sys, torch, zarr, trimesh, skimage, scipy
print("gpu_table2: python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      "| zarr", zarr.__version__, "| trimesh", trimesh.__version__)'
"$python" -m experiments.gpu_table2 run --data "$data" --work "$work" "${run[@]}" "$@"

