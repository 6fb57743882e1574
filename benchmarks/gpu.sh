#!/usr/bin/env bash
# The GPU checks and benchmarks in one call (the device tests stop at 120 s and each of 5 benchmarks at 70 s, so at
# most 7 min 50 s; expected well under 5 min on an H100/H200): deploy (fp32/bf16, channels-last,
# batch 1-256), training step time and peak memory of one layer — plain conv+BN, offline, online and
# timm's RepVggBlock/MobileOneBlock at RepVGG-B1 and MobileOne-S0 shapes, batch 64 and 256 — and the
# whole-network fold time against the official, timm and DBB conversions (fold, fold_dbb); first
# tests/test_devices.py on CUDA.
#
# The GPU machine has the repository, Python 3.12 with a CUDA build of torch, torchvision, timm,
# numpy and pyyaml, and no network. pydantic (not in that image) travels as wheels:
#   on this machine:  benchmarks/gpu.sh --prepare      # downloads them into .device_wheels/ (git-ignored)
#   on the GPU:       benchmarks/gpu.sh                # installs them offline, runs the four benchmarks
# (with the device tool: carry .device_wheels). Results: benchmarks/results/<name>-cuda.json and
# gpu.log, copied to $OUT when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  py=${DEVICE_PYTHON_VERSION:-3.12}
  rm -rf .device_wheels
  # the versions installed here, so that what runs there is what the tests ran here
  pins=$(python - <<'PY'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")))
PY
)
  python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .device_wheels $pins
  ls .device_wheels
  echo "wheels for Python $py in .device_wheels/ (name it in the run tool's carry)"
  exit 0
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), torch.__version__)"
if ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/rz_site .device_wheels/*.whl
  export PYTHONPATH="/tmp/rz_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p benchmarks/results
{
  echo "== tests/test_devices.py (fold, online training, compile, INT8 export on CUDA)"
  timeout 120 python3 -m pytest -p no:cacheprovider tests/test_devices.py -rs || echo "!! device tests failed"
  for b in deploy train_online fold fold_dbb train_offline; do
    echo "== $b"
    timeout 70 python3 "benchmarks/$b.py" --device cuda || echo "!! $b failed or timed out"
  done
} 2>&1 | tee benchmarks/results/gpu.log
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*-cuda.json benchmarks/results/gpu.log "$OUT"/ 2>/dev/null || true; fi
