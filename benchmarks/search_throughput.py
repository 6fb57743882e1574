"""Search throughput: candidates of a 64-channel 3x3 search space built + folded (+ verified) per
minute on this device — architecture search needs this to be cheap. Target >= 1,000 per minute
for build + fold + verify."""

import copy
import random
import time

import torch

from _common import parser, report

import reparam_zoo as rz
from reparam_zoo.search.space import SearchSpace


def main():
    args = parser(__doc__).parse_args()
    space = SearchSpace.load("repvgg_acb")
    template = copy.deepcopy(space.template)
    template["kernel"] = 3
    space = SearchSpace("acb3x3", template, space.geometry)
    n = 30 if args.quick else 300
    rng = random.Random(0)
    specs = [space.sample(rng) for _ in range(n)]
    rows = []
    for what in ("build + fold", "build + fold + verify"):
        torch.manual_seed(0)
        worst = 0.0
        t0 = time.perf_counter()
        for spec in specs:
            block = rz.build_block(spec, 64, 64).to(args.device)
            rz.fold_model(block)
            if "verify" in what:
                res = rz.verify(block, (1, 64, 8, 8), dtype=torch.float64, shapes=[(1, 64, 8, 8), (1, 64, 3, 5)], randomize=True)
                worst = max(worst, res.max_rel)
        seconds = time.perf_counter() - t0
        rows.append({"work": what, "candidates": n, "seconds": seconds, "per minute": 60 * n / seconds,
                     "worst fp64 fold error": worst if "verify" in what else "-"})
    report("search_throughput", args, rows, ["work", "candidates", "seconds", "per minute", "worst fp64 fold error"],
           "target: >= 1,000 candidates per minute for build + fold + verify (64-channel 3x3 blocks)")


if __name__ == "__main__":
    main()
