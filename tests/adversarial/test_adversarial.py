"""The hostile corpus and the random-spec generator (issue: nothing silent, nothing unbounded).

* ``corpus/``: files and CLI calls a hostile user could give; each must end in a one-line error of
  the library's own type (exit 2 on the CLI) or a correct result, within 2 s of CPU and 1 GiB of
  memory — enforced by resource limits in ``runner.py`` (a child over a limit is killed and counted
  as a hang or a crash), not by timing assertions.
* ``randspec.py``: random specs, valid and hostile mixed; each raises SpecError (and nothing else,
  in one line) or builds a block whose fold is exact in float64 and float32 — as 2-D blocks, and in any
  layer (``random_layer_case``: Linear, 1-D, 2-D, 3-D, transposed).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.engine.verify import check_size

from .randspec import has_nonfinite, layer_shapes, random_case, random_layer_case

HERE = Path(__file__).parent
REPO = HERE.parent.parent
CATEGORIES = {"yaml-structure", "encoding", "size", "types", "non-finite", "yaml-1.1", "semantics", "net", "space",
              "checkpoint", "cli"}


def test_the_corpus_covers_every_category_with_at_least_100_files():
    index = json.loads((HERE / "corpus" / "index.json").read_text())
    files = [e for e in index if "file" in e]
    assert len(files) >= 100
    assert {e["category"] for e in index} == CATEGORIES
    for e in files:
        assert (HERE / "corpus" / e["file"]).is_file(), e["file"]
    assert sum(e["expect"] == "error" for e in index) >= 150  # mostly hostile, some must-accept controls


def test_every_hostile_input_gives_its_one_line_error_within_limits(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "tests.adversarial.runner", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    results = json.loads(out.read_text())
    failures = [f"{r.get('file', r.get('name'))}: {p}" for r in results for p in r["problems"]]
    assert not failures, "\n".join(failures[:20]) + "\n" + proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    index = json.loads((HERE / "corpus" / "index.json").read_text())
    assert len(results) == len(index)  # every entry ran
    assert Counter(r["outcome"] for r in results)["error"] >= 150


def test_the_runner_sees_a_hang_a_memory_blowup_a_silent_acceptance_and_a_wrong_expectation(tmp_path):
    """The harness itself can fail: a child spinning past the CPU limit, one allocating past the memory
    limit, an input accepted where an error was expected, and a correct result where the entry expected
    an error are all reported, not passed."""
    entries = [{"name": "spin", "kind": "selftest", "action": "spin", "category": "self", "expect": "error"},
               {"name": "allocate", "kind": "selftest", "action": "allocate", "category": "self", "expect": "error"},
               {"name": "accepted", "kind": "cli", "argv": ["list"], "category": "self", "expect": "error"},
               {"file": "specs/kernel_63_ok.yaml", "kind": "spec", "category": "self", "expect": "error"}]
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "tests.adversarial.runner", "--entries", json.dumps(entries),
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = {r.get("name", r.get("file")): r for r in json.loads(out.read_text())}
    assert results["spin"]["outcome"] == "hang"
    assert results["allocate"]["outcome"] == "crash" and "MemoryError" in results["allocate"]["detail"]
    assert results["accepted"]["outcome"] == "ok" and "silently accepted" in results["accepted"]["problems"][0]
    assert results["specs/kernel_63_ok.yaml"]["problems"]


def _check_cases(seeds: range) -> Counter:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    try:
        return _cases(seeds)
    finally:
        torch.set_num_threads(threads)


def _cases(seeds: range) -> Counter:
    counts: Counter = Counter()
    for i in seeds:
        spec, cin, cout, stride, groups = random_case(random.Random(i))
        torch.manual_seed(i)
        try:
            block = rz.build_block(spec, cin, cout, stride=stride, groups=groups)
        except rz.SpecError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 15_000, (i, spec)
            counts["clean error"] += 1
            continue
        # anything else escaping build_block is a failure of the test (pytest shows the seed in the traceback)
        assert not has_nonfinite(spec), (i, spec)  # a non-finite value must never be accepted
        h, w = check_size(block.geometry)
        for dtype in (torch.float64, torch.float32):
            res = rz.verify(block, (2, cin, h, w), dtype=dtype, randomize=True, seed=i)
            assert res.ok, (i, spec, str(res))
        counts["exact fold"] += 1
    return counts


def test_random_specs_are_refused_cleanly_or_fold_exactly():
    counts = _check_cases(range(200))
    assert counts["clean error"] >= 40 and counts["exact fold"] >= 40, counts  # both sides are exercised


@pytest.mark.slow
def test_random_specs_3000():
    counts = _check_cases(range(10_000, 13_000))
    assert sum(counts.values()) == 3000 and counts["exact fold"] >= 600, counts


@pytest.mark.parametrize("kind,key,value,yaml", [("scale", "init", float("inf"), ".inf"),
                                                  ("scale", "init", float("nan"), ".nan"),
                                                  ("scale", "init", -float("inf"), "-.inf"),
                                                  ("bn", "eps", float("inf"), ".inf")])
def test_a_non_finite_value_in_a_seq_step_is_refused(kind, key, value, yaml):
    """Found by the any-layer generator (seed 21346: a seq `scale` step with `init: inf` built a block whose
    weights were inf); in every layer, 2-D included, as the branch norms' own values already are."""
    spec = {"name": "r", "kernel": 3, "branches": [{"type": "kxk"}, {"type": "seq", "steps": [
        {"type": "conv", "kernel": 1, "out_channels": 4}, {"type": kind, key: value}, {"type": "conv", "kernel": 3}]}]}
    with pytest.raises(rz.SpecError) as exc:
        rz.build_block(spec, 4, 4)
    assert exc.value.location.startswith("branches.1.steps.1"), str(exc.value)
    with pytest.raises(rz.SpecError):  # the same from YAML
        rz.load_spec(f"name: r\nbranches:\n  - type: seq\n    steps:\n      - {{type: {kind}, {key}: {yaml}}}\n"
                     "      - {type: conv, kernel: 3}\n")


