"""The Parquet results store: one directory per benchmark, one file per finished run.

    <root>/store.json               schema version
    <root>/metrics/<run_id>.parquet one row per (run, iteration)
    <root>/runs/<run_id>.parquet    one row per run: status, every config value, versions, device

Every file is written to a temporary name, fsynced and renamed, metrics first and the run row last: a run
counts as finished only once its run row exists, so a killed job never looks finished and workers never write
the same file. `pandas.read_parquet(root / "metrics")` reads all metrics; `load()` joins and checks.

Temporary files are hidden (`.<pid>@<host>.<name>.<random>.tmp`), so no reader ever sees them. A process killed
mid-write leaves one behind: opening the store deletes the temporary files whose writer is gone (same host,
process no longer running) or that are older than STALE_TMP_SECONDS (any host); a live writer's file is kept.
If the run row of a run cannot be written, its metrics file is removed again, so a failed write leaves no
orphan; a kill between the two writes does leave one, which `Store.incomplete()` lists and a rerun redoes.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import BenchError

SCHEMA_VERSION = 1
STALE_TMP_SECONDS = 3600  # a temporary file this old is left over from a dead writer, whatever its host
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), so files get the usual mode
os.umask(_UMASK)
FINISHED = ("ok", "diverged")  # outcomes a rerun would only repeat; "failed" runs are retried

METRICS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("suite", pa.string()),
    ("image", pa.string()),
    ("strategy", pa.string()),
    ("seed", pa.int64()),
    ("iteration", pa.int64()),  # the model after this many updates
    ("train_seconds", pa.float64()),  # cumulative training time of those updates (evaluation excluded)
    ("loss", pa.float64()),  # training loss of update `iteration` (null at 0)
    ("psnr", pa.float64()),
    ("ssim", pa.float64()),  # null where not evaluated
    ("lpips", pa.float64()),  # null where not evaluated or no backbone
    ("sampled_fraction", pa.float64()),  # pixels trained on in update `iteration` / N (null at 0)
])

RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("status", pa.string()),  # ok | diverged | failed
    ("error", pa.string()),
    ("suite", pa.string()),
    ("image", pa.string()),
    ("strategy", pa.string()),
    ("label", pa.string()),  # strategy[k=v,...] with non-default parameters
    ("seed", pa.int64()),
    ("iters", pa.int64()),
    ("mt_ratio", pa.float64()),
    ("ratio_schedule", pa.string()),
    ("interval", pa.string()),
    ("model", pa.string()),
    ("lr", pa.float64()),
    ("lr_schedule", pa.string()),
    ("params", pa.string()),  # JSON
    ("model_params", pa.string()),  # JSON
    ("config", pa.string()),  # JSON of the whole RunConfig
    ("height", pa.int64()),
    ("width", pa.int64()),
    ("device", pa.string()),
    ("gpu_name", pa.string()),
    ("execution_mode", pa.string()),  # exclusive: the run had its device to itself
    ("versions", pa.string()),  # JSON: python, torch, numpy, nint-bench, git commit
    ("started_at", pa.string()),
    ("finished_at", pa.string()),
    ("wall_seconds", pa.float64()),
    ("train_seconds", pa.float64()),
    ("ms_per_iter", pa.float64()),
    ("final_psnr", pa.float64()),
    ("final_ssim", pa.float64()),
    ("final_lpips", pa.float64()),
    ("diverged_at", pa.int64()),
    ("peak_memory_mb", pa.float64()),  # peak CUDA memory allocated by the run (null on CPU and in older stores)
    ("timing", pa.string()),  # measured (its own steps timed) | profile (priced from a timing profile) | null: older
])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _host() -> str:
    return "".join(c if c.isalnum() or c == "-" else "_" for c in socket.gethostname()) or "host"


def _tmp_prefix(dest: Path) -> str:
    return f".{os.getpid()}@{_host()}.{dest.name}."


def _writer_gone(tmp: Path) -> bool:
    """Is the process that wrote this temporary file gone? (Only knowable for this host's processes.)"""
    tag = tmp.name[1:].split(".", 1)[0]
    pid, _, host = tag.partition("@")
    if host != _host() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # e.g. EPERM: it exists, owned by someone else
    return False


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete temporary files left by killed writers (see the module docstring); returns what was removed."""
    removed = []
    now = time.time()
    for folder in (root, root / "metrics", root / "runs"):
        for tmp in folder.glob(".*.tmp"):
            try:
                if _writer_gone(tmp) or now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()
                    removed.append(tmp)
            except FileNotFoundError:
                pass  # its writer renamed or removed it meanwhile
    return removed


def _no_space(dest: Path) -> BenchError:
    return BenchError(
        f"no space left on the device while writing {dest}; free some space and rerun the same "
        "command: finished runs are kept"
    )


def _atomic_write(dest: Path, write) -> None:
    """`write(fh)` into a temporary file in dest's folder, fsync, then rename over `dest`."""
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(dest), suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are as readable as any file here
            except OSError:
                pass  # a filesystem without modes: keep what it gave
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            raise _no_space(dest) from None
        raise


def atomic_write_table(table: pa.Table, dest: Path) -> None:
    """Write `table` to `dest` via a temporary file in the same folder, fsync, then rename over `dest`."""
    _atomic_write(dest, lambda fh: pq.write_table(table, fh))


def atomic_write_text(text: str, dest: Path) -> None:
    """Write `text` (UTF-8) to `dest` the same crash-safe way: benchmark JSON files use it too."""
    _atomic_write(Path(dest), lambda fh: fh.write(text.encode()))


def _table(rows: pd.DataFrame | list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    missing = [n for n in schema.names if n not in df.columns]
    if missing:
        raise ValueError(f"rows lack columns {missing}")
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)


class Store:
    """A results directory. Opening it checks that it is writable and of this schema version."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            for sub in ("metrics", "runs"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"cannot create output directory {self.root}: {exc.strerror}; choose another --out") from None
        if not all(os.access(self.root / sub, os.W_OK) for sub in ("", "metrics", "runs")):
            raise BenchError(f"output directory {self.root} is not writable; choose another --out or fix its permissions")
        self._check_version()
        remove_stale_temps(self.root)

    def _check_version(self) -> None:
        marker = self.root / "store.json"
        if marker.exists():
            try:
                version = json.loads(marker.read_text()).get("schema_version")
            except (OSError, ValueError, AttributeError):
                raise BenchError(f"{marker} is unreadable or not a nint-bench store marker; use a new --out "
                                 "directory") from None
            if version != SCHEMA_VERSION:
                raise BenchError(
                    f"{self.root} holds results of schema version {version}, this nint-bench writes version "
                    f"{SCHEMA_VERSION}; use a new --out directory (or re-create these results)"
                )
            return
        if any((self.root / "runs").iterdir()):
            raise BenchError(f"{self.root} holds runs but no store.json; it is not a nint-bench results directory")
        blob = (json.dumps({"schema_version": SCHEMA_VERSION}) + "\n").encode()
        try:
            _atomic_write(marker, lambda fh: fh.write(blob))
        except OSError as exc:
            raise BenchError(f"cannot write {marker}: {exc.strerror}; choose another --out") from None

    # --- writing ----------------------------------------------------------------------------------------------
    def write_run(self, metrics: pd.DataFrame, run_row: dict[str, Any]) -> None:
        run_id = run_row["run_id"]
        metrics_file = self.root / "metrics" / f"{run_id}.parquet"
        atomic_write_table(_table(metrics, METRICS_SCHEMA), metrics_file)
        try:
            atomic_write_table(_table([run_row], RUNS_SCHEMA), self.root / "runs" / f"{run_id}.parquet")
        except BaseException:
            metrics_file.unlink(missing_ok=True)  # no orphan: the run is simply not finished
            raise

    def write_failure(self, run_row: dict[str, Any]) -> None:
        (self.root / "metrics" / f"{run_row['run_id']}.parquet").unlink(missing_ok=True)
        atomic_write_table(_table([run_row], RUNS_SCHEMA), self.root / "runs" / f"{run_row['run_id']}.parquet")

    # --- reading ----------------------------------------------------------------------------------------------
    def finished_ids(self) -> set[str]:
        runs = self.runs()
        return set(runs.loc[runs["status"].isin(FINISHED), "run_id"]) if len(runs) else set()

    def runs(self) -> pd.DataFrame:
        files = sorted((self.root / "runs").glob("*.parquet"))
        if not files:
            return RUNS_SCHEMA.empty_table().to_pandas()
        return pd.concat([pq.read_table(f, schema=RUNS_SCHEMA).to_pandas() for f in files], ignore_index=True)

    def metrics(self, run_ids: set[str] | None = None) -> pd.DataFrame:
        files = sorted((self.root / "metrics").glob("*.parquet"))
        if run_ids is not None:
            files = [f for f in files if f.stem in run_ids]
        if not files:
            return METRICS_SCHEMA.empty_table().to_pandas()
        return pa.concat_tables([pq.read_table(f, schema=METRICS_SCHEMA) for f in files]).to_pandas()

    def incomplete(self) -> list[str]:
        """Run ids that have metrics but no run row (killed mid-write), or whose run failed."""
        runs = self.runs()
        known = set(runs["run_id"])
        orphans = {f.stem for f in (self.root / "metrics").glob("*.parquet")} - known
        failed = set(runs.loc[~runs["status"].isin(FINISHED), "run_id"])
        return sorted(orphans | failed)


def load(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, metrics) of finished runs only: what reports read."""
    root = Path(root)
    if not (root / "runs").is_dir():
        raise BenchError(f"{root} is not a results directory (no runs/ folder); run the benchmark with --out {root}")
    store = Store(root)
    runs = store.runs()
    runs = runs[runs["status"].isin(FINISHED)].reset_index(drop=True)
    return runs, store.metrics(set(runs["run_id"]))
