#!/usr/bin/env bash
# The INT8 study of docs/deploy.md: every shipped block quantized by ONNX Runtime after training on
# Fashion-MNIST, 3 seeds, paired with the plain conv+BN control quantized the same way.
#   1. tiny_vgg (5 blocks, 16x16): every shipped block that fits, the defaults of `compare` (~5 min, 2 cores)
#   2. a 13-block net at 28x28 (benchmarks/int8_deep_vgg.yaml), RepVGG vs QARepVGG vs plain, longer
#      training (~10 min, 2 cores)
# Results: runs/int8_tiny and runs/int8_deep (results.json / .md); copies in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m reparam_zoo compare --int8 --out runs/int8_tiny --quiet
python -m reparam_zoo compare plain repvgg qarepvgg --net benchmarks/int8_deep_vgg.yaml --int8 \
  --limit 12000 --epochs 6 --seeds 3 --out runs/int8_deep --quiet
cp runs/int8_tiny/results.json benchmarks/results/int8-tiny_vgg-fashion-mnist.json
cp runs/int8_deep/results.json benchmarks/results/int8-deep_vgg-fashion-mnist.json
