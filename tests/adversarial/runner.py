"""Run the hostile corpus under resource limits: ``python -m tests.adversarial.runner [--json OUT]``.

One process imports reparam_zoo once (and warms it up with one thread), then forks a child per
input. Each child gets RLIMIT_CPU = 2 s and RLIMIT_AS = its address space + 1 GiB, runs the input
through the library's API and/or its CLI, and reports what happened; the parent kills a child
after 10 s of wall time. Outcomes:

* ``error``  — a one-line error of the library's own type (SpecError / CheckpointError on the API;
  exit 2 and exactly one ``reparam-zoo...: error:`` line on stderr from the CLI), naming the file;
* ``ok``     — accepted, and the result is correct (the block/net folds within tolerance; the
  checkpoint loads and converts; the CLI exits 0);
* ``crash``  — any other exception, a traceback, more than one line, a message without the file,
  a MemoryError (the 1 GiB limit), or a child that died;
* ``hang``   — killed by the CPU (2 s) or wall (10 s) limit;
* ``wrong``  — accepted but the fold is not within tolerance.

An input whose outcome differs from its ``expect`` in ``corpus/index.json`` is a failure
(``expect: error`` met by ``ok`` is counted as "silently accepted").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
CPU_SECONDS = 2
MEMORY_BYTES = 1 << 30
WALL_SECONDS = 10


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` size (``VmSize``: address space, ``VmRSS``: resident) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def _one_line_error(exc: BaseException, types: tuple, name: str) -> str | None:
    """None when ``exc`` is a clean error of ``types`` naming ``name`` in one line; else why not."""
    if not isinstance(exc, types):
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    msg = str(exc)
    if "\n" in msg:
        return f"multi-line message ({msg.count(chr(10)) + 1} lines)"
    if len(msg) > 2000:
        return f"message of {len(msg):,} characters"
    if name and name not in msg:
        return f"message does not name the file: {msg[:200]}"
    return None


def _api(entry: dict, path: Path) -> tuple[str, str]:
    """Run one file through the Python API: (outcome, detail)."""
    import torch

    import reparam_zoo as rz
    from reparam_zoo.interop.checkpoints import CheckpointError, load_checkpoint
    from reparam_zoo.engine.nets import build_model, load_net
    from reparam_zoo.search.space import SearchSpace
    from reparam_zoo.engine.verify import check_size

    kind, name = entry["kind"], path.name
    try:
        if kind == "spec":
            block = rz.build_block(rz.load_spec(path), 8, 8)
            h, w = check_size(block.geometry)
            res = rz.verify(block, (2, 8, h, w), dtype=torch.float64, randomize=True)
            return ("ok", str(res)) if res.ok else ("wrong", str(res))
        if kind == "net":
            model = build_model(load_net(path), 10)
            res = rz.verify(model, (1, 3, 16, 16), dtype=torch.float64, randomize=True,
                            shapes=[(1, 3, 16, 16)])
            return ("ok", str(res)) if res.ok else ("wrong", str(res))
        if kind == "space":
            import random

            space = SearchSpace.load(path)
            spec = space.sample(random.Random(0))
            g = space.geometry
            block = rz.build_block(spec, g.in_channels, g.out_channels, stride=g.stride, groups=g.groups)
            res = rz.verify(block, (1, g.in_channels, 9, 9), dtype=torch.float64, randomize=True)
            return ("ok", str(res)) if res.ok else ("wrong", str(res))
        if kind == "checkpoint":
            model = build_model(load_net("tiny_vgg"), 10)
            load_checkpoint(model, path)
            return "ok", "loaded"
    except BaseException as exc:  # noqa: BLE001 - classifying every outcome is the point
        types = (CheckpointError,) if kind == "checkpoint" else (rz.SpecError,)
        why = _one_line_error(exc, types, name)
        if why is None:
            return "error", str(exc)[:300]
        return "crash", why + " | " + "".join(traceback.format_exception(exc))[-600:]
    raise ValueError(f"unknown kind {kind}")


def _cli(argv: list[str]) -> tuple[str, str]:
    """Run one CLI call in this process, stdout discarded, stderr captured: (outcome, detail)."""
    from reparam_zoo.cli.app import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001
            return "crash", "".join(traceback.format_exception(exc))[-600:]
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    if rc == 0:
        return "ok", ""
    if rc == 2 and len(lines) == 1 and "error:" in lines[0] and lines[0].startswith("reparam-zoo"):
        return "error", lines[0][:300]
    return "crash", f"exit {rc}, {len(lines)} stderr line(s): " + " / ".join(lines)[-600:]


def _selftest(action: str) -> tuple[str, str]:
    if action == "spin":  # must be killed by the CPU limit
        while True:
            pass
    if action == "allocate":  # must hit the memory limit
        try:
            blob = bytearray(2 * MEMORY_BYTES)
            return "ok", f"allocated {len(blob)} bytes"
        except MemoryError:
            return "crash", "MemoryError (the memory limit)"
    raise ValueError(f"unknown self-test action {action!r}")


def _child(entry: dict, tmp: Path, write_fd: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 1))
    resource.setrlimit(resource.RLIMIT_AS, (_status_bytes("VmSize") + MEMORY_BYTES, _status_bytes("VmSize") + MEMORY_BYTES))
    rss0 = _status_bytes("VmRSS")
    result: dict = {}
    if entry["kind"] == "selftest":  # the harness's own checks: the limits must bite
        result["outcome"], result["detail"] = _selftest(entry["action"])
    elif entry["kind"] == "cli":
        argv = [a.replace("{corpus}", str(CORPUS)).replace("{tmp}", str(tmp)) for a in entry["argv"]]
        result["outcome"], result["detail"] = _cli(argv)
    else:
        path = CORPUS / entry["file"]
        result["outcome"], result["detail"] = _api(entry, path)
        if entry["kind"] in ("spec", "checkpoint"):  # the same file through the CLI
            if entry["kind"] == "spec":
                argv = ["check", str(path), "--dtype", "float64"]
            else:
                argv = ["convert", "--net", "tiny_vgg", "--num-classes", "10", str(path), str(tmp / "out.pth")]
            result["cli_outcome"], result["cli_detail"] = _cli(argv)
            if result["cli_outcome"] == "error" and path.name not in result["cli_detail"] and \
                    entry["kind"] == "spec":
                result["cli_outcome"], result["cli_detail"] = "crash", "no file name: " + result["cli_detail"]
    result["rss_growth_mb"] = round(max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0) / 2**20, 1)
    result["cpu_s"] = round(time.process_time(), 3)
    os.write(write_fd, json.dumps(result).encode())
    os.close(write_fd)


def run_entry(entry: dict, tmp: Path) -> dict:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            _child(entry, tmp, write_fd)
        except BaseException as exc:  # noqa: BLE001
            with contextlib.suppress(Exception):
                os.write(write_fd, json.dumps({"outcome": "crash", "detail": f"runner: {exc!r}"[:600]}).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    t0, chunks, status = time.monotonic(), [], None
    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.05)
        if ready:
            data = os.read(read_fd, 1 << 16)
            if data:
                chunks.append(data)
                continue
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > WALL_SECONDS:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = "wall"
            break
    while True:  # what is left in the pipe
        ready, _, _ = select.select([read_fd], [], [], 0)
        data = os.read(read_fd, 1 << 16) if ready else b""
        if not data:
            break
        chunks.append(data)
    os.close(read_fd)
    wall = time.monotonic() - t0
    try:
        result = json.loads(b"".join(chunks))
    except ValueError:
        if status == "wall" or (isinstance(status, int) and os.WIFSIGNALED(status)
                                and os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL)):
            result = {"outcome": "hang", "detail": f"killed by the {'wall' if status == 'wall' else 'CPU'} limit"}
        else:
            result = {"outcome": "crash", "detail": f"the child died (status {status})"}
    result["wall_s"] = round(wall, 3)
    return result


def warm_up() -> None:
    """Import and exercise everything once in the parent (one thread: forking after OpenMP is unsafe
    otherwise), so that children measure the input, not first-use costs."""
    import torch

    torch.set_num_threads(1)
    import reparam_zoo as rz
    from reparam_zoo.cli.app import main
    from reparam_zoo.engine.nets import build_model, load_net

    rz.verify(rz.build_block("repvgg", 8, 8), (2, 8, 9, 11), dtype=torch.float64, randomize=True)
    build_model(load_net("tiny_vgg"), 10)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["list"])
        main(["check", "repvgg", "--dtype", "float64"])
    import reparam_zoo.cli.convert  # noqa: F401
    import safetensors.torch  # noqa: F401


def classify(entry: dict, result: dict) -> list[str]:
    """The problems with one result against the entry's expectations (empty: as expected)."""
    problems = []
    pairs = [("api" if entry["kind"] != "cli" else "cli", entry["expect"], result["outcome"], result.get("detail"))]
    if "cli_outcome" in result:
        pairs.append(("cli", entry.get("expect_cli", entry["expect"]), result["cli_outcome"], result.get("cli_detail")))
    for where, want, got, detail in pairs:
        if got != want:
            label = "silently accepted" if (want, got) == ("error", "ok") else got
            problems.append(f"{where}: expected {want}, got {label}: {str(detail)[:400]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write every result here")
    ap.add_argument("--only", nargs="*", help="only entries whose file or name contains one of these")
    ap.add_argument("--entries", help="run these entries (a JSON list) instead of corpus/index.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    index = json.loads(args.entries) if args.entries else json.loads((CORPUS / "index.json").read_text())
    if args.only:
        index = [e for e in index if any(s in e.get("file", e.get("name", "")) for s in args.only)]
    warm_up()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in index:
            r = run_entry(entry, Path(tmp))
            r.update(entry)
            r["problems"] = classify(entry, r)
            results.append(r)
    table = summarize(results)
    print(table)
    for r in results:
        for p in r["problems"]:
            print(f"FAIL {r.get('file', r.get('name'))}: {p}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if any(r["problems"] for r in results) else 0


def summarize(results: list[dict]) -> str:
    """Counts per category: tried / clean error / ok (correct) / crash / hang / wrong / silently accepted."""
    cats: dict[str, dict[str, int]] = {}
    for r in results:
        c = cats.setdefault(r["category"], dict.fromkeys(
            ("tried", "clean error", "correct result", "crash", "hang", "wrong", "silently accepted"), 0))
        c["tried"] += 1
        outcomes = [(r["expect"], r["outcome"])]
        if "cli_outcome" in r:
            outcomes.append((r.get("expect_cli", r["expect"]), r["cli_outcome"]))
        worst = None
        for want, got in outcomes:
            if got == want:
                continue
            worst = "silently accepted" if (want, got) == ("error", "ok") else got
        if worst is None:
            c["clean error" if r["expect"] == "error" else "correct result"] += 1
        else:
            c[worst if worst in c else "crash"] += 1
    head = f"{'category':16s} " + " ".join(f"{k:>17s}" for k in next(iter(cats.values())))
    lines = [head, "-" * len(head)]
    total = dict.fromkeys(next(iter(cats.values())), 0)
    for name, c in cats.items():
        lines.append(f"{name:16s} " + " ".join(f"{v:17d}" for v in c.values()))
        for k, v in c.items():
            total[k] += v
    lines.append(f"{'all':16s} " + " ".join(f"{v:17d}" for v in total.values()))
    peak = max((r.get("rss_growth_mb", 0) for r in results), default=0)
    slow = max((r.get("wall_s", 0) for r in results), default=0)
    lines.append(f"(limits per input: {CPU_SECONDS} s CPU, 1 GiB address space; slowest {slow:.2f} s wall, "
                 f"largest memory growth {peak:.0f} MB)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
