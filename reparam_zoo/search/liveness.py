"""Which trials of a shared study are still being worked on: Optuna's heartbeats on the RDB storage (any
host: a trial whose heartbeat is older than the grace period is failed by Optuna's ``fail_stale_trials``),
and, on this host, the owner's process id (a killed worker's trial is failed at once, without waiting for
the grace period). A failed trial that was training a candidate is queued again with the same parameters
(``Study.enqueue_trial``), so the next worker to ask trains it.

Only Optuna's public API: ``RDBStorage(heartbeat_interval=, grace_period=, heartbeat_stale_trial_callback=)``,
``storages.fail_stale_trials``, ``RDBStorage.record_heartbeat`` with the trial's id from
``get_trial_id_from_study_id_trial_number``, ``Study.tell`` and ``Study.enqueue_trial``.
"""

from __future__ import annotations

import os
import socket
import threading
import warnings

from reparam_zoo.outputs import pid_alive

#: seconds between a training trial's heartbeats, and the silence after which it counts as dead (Optuna's
#: default grace period is two intervals; a slow shared database and a busy worker get more)
HEARTBEAT, GRACE = 30, 120


def owner() -> str:
    """This worker, as trials record it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def gone_here(trial) -> bool:
    """A running trial whose worker ran on this host and whose process is gone (killed)."""
    host, _, pid = str(trial.user_attrs.get("owner", "")).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid))


def retry(study, trial) -> None:
    """Queue a dead worker's candidate again (the same parameters): the next worker to ask trains it. A trial
    that had not started training (a duplicate, an invalid draw, one still deciding) leaves nothing to redo."""
    if trial.user_attrs.get("training") and "duplicate_of" not in trial.user_attrs:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def still_running(study, number: int) -> bool:
    """Whether trial ``number`` is still running in the storage (not failed by another worker meanwhile)."""
    import optuna

    return any(t.number == number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def fail_dead_trials(study) -> tuple[int, int]:
    """Fail the running trials of dead workers — this host's whose process is gone (at once), any host's whose
    heartbeat is older than the grace period (Optuna) — and queue their candidates again:
    ``(killed here, silent)``, how many of each."""
    import optuna

    failed: list[int] = []

    def note(study_, trial) -> None:
        failed.append(trial.number)
        retry(study_, trial)

    S = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
        if gone_here(t):
            try:
                study.tell(t.number, state=S.FAIL)
            except (RuntimeError, ValueError):  # another worker failed it first
                continue
            note(study, t)
    killed = len(failed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        STALE.callback = note  # on_stale, the storage's callback, reports each trial Optuna fails here
        try:
            optuna.storages.fail_stale_trials(study)
        finally:
            STALE.callback = None
    return killed, len(failed) - killed


class _Stale(threading.local):
    """Where the storage's ``heartbeat_stale_trial_callback`` reports to, while :func:`fail_dead_trials` runs."""

    callback = None


STALE = _Stale()


def on_stale(study, trial) -> None:
    """The storage's ``heartbeat_stale_trial_callback``: Optuna failed ``trial`` (its heartbeat stopped)."""
    if STALE.callback is not None:
        STALE.callback(study, trial)
    else:
        retry(study, trial)


class Heartbeat:
    """While a trial runs: its heartbeat recorded now and every ``storage.get_heartbeat_interval()`` seconds
    by a daemon thread, until :meth:`stop` (the trial told). A storage without heartbeats: nothing."""

    def __init__(self, storage, study_name: str, trial_number: int, log=print):
        self._stop = threading.Event()
        self._thread = None
        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self._timeout = (interval or 0) + 30
        if not interval:
            return
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name),
                                                                   trial_number)
        storage.record_heartbeat(trial_id)

        def beat() -> None:
            missed = 0
            while not self._stop.wait(interval):
                try:
                    storage.record_heartbeat(trial_id)
                    missed = 0
                except Exception as exc:  # noqa: BLE001 - a lost beat is survivable; the grace period covers several
                    missed += 1
                    if missed == 3:  # said once per silence: past the grace period the trial counts as dead
                        log(f"trial {trial_number}: 3 heartbeats in a row could not be recorded "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})")

        self._thread = threading.Thread(target=beat, name=f"heartbeat-{trial_number}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:  # a beat stuck on an unreachable database must not hold the worker
            self._thread.join(timeout=self._timeout)


__all__ = ["GRACE", "HEARTBEAT", "Heartbeat", "STALE", "fail_dead_trials", "gone_here", "on_stale", "owner", "retry",
           "still_running"]