def _layer_cases(seeds: range) -> Counter:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    counts: Counter = Counter()
    try:
        for i in seeds:
            spec, cin, cout, options = random_layer_case(random.Random(i))
            torch.manual_seed(i)
            kind = "linear" if options["dims"] == 0 else "transposed" if options["transposed"] is True else "conv"
            try:
                block = rz.build_block(spec, cin, cout, **options)
            except rz.SpecError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 15_000, (i, spec, options)
                counts["clean error"] += 1
                continue
            assert not has_nonfinite(spec), (i, spec)
            g = block.geometry
            assert (g.dims, g.transposed) == (options["dims"], options["transposed"]), (i, options)
            shapes = layer_shapes(g)
            for dtype in (torch.float64, torch.float32):
                res = rz.verify(block, shapes[0], dtype=dtype, shapes=shapes, randomize=True, seed=i)
                assert res.ok and res.shapes, (i, spec, options, str(res))
            counts["exact fold"] += 1
            counts[f"exact fold: {kind}, dims={g.dims}"] += 1
    finally:
        torch.set_num_threads(threads)
    return counts


def test_random_specs_in_any_layer_are_refused_cleanly_or_fold_exactly():
    """Linear, 1-D, 2-D, 3-D and transposed blocks of random specs (dims, transposed, output_padding
    hostile now and then too)."""
    counts = _layer_cases(range(400))
    assert counts["clean error"] >= 40 and counts["exact fold"] >= 60, counts
    for kind in ("linear, dims=0", *(f"{k}, dims={d}" for k in ("conv", "transposed") for d in (1, 2, 3))):
        assert counts[f"exact fold: {kind}"] >= 5, counts  # every layer folds somewhere


@pytest.mark.slow
def test_random_specs_in_any_layer_3000():
    counts = _layer_cases(range(20_000, 23_000))
    assert sum(counts[k] for k in ("clean error", "exact fold")) == 3000 and counts["exact fold"] >= 900, counts
