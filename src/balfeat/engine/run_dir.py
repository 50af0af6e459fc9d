"""The run folder: which files make a run, its lock, and what a (re)start does to its files.

A run folder (``run.output_dir``) holds ``config.yaml``, ``metrics.jsonl``, ``last.pth`` and
numbered ``checkpoint_NNNN.pth`` files. One process at a time trains into it: it holds
``.balfeat.lock`` (pid and host) from before its first write until it ends. Nothing in the folder
is deleted or replaced unless the process holds that lock: :func:`claim_output_dir` is called
after :func:`acquire_lock`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from balfeat.atomic import atomic_write_bytes, atomic_write_text
from balfeat.errors import ConfigError, TrainingError

log = logging.getLogger("balfeat.engine")

#: Files that show a folder holds a run.
RUN_FILES: tuple[str, ...] = (
    "last.pth", "config.yaml", "metrics.jsonl", "best.pth", "best.json"
)  # fmt: skip
LOCK_NAME = ".balfeat.lock"


def run_files(output_dir: Path) -> list[Path]:
    """The files of a previous run in ``output_dir`` (checkpoints, config, metrics)."""
    if not output_dir.is_dir():
        return []
    found = [output_dir / n for n in RUN_FILES if (output_dir / n).exists()]
    return found + sorted(output_dir.glob("checkpoint_*.pth"))


def check_output_dir(output_dir: Path) -> None:
    """Refuse an ``output_dir`` that is a file.

    Raises:
        TrainingError: naming the path.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise TrainingError(f"run.output_dir {str(output_dir)!r} is a file; choose a folder")


def claim_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) a folder that holds another run.

    Call it holding the folder's lock (:func:`acquire_lock`), so a live run's files are never
    touched: the lock refuses the second process first.

    Raises:
        TrainingError: the folder holds a run and neither ``resume`` nor ``overwrite`` is set, or
            ``output_dir`` is a file.
    """
    check_output_dir(output_dir)
    found = run_files(output_dir)
    if not found or resume:
        return
    if not overwrite:
        names = ", ".join(p.name for p in found[:4])
        raise TrainingError(
            f"run.output_dir {str(output_dir)!r} already holds a run ({names}); pass --resume to "
            "continue it, choose a new run.output_dir, or set run.overwrite=true to replace it"
        )
    log.warning("run.overwrite=true: deleting the previous run in %s", output_dir)
    for f in found:
        f.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


def acquire_lock(output_dir: Path, key: str = "run.output_dir") -> Path:
    """Take ``output_dir/.balfeat.lock`` (pid and host), so two runs cannot share a folder.

    A lock left by a process that is gone (same host) is taken over with a warning. ``key`` is
    the setting or flag that named the folder (for the message).

    Raises:
        TrainingError: another live process holds the lock.
    """
    check_output_dir(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = output_dir / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_s, _, host = lock.read_text().strip().partition(" ")
                pid = int(pid_s)
            except (OSError, ValueError):
                pid, host = -1, ""
            if host == socket.gethostname() and pid > 0 and not _pid_alive(pid):
                log.warning(
                    "taking over the stale lock of pid %d (no longer running) in %s",
                    pid,
                    output_dir,
                )
                lock.unlink(missing_ok=True)
                continue
            if pid == os.getpid():
                return lock
            raise TrainingError(
                f"another balfeat process (pid {pid_s or '?'} on {host or '?'}) is writing into "
                f"{str(output_dir)!r} (lock file {str(lock)!r}); wait for it, use another "
                f"{key}, or delete the lock file if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        return lock
    raise TrainingError(f"could not take the lock {str(lock)!r}")  # pragma: no cover


def release_lock(lock: Path | None) -> None:
    """Remove a lock taken by :func:`acquire_lock` (if it is still ours)."""
    if lock is None:
        return
    try:
        if lock.read_text().split(" ", 1)[0] == str(os.getpid()):
            lock.unlink()
    except OSError:
        pass


@contextmanager
def folder_lock(folder: Path, key: str) -> Iterator[Path]:
    """Hold ``folder/.balfeat.lock`` while the block runs. A folder this creates is removed again
    when the block leaves it empty (a failed start leaves nothing behind).

    Raises:
        TrainingError: another live process holds the folder's lock (``key`` names the flag or
            setting that chose the folder).
    """
    created = [d for d in (folder, *folder.parents) if not d.exists()]
    lock = acquire_lock(folder, key)
    try:
        yield lock
    finally:
        release_lock(lock)
        for d in created:  # deepest first
            try:
                d.rmdir()
            except OSError:  # not empty: results were written
                break


def claim_outputs(folder: Path, names: Sequence[str], force: bool, flag: str) -> None:
    """Refuse (or, with ``force``, delete) the outputs ``names`` a previous run left in
    ``folder``: files and whole subfolders. Call it holding the folder's lock
    (:func:`folder_lock`), so a live process's outputs are never touched.

    Raises:
        ConfigError: some of ``names`` exist and ``force`` is not set; the message names them
            and ``--force``.
    """
    found = [folder / n for n in names if (folder / n).exists()]
    if not found:
        return
    if not force:
        shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found[:4])
        raise ConfigError(
            f"{flag} {str(folder)!r} already holds results ({shown}); pass --force to replace "
            f"them, or choose another {flag}"
        )
    log.warning("--force: deleting the previous results in %s", folder)
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def refuse_existing_files(paths: Mapping[str, str], force: bool) -> None:
    """Refuse output files that exist, unless ``force`` (``paths``: file -> the flag naming it).

    Raises:
        ConfigError: naming the file, its flag and ``--force``.
    """
    for path, flag in paths.items():
        if Path(path).exists() and not force:
            raise ConfigError(
                f"{flag}: {path!r} already exists; pass --force to replace it, or choose "
                "another path; nothing was written"
            )


@contextmanager
def replacing_files(paths: Iterable[str | Path], flag: str) -> Iterator[None]:
    """Hold the lock of the folder of every file in ``paths`` that exists (it is about to be
    replaced) while the block runs, so a live process's files are never replaced.

    Raises:
        TrainingError: another live process holds one of those folders' locks.
    """
    folders = sorted({Path(p).absolute().parent for p in paths if Path(p).exists()})
    with ExitStack() as stack:
        for folder in folders:
            stack.enter_context(folder_lock(folder, flag))
        yield


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of ``metrics.jsonl`` logged after ``step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def prepare_metrics(output_dir: Path, step: int) -> None:
    """A fresh run (``step`` 0) starts an empty ``metrics.jsonl``; a resumed one keeps the lines
    up to its checkpoint's ``step`` (the steps after it are logged again)."""
    metrics = output_dir / "metrics.jsonl"
    if step == 0:
        metrics.unlink(missing_ok=True)
    else:
        truncate_metrics(metrics, step)


