#!/bin/bash
# The docs/search.md measurements: TPE vs random at equal budget (16 candidates each, 3 epochs,
# Fashion-MNIST: 6,000 training images + 2,000 held out to score the trials), 2 sampler seeds each;
# then 3 supernet runs per gating scheme; then benchmarks/search_study.py for the tables.
#   bash benchmarks/search_study.sh [RUNS_DIR]     (about 13 minutes on 2 CPU cores)
set -euo pipefail
RUNS=${1:-runs/search_study}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$RUNS" && cd "$RUNS"
for seed in 0 1; do
  for s in random tpe; do
    /usr/bin/time -f "%e s" python -m reparam_zoo search repvgg_acb --sampler $s --seed $seed --budget 16 --pruner none \
      --reevaluate 0 --quiet --out $s-$seed > $s-$seed.log 2>&1
  done
done
# supernets: 3 seeds per scheme
for seed in 0 1 2; do
  for sc in group-lasso:0.03 gate-l1:0.01; do
    name=${sc%%:*}; lam=${sc##*:}
    /usr/bin/time -f "%e s" python -m reparam_zoo search repvgg_acb --supernet --scheme $name --lam $lam --seed $seed \
      --reevaluate 0 --quiet --out sn-$name-$seed > sn-$name-$seed.log 2>&1
  done
done
python "$HERE/search_study.py" . --seeds 3
