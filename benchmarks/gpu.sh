#!/usr/bin/env bash
# Every benchmark on CUDA, in one call (well under 5 minutes on an H100/H200).
#
# The GPU machine has the repository and a CUDA build of torch, and no network. The
# pure-Python runtime dependencies (pydantic, pyyaml, ...) travel as wheels:
#   on this machine:  benchmarks/gpu.sh --prepare      # downloads them into .device_wheels/
#   on the GPU:       benchmarks/gpu.sh                # installs them offline, runs all five
# Results: benchmarks/results/<name>-cuda.json, copied to $OUT when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  py=${DEVICE_PYTHON_VERSION:-3.11}
  python -m pip download --quiet --dest .device_wheels --only-binary=:all: --python-version "$py" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 pydantic pyyaml numpy
  echo "wheels for Python $py in .device_wheels/ (pass it to the run tool's carry)"
  exit 0
fi
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), torch.__version__)"
if ! python -c "import pydantic, yaml" 2>/dev/null; then
  python -m pip install --quiet --no-index --find-links .device_wheels pydantic pyyaml numpy
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for b in deploy train_offline train_online fold fold_error search_throughput; do
  echo "== $b"
  timeout 120 python "benchmarks/$b.py" --device cuda || echo "!! $b failed or timed out"
done
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*-cuda.json "$OUT"/ 2>/dev/null || true; fi