def last_metrics(output_dir: Path) -> dict[str, object]:
    """The last record of ``output_dir/metrics.jsonl`` (``{}`` when there is none)."""
    last: dict[str, object] = {}
    metrics = output_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                continue
    return last


def clear_leftovers(output_dir: Path) -> None:
    """Tidy what a killed process left (call it holding the lock): the temporary files of an
    interrupted atomic write (``*.tmp``) are removed, and a folder whose ``last.pth`` was never
    written (a kill between the numbered checkpoint and its copy) gets it back from the newest
    numbered checkpoint."""
    if not output_dir.is_dir():
        return
    for tmp in output_dir.glob("*.tmp"):
        if tmp.is_file():
            log.warning("removing %s, left by an interrupted write", tmp)
            tmp.unlink(missing_ok=True)
    last = output_dir / "last.pth"
    numbered = sorted(output_dir.glob("checkpoint_*.pth"))
    if not last.exists() and numbered:
        log.warning("restoring %s from %s (the run stopped before writing it)", last, numbered[-1])
        atomic_write_bytes(last, lambda fh: fh.write(numbered[-1].read_bytes()))


def forget_failed_start(output_dir: Path) -> None:
    """After a fresh start failed before its first step was done: remove the ``config.yaml`` and
    ``metrics.jsonl`` it wrote, so a retry is not refused as "already holds a run". A folder
    with a checkpoint is left as it is (``--resume`` continues it)."""
    if any(output_dir.glob("checkpoint_*.pth")) or (output_dir / "last.pth").exists():
        return
    for name in ("config.yaml", "metrics.jsonl"):
        (output_dir / name).unlink(missing_ok=True)


def finished_summary(output_dir: Path, epoch: int, epochs: int, step: int) -> dict[str, Any]:
    """The summary of a run that was already finished when resumed: nothing is trained."""
    msg = (
        f"the run in {str(output_dir)!r} is already finished (epoch {epoch} of {epochs}, step "
        f"{step}); nothing to train"
    )
    log.warning(msg)
    return {
        "epochs": epoch,
        "steps": step,
        "final_loss": last_metrics(output_dir).get("loss"),
        "images_per_s": None,
        "output_dir": str(output_dir),
        "already_finished": True,
        "message": msg,
    }


#: Signals that stop training as Ctrl-C does (``kill``, ``timeout``, ``docker stop`` and a SLURM
#: time-out send SIGTERM; SLURM's ``--signal=USR1@60`` SIGUSR1).
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM) + (
    (signal.SIGUSR1,) if hasattr(signal, "SIGUSR1") else ()
)


class StopSignals:
    """While entered: Ctrl-C, SIGTERM or SIGUSR1 set :attr:`requested` instead of stopping the
    process, so the trainer finishes its step, checkpoints it, releases the lock and raises
    ``KeyboardInterrupt`` (exit status 130 from the CLI; ``--resume`` continues). A second signal
    interrupts at once. Outside the main thread signals are left alone."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[signal.Signals, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning(
            "%s: finishing the current step, then saving a checkpoint", signal.Signals(signum).name
        )

    def __enter__(self) -> StopSignals:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in STOP_SIGNALS}
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
