"""Outputs: checked writable before work, written atomically, one run per --out (a lock file), and
Ctrl-C leaves the previous complete results or a clearly named partial file — never a mix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reparam_zoo.cli.app import main
from reparam_zoo.outputs import (LOCK_NAME, OutputError, RunLock, atomic_write, check_writable, deferred_interrupt,
                                 publish)

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--net", "tiny_vgg", "--data", "digits", "--epochs", "1", "--seeds", "1", "--limit", "128", "--latency-runs", "1",
         "--latency-batch", "8", "--quiet"]
RESULTS = ("results.json", "results.csv", "results.md", "plot.png")


def test_check_writable_refuses_directories_missing_folders_and_unwritable_places(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(tmp_path)
    with pytest.raises(OutputError, match="does not exist"):
        check_writable(tmp_path / "nope" / "x.pth")
    with pytest.raises(OutputError, match="cannot write|does not exist"):
        check_writable("/proc/x.pth")  # /proc refuses new files even to root
    assert check_writable(tmp_path / "x.pth") == tmp_path / "x.pth"
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as fh:
            fh.write("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with atomic_write(path) as fh:
        fh.write("new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_deferred_interrupt_holds_ctrl_c_until_the_files_are_in_place(tmp_path):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("after the signal")  # still runs: the interrupt waits for the block's end
    assert done == ["after the signal"]


def test_publish_replaces_a_set_together_and_removes_the_partial(tmp_path):
    (tmp_path / "results.json").write_text("old")
    (tmp_path / "results.partial.json").write_text("partial")
    publish(tmp_path, {"results.json": "new", "plot.png": b"\x89PNG"}, remove=("results.partial.json",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "results.json"]
    assert (tmp_path / "results.json").read_text() == "new"


def test_a_live_lock_refuses_a_second_run_and_a_dead_ones_lock_is_taken_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                      "command": "reparam-zoo compare", "started": "earlier"}))
        with pytest.raises(OutputError, match=f"in use by another run \\(pid {sleeper.pid}"):
            RunLock(tmp_path).acquire()
        # the CLI refuses it before any training, in one line, exit 2
        assert main(["compare", "repvgg", *QUICK, "--out", str(tmp_path)]) == 2
        assert not (tmp_path / "results.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    with RunLock(tmp_path) as lock:  # its holder is gone: taken over
        assert lock.taken_over["pid"] == sleeper.pid
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


#: a run long enough (tens of seconds) to be interrupted or raced; the tests stop it early
LONG = ["--net", "tiny_vgg", "--data", "digits", "--epochs", "20", "--seeds", "1", "--limit", "512", "--latency-runs", "1",
        "--latency-batch", "8", "--quiet"]


def _compare(out: Path, *blocks: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = shutil.which("reparam-zoo")  # what users run (the installed console script)
    assert script, "reparam-zoo is not installed"
    # Ctrl-C as at a terminal, whatever started these tests: a job put in the background by a non-interactive
    # shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    return subprocess.Popen([script, "compare", *blocks, *LONG, "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_two_concurrent_compares_into_one_out_one_is_refused(tmp_path):
    first = _compare(tmp_path, "repvgg", "acb", "dbb", "mobileone", "orepa", "diracnet")
    deadline = time.monotonic() + 120
    while not (tmp_path / LOCK_NAME).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _compare(tmp_path, "repvgg")
    err2 = second.communicate(timeout=300)[1]
    still_running = first.poll() is None
    first.send_signal(signal.SIGINT)  # the first run is not needed any further
    err1 = first.communicate(timeout=300)[1]
    assert still_running, "the first run ended before the second tried the folder: " + err1
    assert second.returncode == 2 and "in use by another run" in err2 and len(err2.strip().splitlines()) == 1
    assert first.returncode == 130 and "interrupted" in err1, err1[-3000:]
    assert not (tmp_path / "results.json").exists()  # the refused run wrote nothing
    assert not (tmp_path / LOCK_NAME).exists()


def test_ctrl_c_keeps_the_previous_complete_results_and_names_the_partial(tmp_path):
    assert main(["compare", "repvgg", *QUICK, "--out", str(tmp_path)]) == 0
    before = {name: (tmp_path / name).read_bytes() for name in RESULTS}
    run = _compare(tmp_path, "repvgg", "acb", "dbb", "mobileone")
    deadline = time.monotonic() + 300
    while not (tmp_path / "results.partial.json").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, "the run finished before it could be interrupted"
    run.send_signal(signal.SIGINT)
    err = run.communicate(timeout=120)[1]
    assert run.returncode == 130 and "results.partial.json" in err and "previous complete run" in err
    after = {name: (tmp_path / name).read_bytes() for name in RESULTS}
    assert after == before  # the previous complete set, untouched
    partial = json.loads((tmp_path / "results.partial.json").read_text())
    assert partial["partial"] is True and "PARTIAL" in partial["note"]
    assert 1 <= len(partial["runs"]) < 5 and partial["runs"][0]["block"] == "plain"  # the control first
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name == LOCK_NAME]
    assert leftovers == []
    # the next complete run replaces the set and removes the partial file
    assert main(["compare", "acb", *QUICK, "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "results.partial.json").exists()
    assert [r["block"] for r in json.loads((tmp_path / "results.json").read_text())["runs"]] == ["plain", "acb"]


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt") as fh:
            fh.write("x")
        publish(tmp_path, {"b.json": "{}"})
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o644
    os.chmod(tmp_path / "a.txt", 0o640)  # replacing a file keeps its mode
    with atomic_write(tmp_path / "a.txt") as fh:
        fh.write("y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_a_lock_holding_our_own_pid_is_stale_and_release_leaves_anothers_lock(tmp_path, capsys):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    lock = RunLock(tmp_path).acquire()  # a restarted container reusing the pid: not a live other run
    assert "taking over the lock" in capsys.readouterr().err
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))  # someone else's now
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()
