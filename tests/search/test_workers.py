"""Workers of one study on several hosts: a worker killed on ANOTHER host (a UTS namespace with its own hostname,
so that this host's process check cannot see it) is found by Optuna's heartbeats, its trial failed and its
candidate trained again — on SQLite, and with three workers on a real PostgreSQL server (a throwaway cluster:
initdb in a temporary folder, a loopback port, stopped at the end)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from tests.search.test_study import ROOT, SPACE_YAML  # noqa: E402 - the same 8-candidate space

OTHER_HOST = "otherhost"
S = optuna.trial.TrialState


def _can_fake_a_host() -> bool:
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "--uts", "sh", "-c", f"hostname {OTHER_HOST}"], capture_output=True)
    return r.returncode == 0


needs_namespaces = pytest.mark.skipif(not _can_fake_a_host(), reason="unshare --uts needs root (CI runs as root)")


def _worker(space: Path, out: Path, storage: str, *extra: str, other_host: bool = False) -> subprocess.Popen:
    """A `reparam-zoo search` worker: trials of a few seconds (500 images, 4 epochs), heartbeats every second,
    dead after 5 s without one."""
    cmd = [sys.executable, "-m", "reparam_zoo", "search", str(space), "--data", "digits", "--limit", "500",
           "--holdout", "40", "--epochs", "4", "--pruner", "none", "--sampler", "random", "--latency-runs", "1",
           "--latency-batch", "2", "--reevaluate", "0", "--quiet", "--out", str(out), "--storage", storage,
           "--heartbeat", "1", "--grace", "5", *extra]
    if other_host:  # exec keeps the pid: the trial's owner is otherhost:<this pid>
        cmd = ["unshare", "--uts", "sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh", *cmd]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _kill_mid_training(victim: subprocess.Popen, storage: str, host: str = OTHER_HOST, timeout: float = 300) -> int:
    """SIGKILL the worker while it trains a candidate; the number of that trial."""
    deadline = time.monotonic() + timeout
    owner = f"{host}:{victim.pid}"
    while time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="small", storage=storage).get_trials()
        except Exception:  # noqa: BLE001 - the study is being created right now
            continue
        mine = [t for t in trials if t.state == S.RUNNING and t.user_attrs.get("owner") == owner
                and t.user_attrs.get("training")]
        if mine:
            victim.send_signal(signal.SIGKILL)
            victim.communicate(timeout=60)
            return mine[0].number
    victim.kill()
    _, err = victim.communicate(timeout=60)
    pytest.fail(f"the victim never trained a candidate: {err[-2000:]}")


def _check_the_study(storage: str, killed: int, budget: int) -> None:
    study = optuna.load_study(study_name="small", storage=storage)
    trials = study.get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == S.FAIL  # the dead worker's trial, failed by another worker
    retried = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert retried, "the dead worker's candidate was not queued again"
    assert all(t.params == by_number[killed].params for t in retried)
    assert not [t for t in trials if t.state == S.RUNNING], "a trial was left running"
    done = [t for t in trials if t.state == S.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(done) >= budget  # the budget is met
    assert set(Counter(t.user_attrs["hash"] for t in done).values()) == {1}  # every candidate trained once
    assert by_number[killed].user_attrs["hash"] in {t.user_attrs["hash"] for t in done}  # ... the killed one too


@needs_namespaces
def test_a_worker_killed_on_another_host_is_found_by_its_heartbeat(tmp_path):
    space = tmp_path / "small.yaml"
    space.write_text(SPACE_YAML)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    victim = _worker(space, tmp_path / "a", storage, "--budget", "4", other_host=True)
    killed = _kill_mid_training(victim, storage)
    t0 = time.monotonic()
    r = _worker(space, tmp_path / "b", storage, "--budget", "4")
    _, err = r.communicate(timeout=600)
    assert r.returncode == 0, err
    # found by the heartbeat's grace period, not by this host's process check
    assert "1 trial(s) left running by a process that is gone (1 with no heartbeat for 5 s)" in err, err
    assert "killed on this host" not in err and time.monotonic() - t0 >= 5
    _check_the_study(storage, killed, 4)


# ----------------------------------------------------------------------------- a real PostgreSQL server


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture()
def postgres_url():
    """A throwaway PostgreSQL cluster on a loopback port (as the `postgres` user when run as root: the server
    refuses root), with an empty database; stopped and removed at the end."""
    if os.environ.get("REPARAM_ZOO_REQUIRE_POSTGRES"):
        import psycopg  # noqa: F401 - CI installs the dev extra: missing is a failure there
    else:
        pytest.importorskip("psycopg")
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("REPARAM_ZOO_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="rz-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"

    def run(*cmd):
        subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, timeout=120)

    run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
    run(bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "rz")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/rz"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_three_workers_on_postgresql_with_one_killed_mid_trial(tmp_path, postgres_url):
    space = tmp_path / "small.yaml"
    space.write_text(SPACE_YAML)
    other = _can_fake_a_host()  # as root: the victim on "another host", found by its heartbeat alone
    victim = _worker(space, tmp_path / "v", postgres_url, "--budget", "6", other_host=other)
    killed = _kill_mid_training(victim, postgres_url, OTHER_HOST if other else socket.gethostname())
    workers = [_worker(space, tmp_path / f"w{i}", postgres_url, "--budget", "6") for i in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=900)
        assert w.returncode == 0, err
    _check_the_study(postgres_url, killed, 6)
    owners = {t.user_attrs.get("owner") for t in optuna.load_study(study_name="small", storage=postgres_url)
              .get_trials() if t.state == S.COMPLETE and "duplicate_of" not in t.user_attrs}
    assert len(owners) >= 2  # the two surviving workers shared the study


def test_under_torchrun_search_says_how_to_run_one_worker_per_gpu(tmp_path, capsys, monkeypatch):
    from reparam_zoo.cli.app import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    space = tmp_path / "small.yaml"
    space.write_text(SPACE_YAML)
    assert main(["search", str(space), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA_VISIBLE_DEVICES=i" in err[0] and "--storage" in err[0], err
