"""Study storage for tune and report: a journal file safe against torn lines, or an RDB URL opened with a
retry for workers that start together.

The journal: a process killed mid-append (or a full disk) leaves a last line
without its newline. Optuna's reader skips such a line, but the next append would be glued onto it, and every
later read would fail. So, under the journal's lock, a torn last line is cut off before each append and when a
study is opened, and damage inside the file (from a journal appended to before this repair existed) is taken
out on open, keeping the complete operation an append glued on. Nothing is lost: the cut bytes are appended to
<journal>.torn. Each repair prints one warning line.

An RDB: two workers that create one new study at the same moment race to create its tables and Alembic's
version row (on SQLite: "UNIQUE constraint failed: alembic_version.version_num", "table … already exists");
each start is retried a few times with a growing, jittered pause, then given up in one line.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from .errors import BenchError

TORN_SUFFIX = ".torn"
OP_START = b'{"op_code"'  # how every operation Optuna writes begins
RDB_START_ATTEMPTS = 8  # a new RDB study: tries before a race with another starting worker is an error
RDB_RETRY_SECONDS = 0.05  # first pause between those tries (doubled each time, jittered)


def open_storage(spec: str, create: bool = True):
    """An Optuna storage: an RDB URL (with heartbeats, so dead workers' trials are retried) or a journal file."""
    import optuna

    if "://" in spec:
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # optuna >= 4.9

        def rdb():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
                on_stale = ({"heartbeat_stale_trial_callback": retry(max_retry=3)} if retry else
                            {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)})
                return optuna.storages.RDBStorage(spec, heartbeat_interval=60, grace_period=180, **on_stale)

        try:
            return retry_start_race(rdb)
        except Exception as exc:  # noqa: BLE001 - driver missing, bad URL, server down: one line, whatever the cause
            raced = f" (still after {RDB_START_ATTEMPTS} tries: another worker kept creating it)" \
                if is_start_race(exc) else ""
            raise BenchError(f"cannot open storage {spec!r}: {str(exc).splitlines()[0]}{raced}; check the URL "
                             "(e.g. postgresql://user@host/db)") from None
    path = Path(spec)
    if not create and not path.is_file():
        raise BenchError(f"no study journal at {path}; pass the file that tune wrote (<out>/study.journal) or an RDB URL")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if create:
            repair(path)
        else:
            check(path)  # a reader (report) leaves the file as it is
        return JournalStorage(RepairingJournalBackend(str(path)))
    except OSError as exc:
        raise BenchError(f"cannot open study journal {path}: {exc.strerror}; choose another --storage or --out") from None


def is_start_race(exc: BaseException) -> bool:
    """Is this what a worker meets when another creates the same new RDB study's tables at the same moment?"""
    text = ""
    while exc is not None:
        text += f" {exc}"
        exc = exc.__cause__ or exc.__context__
    return any(s in text for s in ("UNIQUE constraint failed", "already exists", "database is locked",
                                   "duplicate key value"))


def retry_start_race(fn: Callable[[], Any]) -> Any:
    """fn(), tried again after a growing, jittered pause while it fails the way a start race does."""
    pause = RDB_RETRY_SECONDS
    for attempt in range(RDB_START_ATTEMPTS):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - anything else is re-raised at once
            if attempt + 1 == RDB_START_ATTEMPTS or not is_start_race(exc):
                raise
        time.sleep(pause * (1.0 + random.random()))
        pause *= 2


def _is_operation(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def split_damage(data: bytes) -> tuple[list[bytes], list[bytes], bool]:
    """(complete operations, damaged pieces, torn tail?) of a journal's bytes. A line that is no JSON object is
    damage, except for a complete operation glued onto torn bytes: the rest of the line from a later
    `{"op_code"` on, when that parses."""
    *lines, tail = data.split(b"\n")
    kept, damaged = [], []
    for line in lines:
        if _is_operation(line):
            kept.append(line)
            continue
        start = next((i for i in range(1, len(line))
                      if line.startswith(OP_START, i) and _is_operation(line[i:])), None)
        damaged.append(line if start is None else line[:start])
        if start is not None:
            kept.append(line[start:])
    if tail:
        damaged.append(tail)
    return kept, damaged, bool(tail)


def journal_lock(path: Path) -> JournalFileSymlinkLock:
    return JournalFileSymlinkLock(str(path))  # the lock Optuna's journal backend takes by default


def _keep(path: Path, pieces: list[bytes]) -> None:
    with open(str(path) + TORN_SUFFIX, "ab") as fh:
        fh.write(b"".join(piece + b"\n" for piece in pieces))
        fh.flush()
        os.fsync(fh.fileno())


def cut_torn_tail(path: Path) -> int:
    """Cut a last line that lacks its newline, after keeping it in <journal>.torn; returns its size in bytes
    (0: the journal ends whole). A crash in between only keeps the bytes twice. The caller holds the lock."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        end = size
        while end > 0:  # back to the last newline, a block at a time
            start = max(0, end - (1 << 16))
            fh.seek(start)
            newline = fh.read(end - start).rfind(b"\n")
            end = start + newline + 1 if newline >= 0 else start
            if newline >= 0:
                break
        fh.seek(end)
        _keep(path, [fh.read()])
        fh.truncate(end)
        fh.flush()
        os.fsync(fh.fileno())
        return size - end


def warn(path: Path, what: str) -> None:
    print(f"warning: study journal {path}: {what} (a writer was killed mid-line, or the disk was full); the bytes "
          f"are kept in {path}{TORN_SUFFIX}, the study is readable and appendable", file=sys.stderr)


def repair(path: Path) -> None:
    """On open, under the lock: cut a torn last line in place; rewrite a journal damaged inside (a new file,
    fsynced, then renamed over the old one)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    lock = journal_lock(path)
    lock.acquire()
    try:
        kept, damaged, torn_tail = split_damage(path.read_bytes())
        if not damaged:
            return
        if damaged == damaged[-1:] and torn_tail:
            warn(path, f"a torn last line ({cut_torn_tail(path)} bytes) was cut off")
            return
        _keep(path, damaged)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.repair")
        with open(tmp, "wb") as fh:
            fh.write(b"".join(line + b"\n" for line in kept))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        warn(path, f"{len(damaged)} damaged piece(s) were taken out")
    finally:
        lock.release()


def check(path: Path) -> None:
    """For readers that must not write (report): damage before the last line, which Optuna cannot read, is a
    one-line error; a torn last line is fine (Optuna's reader skips it)."""
    _, damaged, torn_tail = split_damage(path.read_bytes())
    if len(damaged) > int(torn_tail):
        raise BenchError(f"study journal {path} is damaged ({len(damaged)} piece(s) that are no operation); run "
                         "tune with the same --out (or --storage) once to repair it, keeping the damaged bytes")


class RepairingJournalBackend(JournalFileBackend):
    """Optuna's journal file backend whose appends first cut a torn last line, under the same lock, so that an
    append never glues onto the bytes of a writer killed mid-line."""

    def __init__(self, file_path: str):
        self.path = Path(file_path)
        self.journal_lock = journal_lock(self.path)
        super().__init__(file_path, lock_obj=self.journal_lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        path = self.path
        self.journal_lock.acquire()
        try:
            torn = cut_torn_tail(path)
            if torn:
                warn(path, f"a torn last line ({torn} bytes) was cut off before an append")
            with open(path, "ab") as fh:  # Optuna's own format: compact JSON, one operation per line
                fh.write("".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode())
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            self.journal_lock.release()
