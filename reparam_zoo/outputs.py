"""Writing results safely: outputs checked writable before any work, files written atomically
(a temporary file in the same folder, then one rename), an output folder held by one run at a
time (a lock file), and Ctrl-C deferred while a set of result files is being put in place."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".reparam_zoo.lock"


class OutputError(ValueError):
    """An output that cannot be written (missing folder, a directory, read-only, held by another run)."""


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Refuse, before any work, an output file that could not be written: its folder is missing or
    read-only, or the path is a directory. Tries a real file in that folder (permission bits lie to root)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: the folder {folder} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name[:50]}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    return path


def check_out_dir(path: str | Path, what: str = "--out") -> Path:
    """Create the output folder (and its parents) and check that files can be written in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot create the folder ({exc.strerror or exc})") from None
    check_writable(path / "results", what)
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename, on any
    error (Ctrl-C included) it is removed and ``path`` keeps what it held before."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:50]}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {path.parent} ({exc.strerror or exc})") from None
    try:
        os.chmod(tmp, _mode_for(path))
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # disk full, the folder removed meanwhile, ...
            raise OutputError(f"{path}: writing failed ({exc.strerror or exc}); nothing written") from None
        raise


def _mode_for(path: Path) -> int:
    """The permission bits a new file at ``path`` gets: those of the file it replaces, else 0o666 minus the
    umask (what ``open(path, "w")`` gives; mkstemp's 0o600 would hide results from the user's group)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | Path, data, **kwargs) -> None:
    write_text(path, json.dumps(data, **kwargs))


def save_torch(obj, path: str | Path) -> None:
    """``torch.save`` into a temporary file, then renamed into place."""
    import torch

    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise it: a set of files put in place inside
    is either all new or (when interrupted before) all old. No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list = []
    previous = signal.signal(signal.SIGINT, lambda *a: got.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if got:
            raise KeyboardInterrupt


def publish(folder: str | Path, files: dict[str, str | bytes], remove: tuple[str, ...] = ()) -> None:
    """Put a set of result files into ``folder`` together: every file is written to a temporary
    file first, then all are renamed into place (and ``remove`` deleted) with Ctrl-C held, so the
    folder shows either the previous set or the new one, never a mix."""
    folder = Path(folder)
    temps: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            mode = "wb" if isinstance(data, bytes) else "w"
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            temps.append((tmp, folder / name))
            os.chmod(tmp, _mode_for(folder / name))
            with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": ""})) as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        with deferred_interrupt():
            for tmp, final in temps:
                os.replace(tmp, final)
            temps.clear()
            for name in remove:
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
    except OSError as exc:
        raise OutputError(f"{folder}: writing the results failed ({exc.strerror or exc})") from None
    finally:
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Hold an output folder for one run: ``out/.reparam_zoo.lock`` created exclusively, holding the
    pid, host and command. A second run into the same folder is refused while the first lives; a lock
    left by a dead process on this host is taken over (and said so)."""

    def __init__(self, folder: str | Path, command: str = ""):
        self.folder, self.command = Path(folder), command
        self.path = self.folder / LOCK_NAME
        self.taken_over: dict | None = None
        self._held = False

    def acquire(self) -> "RunLock":
        check_out_dir(self.folder)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None and self._age() < 10:  # another run is writing it right now
                    raise OutputError(f"{self.folder} is being taken by another run; give another --out") from None
                if holder is not None and (holder.get("host") != me["host"] or (
                        holder["pid"] != me["pid"] and pid_alive(holder["pid"]))):  # our own pid: a restarted container
                    raise OutputError(
                        f"{self.folder} is in use by another run (pid {holder.get('pid')} on {holder.get('host')}, "
                        f"started {holder.get('started')}: {str(holder.get('command', ''))[:80]}); wait for it, "
                        f"give another --out, or delete {self.path} if that run is gone") from None
                self.taken_over = holder or {}
                print(f"reparam-zoo: {self.folder}: taking over the lock of a run that is gone "
                      f"(pid {self.taken_over.get('pid', '?')}, started {self.taken_over.get('started', '?')})",
                      file=sys.stderr)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self._held = True
            return self
        raise OutputError(f"{self.folder}: could not take the lock file {self.path}")

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return float("inf")

    def _holder(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None
        except (OSError, ValueError):
            return None  # unreadable or half-written: treat as stale

    def release(self) -> None:
        """Remove the lock file, if it is still ours (a run that took over a lock it thought stale keeps it)."""
        if self._held:
            holder = self._holder()
            if holder is None or holder.get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self._held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["OutputError", "RunLock", "atomic_write", "check_out_dir", "check_writable", "deferred_interrupt",
           "pid_alive", "publish", "save_torch", "write_json", "write_text"]
