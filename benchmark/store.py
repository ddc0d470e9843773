"""The Parquet results store: one directory per benchmark, one file per finished run (schema: docs/store.md).

    <root>/store.json                      schema version ({"schema_version": 2})
    <root>/.lock                           held (flock) by the command that runs jobs into this store
    <root>/metrics/<run_id>[.<n>].parquet  one row per (run, iteration)
    <root>/runs/<run_id>.parquet           one row per run: status, every config value, versions, device, and
                                           the name, row count, size and sha256 of its metrics file

Every file is written to a temporary name, fsynced and renamed; a run's metrics file first, then its run row
(the switch), then a replaced run's old metrics file is deleted. A metrics file never overwrites the one a run
row names (a rerun writes `<run_id>.<n>.parquet`), so a kill at any moment leaves the old run whole, the new
run whole, or no run; a run counts as finished only once its run row exists and its metrics file matches the
row's checksum. Reading checks every finished run: a metrics file that is missing, unreadable, of another size,
checksum or row count marks the run unfinished (one line says which run and what is wrong; a rerun redoes it,
`load()` leaves it out). Files in runs/ and metrics/ that are not run files are named and ignored.

JSON columns (strings): `params`, `model_params`, `config` (the whole RunConfig), `versions`.
`load()` is the checked reader; `pandas.read_parquet(root / "runs")` (or polars, duckdb) reads the files as they
are. Schema version 1 stores (strings for times, no checksums) are read as well, their runs as "unverified
legacy" (checked for a readable metrics file that ends at the run's last iteration); `python3 -m
benchmark.store upgrade <dir>` rewrites one to version 2, and the runner refuses to add runs to a version 1 store.

Temporary files are hidden and carry this suite's own pattern (`.nintbench-<pid>@<host>.<name>.<random>.tmp`).
A process killed mid-write leaves one behind; opening the store deletes those whose pattern matches and whose
writer is gone (same host, process no longer running). Other files are never deleted.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import os
import re
import socket
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import BenchError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), so files get the usual mode
os.umask(_UMASK)
FINISHED = ("ok", "diverged")  # outcomes a rerun would only repeat; "failed" runs are retried
TMP_PREFIX = ".nintbench-"
_TMP_NAME = re.compile(r"^\.nintbench-(\d+)@([A-Za-z0-9_-]+)\..+\.tmp$")
_METRICS_NAME = re.compile(r"^(?P<run_id>[^.]+)(?:\.(?P<generation>\d+))?\.parquet$")

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

TIMESTAMP = pa.timestamp("us", tz="UTC")
RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("status", pa.string()),  # ok | diverged | failed | pruned
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
    ("params", pa.string()),  # JSON: the strategy's parameters, defaults filled in
    ("model_params", pa.string()),  # JSON
    ("config", pa.string()),  # JSON of the whole RunConfig
    ("height", pa.int64()),  # null for a failed run
    ("width", pa.int64()),
    ("device", pa.string()),
    ("gpu_name", pa.string()),
    ("execution_mode", pa.string()),  # exclusive | shared-<k> | shared-external (see docs/store.md)
    ("versions", pa.string()),  # JSON: python, torch, numpy, nint-bench, git commit, host
    ("started_at", TIMESTAMP),
    ("finished_at", TIMESTAMP),
    ("wall_seconds", pa.float64()),
    ("train_seconds", pa.float64()),
    ("ms_per_iter", pa.float64()),
    ("final_psnr", pa.float64()),
    ("final_ssim", pa.float64()),
    ("final_lpips", pa.float64()),
    ("diverged_at", pa.int64()),  # first update whose loss was NaN/Inf; null unless diverged
    ("peak_memory_mb", pa.float64()),  # peak CUDA memory allocated by the run (null on CPU and in older stores)
    ("metrics_file", pa.string()),  # its file in metrics/ (null: none, as for a failed run)
    ("metrics_rows", pa.int64()),
    ("metrics_bytes", pa.int64()),
    ("metrics_sha256", pa.string()),  # hex sha256 of the file's bytes; null in unverified legacy rows
    ("config_key", pa.string()),  # hash of `config` without the seed: equal keys are seed repeats of one set-up
    ("timing", pa.string()),  # measured (its own steps timed) | profile (priced from a timing profile) | null: older
])
V1_COLUMNS = RUNS_SCHEMA.names[:RUNS_SCHEMA.get_field_index("peak_memory_mb")]  # what every run row holds
NULLABLE_INTS = ("height", "width", "diverged_at", "metrics_rows", "metrics_bytes")  # pandas Int64 in load()


_WARNED: set[str] = set()


class StoreWarning(UserWarning):
    """A damaged or foreign file in a store: named once, and the run counts as unfinished."""


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
    return f"{TMP_PREFIX}{os.getpid()}@{_host()}.{dest.name}."


def _writer_gone(tmp: Path) -> bool:
    """Is this one of our temporary files, and is the process that wrote it gone? (Only knowable for this
    host's processes; a reused pid keeps the file, which is the safe side.)"""
    match = _TMP_NAME.match(tmp.name)
    if not match or match.group(2) != _host():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # e.g. EPERM: it exists, owned by someone else
    return False


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete this suite's temporary files whose writer is gone (see the module docstring); returns them."""
    removed = []
    for folder in (root, root / "metrics", root / "runs"):
        for tmp in folder.glob(f"{TMP_PREFIX}*.tmp"):
            try:
                if _writer_gone(tmp):
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


# Metrics files in 45 % of Parquet's default bytes, the same values: zstd, iterations delta-coded, the float series
# byte-stream-split (a 5000-iteration run: 55 KB instead of 126 KB).
METRICS_ENCODING = {"compression": "zstd", "use_dictionary": ["run_id", "suite", "image", "strategy"],
                    "column_encoding": {"iteration": "DELTA_BINARY_PACKED", "train_seconds": "BYTE_STREAM_SPLIT",
                                        "loss": "BYTE_STREAM_SPLIT", "psnr": "BYTE_STREAM_SPLIT"}}


# Run rows in 40 % of Parquet's default bytes (11 KB, not 27 KB), read back with the same values and pandas types:
# most of a one-row file is its footer, so no column statistics and no serialized Arrow schema (it holds a second
# copy of the pandas metadata). The pandas metadata alone keeps the Int64 columns, Parquet's UTC flag the times.
RUN_ENCODING = {"store_schema": False, "write_statistics": False}
COMPACT_ROWS = hasattr(pq.ParquetWriter, "add_key_value_metadata")  # pyarrow >= 17


def write_parquet(table: pa.Table, fh: Any, **parquet_options: Any) -> None:
    """Every Parquet file of a store is written here. Without the Arrow schema (store_schema=False) the table's
    pandas metadata is still kept, on its own: it is what gives pandas readers the Int64 and UTC types. pyarrow
    before 17 cannot add it, so there the Arrow schema stays (a larger file that reads the same)."""
    pandas_metadata = (table.schema.metadata or {}).get(b"pandas")
    keep_pandas = parquet_options.get("store_schema") is False and pandas_metadata is not None
    if keep_pandas and not COMPACT_ROWS:
        parquet_options, keep_pandas = {**parquet_options, "store_schema": True}, False
    with pq.ParquetWriter(fh, table.schema, **parquet_options) as writer:
        writer.write_table(table)
        if keep_pandas:
            writer.add_key_value_metadata({b"pandas": pandas_metadata})


def atomic_write_table(table: pa.Table, dest: Path, **parquet_options: Any) -> None:
    """Write `table` to `dest` via a temporary file in the same folder, fsync, then rename over `dest`."""
    _atomic_write(dest, lambda fh: write_parquet(table, fh, **parquet_options))


def is_compact_run_file(path: Path) -> bool:
    """Is this run file in RUN_ENCODING (no serialized Arrow schema) already?"""
    return b"ARROW:schema" not in (pq.read_metadata(path).metadata or {})


def atomic_write_text(text: str, dest: Path) -> None:
    """Write `text` (UTF-8) to `dest` the same crash-safe way: benchmark JSON files use it too."""
    _atomic_write(Path(dest), lambda fh: fh.write(text.encode()))


def _metrics_table(rows: pd.DataFrame) -> pa.Table:
    missing = [n for n in METRICS_SCHEMA.names if n not in rows.columns]
    if missing:
        raise ValueError(f"metrics lack columns {missing}")
    return pa.Table.from_pandas(rows[METRICS_SCHEMA.names], schema=METRICS_SCHEMA, preserve_index=False)


def _runs_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Run rows in the version 2 types: UTC timestamps, nullable integers as pandas Int64, a config_key."""
    df = rows.copy()
    for name in RUNS_SCHEMA.names:
        if name not in df.columns:
            df[name] = None
    for name in ("started_at", "finished_at"):
        df[name] = pd.to_datetime(df[name], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    for name in NULLABLE_INTS:
        df[name] = pd.array(df[name].astype(object).where(df[name].notna(), None), dtype="Int64")
    df["config_key"] = [key if isinstance(key, str) else config_key(cfg)
                        for key, cfg in zip(df["config_key"], df["config"])]
    return df[RUNS_SCHEMA.names]


def _runs_table(rows: pd.DataFrame | list[dict[str, Any]]) -> pa.Table:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    missing = [n for n in V1_COLUMNS if n not in df.columns]
    if missing:
        raise ValueError(f"rows lack columns {missing}")
    return pa.Table.from_pandas(_runs_frame(df), schema=RUNS_SCHEMA, preserve_index=False)


# --- set-ups -------------------------------------------------------------------------------------------------
def _semantic_config(config: dict[str, Any]) -> dict[str, Any]:
    # imported here: benchmark.config imports torch (through the models), and reading a store needs none
    from .config import semantic_config

    return semantic_config(config)


def config_key(config: str | dict[str, Any] | None) -> str | None:
    """The run id's hash without the seed: runs with one key differ in their seed alone (same image pixels,
    strategy, parameters, model, numerics and evaluation settings)."""
    if config is None or (not isinstance(config, (str, dict))):
        return None
    cfg = json.loads(config) if isinstance(config, str) else config
    semantic = {k: v for k, v in _semantic_config(cfg).items() if k != "seed"}
    return hashlib.sha256(json.dumps(semantic, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Settings that the report shows as columns: runs that differ in them are in different rows anyway.
SHOWN_SETTINGS = ("suite", "model", "model_params", "mt_ratio", "ratio_schedule", "interval", "lr", "lr_schedule",
                  "iters", "max_size")


def setup_differences(runs: pd.DataFrame, shown: tuple[str, ...] = SHOWN_SETTINGS) -> list[str]:
    """Runs that a table would average in one row (one label and one value of each `shown` setting) but that
    differ in anything else than seed and image: one line per such row, naming the differing config fields.
    Within one image id the image pixels (image_sha256) must agree too."""
    if runs.empty:
        return []
    configs = [_semantic_config(json.loads(c) if isinstance(c, str) else {}) for c in runs["config"]]
    keys = [json.dumps([label] + [cfg.get(s) for s in shown], sort_keys=True, default=str)
            for label, cfg in zip(runs["label"], configs)]
    groups: dict[str, list[dict[str, Any]]] = {}
    for key, cfg in zip(keys, configs):
        groups.setdefault(key, []).append(cfg)
    lines = []
    for key, cfgs in groups.items():
        label = json.loads(key)[0]
        ignored = {"seed", "image", "image_sha256", *shown}
        names = sorted({k for c in cfgs for k in c} - ignored)
        differ = [k for k in names if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in cfgs}) > 1]
        pixels: dict[str, set] = {}
        for c in cfgs:
            pixels.setdefault(c.get("image"), set()).add(c.get("image_sha256"))
        differ += [f"image_sha256 of {img}" for img, digests in sorted(pixels.items(), key=str) if len(digests) > 1]
        if differ:
            lines.append(f"{label}: {len(cfgs)} runs differ in {', '.join(differ)}")
    return lines


def check_same_setup(runs: pd.DataFrame, shown: tuple[str, ...] = SHOWN_SETTINGS) -> None:
    """BenchError if runs that would share a table row differ in anything but seed and image (see
    setup_differences); split such runs by their `config_key` per image instead of averaging them."""
    lines = setup_differences(runs, shown)
    if lines:
        raise BenchError("runs that would be averaged in one row differ in more than their seed: "
                         + "; ".join(lines) + "; report each set-up from its own results directory")


# --- reading and checking ------------------------------------------------------------------------------------
def _read_run_row(path: Path) -> tuple[pd.DataFrame | None, str | None, bool]:
    """(row, problem, foreign): a readable run row, or what is wrong; foreign: a Parquet file of another schema."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        size = path.stat().st_size if path.exists() else 0
        what = "is empty (0 bytes)" if size == 0 else f"is unreadable ({_reason(exc)})"
        return None, what, False
    missing = [n for n in V1_COLUMNS if n not in table.column_names]
    if missing:
        return None, f"is not a run file (lacks {', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})", True
    df = table.to_pandas()
    if len(df) != 1 or df["run_id"].iloc[0] != path.stem:
        return None, f"is not a run file of this store (holds {len(df)} rows, run id {df['run_id'].iloc[0] if len(df) else None!r})", True
    return df, None, False


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def _metrics_name(row: pd.Series) -> str:
    name = row.get("metrics_file")
    return name if isinstance(name, str) and name else f"{row['run_id']}.parquet"


def _metrics_problem(path: Path, row: pd.Series) -> str | None:
    """What is wrong with a finished run's metrics file, or None. Rows with a checksum are checked by size,
    sha256 and row count; legacy rows (no checksum) by a readable file of the metrics schema that belongs to the
    run and ends where the run ended."""
    rel = f"metrics/{path.name}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"its metrics file {rel} is missing"
    except OSError as exc:
        return f"its metrics file {rel} is unreadable ({exc.strerror})"
    if not data:
        return f"its metrics file {rel} is empty (0 bytes)"
    digest = row.get("metrics_sha256")
    if isinstance(digest, str) and digest:
        if pd.notna(row.get("metrics_bytes")) and len(data) != int(row["metrics_bytes"]):
            return f"its metrics file {rel} has {len(data)} bytes, the run row says {int(row['metrics_bytes'])}"
        if hashlib.sha256(data).hexdigest() != digest:
            return f"its metrics file {rel} does not match the run row's sha256 (changed or damaged)"
        try:
            rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            return f"its metrics file {rel} is unreadable ({_reason(exc)})"
        if pd.notna(row.get("metrics_rows")) and rows != int(row["metrics_rows"]):
            return f"its metrics file {rel} holds {rows} rows, the run row says {int(row['metrics_rows'])}"
        return None
    try:
        table = pq.read_table(io.BytesIO(data), columns=["run_id", "iteration"])
    except (OSError, pa.ArrowException, KeyError) as exc:
        return f"its metrics file {rel} is unreadable ({_reason(exc)})"
    iterations = table.column("iteration").to_pandas()
    if set(table.column("run_id").to_pylist()) != {row["run_id"]}:
        return f"its metrics file {rel} holds rows of another run"
    last = int(iterations.max()) if len(iterations) else -1
    if len(iterations) != last + 1 or (row["status"] == "ok" and last != int(row["iters"])):
        return (f"its metrics file {rel} holds {len(iterations)} rows up to iteration {last}, the run has "
                f"{int(row['iters'])} iterations (truncated)")
    return None


@dataclass
class Scan:
    """What a store's files hold, checked. `problems` and `foreign` are one-line descriptions."""

    runs: pd.DataFrame  # every readable run row, any status, in the version 2 types
    damaged: dict[str, str] = field(default_factory=dict)  # run id -> what is wrong (the run is unfinished)
    foreign: list[str] = field(default_factory=list)  # files that are not run files: named and ignored
    orphans: list[str] = field(default_factory=list)  # run ids with a metrics file but no run row
    superseded: list[Path] = field(default_factory=list)  # old metrics files of a replaced run

    @property
    def finished(self) -> pd.DataFrame:
        ok = self.runs["status"].isin(FINISHED) & ~self.runs["run_id"].isin(self.damaged)
        return self.runs[ok].reset_index(drop=True)

    def messages(self, root: Path) -> list[str]:
        return ([f"{root}: run {run_id} is counted as unfinished: {what}" for run_id, what in self.damaged.items()]
                + [f"{root}: ignored {what}" for what in self.foreign])


class Store:
    """A results directory. Opening it for writing creates it (or checks that it is writable and of this schema
    version) and removes this suite's temporary files left by dead writers; `readonly=True` reads an existing
    store of any readable version and never writes."""

    def __init__(self, root: str | os.PathLike, readonly: bool = False):
        self.root = Path(root)
        self.readonly = readonly
        if readonly:
            if not (self.root / "runs").is_dir():
                raise BenchError(f"{self.root} is not a results directory (no runs/ folder); run the benchmark "
                                 f"with --out {self.root}")
            self.version = self._read_version()
            return
        if self.root.exists() and not self.root.is_dir():
            raise BenchError(f"output directory {self.root} is a file; choose another --out")
        try:
            for sub in ("metrics", "runs"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"cannot create output directory {self.root}: {exc.strerror}; choose another --out") from None
        if not all(os.access(self.root / sub, os.W_OK) for sub in ("", "metrics", "runs")):
            raise BenchError(f"output directory {self.root} is not writable; choose another --out or fix its permissions")
        self.version = self._read_version()
        if self.version is None:
            self._create_marker()
        elif self.version != SCHEMA_VERSION:
            raise BenchError(f"{self.root} is a version {self.version} store; upgrade it first with "
                             f"`python3 -m benchmark.store upgrade {self.root}` (keeps every run, adds checksums)")
        remove_stale_temps(self.root)

    def _read_version(self) -> int | None:
        marker = self.root / "store.json"
        if not marker.exists():
            if (self.root / "runs").is_dir() and any((self.root / "runs").glob("*.parquet")):
                raise BenchError(f"{self.root} holds runs but no store.json; it is not a nint-bench results directory")
            return None
        try:
            version = json.loads(marker.read_text()).get("schema_version")
        except (OSError, ValueError, AttributeError):
            raise BenchError(f"{marker} is unreadable or not a nint-bench store marker; use a new --out "
                             "directory") from None
        if version not in READABLE_VERSIONS:
            raise BenchError(
                f"{self.root} holds results of schema version {version}, this nint-bench reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}; use a new --out directory (or re-create these results)"
            )
        return version

    def _create_marker(self) -> None:
        marker = self.root / "store.json"
        try:
            atomic_write_text(json.dumps({"schema_version": SCHEMA_VERSION}) + "\n", marker)
        except OSError as exc:
            raise BenchError(f"cannot write {marker}: {exc.strerror}; choose another --out") from None
        self.version = SCHEMA_VERSION

    def _writable(self) -> None:
        if self.readonly:
            raise BenchError(f"{self.root} was opened read-only")

    # --- writing ----------------------------------------------------------------------------------------------
    def _new_metrics_path(self, run_id: str) -> Path:
        """A metrics file name that no file has: `<run_id>.parquet`, else `<run_id>.<n>.parquet`."""
        folder, n = self.root / "metrics", 0
        while True:
            path = folder / (f"{run_id}.parquet" if n == 0 else f"{run_id}.{n}.parquet")
            if not path.exists():
                return path
            n += 1

    def _current_metrics(self, run_id: str) -> Path | None:
        """The metrics file that the stored run row of `run_id` names (None: no readable row, or a failed run)."""
        row, _, _ = _read_run_row(self.root / "runs" / f"{run_id}.parquet")
        if row is None or row["status"].iloc[0] not in FINISHED:
            return None
        return self.root / "metrics" / _metrics_name(row.iloc[0])

    def write_run(self, metrics: pd.DataFrame, run_row: dict[str, Any]) -> None:
        """Store a finished run: its metrics under a new name, then the run row (the switch), then delete the
        metrics file that a previous row of this run named."""
        self._writable()
        run_id = run_row["run_id"]
        old = self._current_metrics(run_id)
        metrics_file = self._new_metrics_path(run_id)
        atomic_write_table(_metrics_table(metrics), metrics_file, **METRICS_ENCODING)
        try:
            data = metrics_file.read_bytes()
            row = {**run_row, "metrics_file": metrics_file.name, "metrics_rows": len(metrics),
                   "metrics_bytes": len(data), "metrics_sha256": hashlib.sha256(data).hexdigest()}
            atomic_write_table(_runs_table([row]), self.root / "runs" / f"{run_id}.parquet", **RUN_ENCODING)
        except BaseException:
            metrics_file.unlink(missing_ok=True)  # the old run (or none) stays as it was
            raise
        for path in self._metrics_files_of(run_id):  # the one a previous row named, and orphans of a killed writer
            if path != metrics_file:
                path.unlink(missing_ok=True)

    def _metrics_files_of(self, run_id: str) -> list[Path]:
        """Every metrics file named after this run (`<run_id>.parquet`, `<run_id>.<n>.parquet`)."""
        return [p for p in (self.root / "metrics").glob(f"{run_id}*.parquet")
                if (m := _METRICS_NAME.match(p.name)) and m.group("run_id") == run_id]

    def write_failure(self, run_row: dict[str, Any]) -> None:
        """Store a failed (or pruned) run: its run row, then delete the metrics file an earlier row named."""
        self._writable()
        run_id = run_row["run_id"]
        old = self._current_metrics(run_id)
        row = {**run_row, "metrics_file": None, "metrics_rows": None, "metrics_bytes": None, "metrics_sha256": None}
        atomic_write_table(_runs_table([row]), self.root / "runs" / f"{run_id}.parquet", **RUN_ENCODING)
        if old is not None:
            old.unlink(missing_ok=True)

    def tidy(self) -> list[Path]:
        """Delete the old metrics files of replaced runs (a kill between the switch and the deletion leaves
        one): only files that the metrics schema reads and that hold rows of their run alone. Call it only
        while no other process writes to the store (the runner holds the store's lock)."""
        self._writable()
        removed = []
        for path in self.scan().superseded:
            try:
                ids = set(pq.read_table(path, columns=["run_id"]).column("run_id").to_pylist())
            except (OSError, pa.ArrowException, KeyError):
                continue
            if ids == {_METRICS_NAME.match(path.name).group("run_id")}:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    # --- reading ----------------------------------------------------------------------------------------------
    def scan(self, verify: bool = True) -> Scan:
        """Read every run row and check the metrics file of each finished run (see the module docstring)."""
        frames, damaged, foreign = [], {}, []
        for path in sorted((self.root / "runs").glob("*.parquet")):
            row, problem, is_foreign = _read_run_row(path)
            if row is not None:
                frames.append(row)
            elif is_foreign:
                foreign.append(f"runs/{path.name}: {problem}")
            else:
                damaged[path.stem] = f"its run row runs/{path.name} {problem}"
        runs = (_runs_frame(pd.concat(frames, ignore_index=True)) if frames
                else RUNS_SCHEMA.empty_table().to_pandas())
        named = {}
        for _, row in runs.iterrows():
            if row["status"] in FINISHED:
                named[_metrics_name(row)] = row
                if verify:
                    problem = _metrics_problem(self.root / "metrics" / _metrics_name(row), row)
                    if problem:
                        damaged[row["run_id"]] = problem
        known = set(runs["run_id"])
        orphans, superseded = [], []
        for path in sorted((self.root / "metrics").glob("*.parquet")):
            if path.name in named:
                continue
            match = _METRICS_NAME.match(path.name)
            if match and match.group("run_id") in known:
                superseded.append(path)
                continue
            try:
                names = pq.read_schema(path).names
            except (OSError, pa.ArrowException) as exc:
                foreign.append(f"metrics/{path.name}: not a metrics file ({_reason(exc)})")
                continue
            if not set(METRICS_SCHEMA.names) <= set(names) or not match:
                foreign.append(f"metrics/{path.name}: not a metrics file (other columns or name)")
            elif match.group("run_id") not in damaged:
                orphans.append(match.group("run_id"))
        return Scan(runs, damaged, foreign, sorted(set(orphans)), superseded)

    def report_problems(self, scan: Scan | None = None) -> Scan:
        """scan(), with one warning (StoreWarning, one line) per damaged run and per foreign file."""
        scan = scan or self.scan()
        for line in scan.messages(self.root):
            if line not in _WARNED:  # once per process: the runner and the summary after it read the same store
                _WARNED.add(line)
                warnings.warn(line, StoreWarning, stacklevel=2)
        return scan

    def finished_ids(self) -> set[str]:
        return set(self.scan().finished["run_id"])

    def runs(self) -> pd.DataFrame:
        """Every readable run row, any status (damaged runs included; see scan() for which are)."""
        return self.scan(verify=False).runs

    def metrics(self, run_ids: set[str] | None = None, scan: Scan | None = None) -> pd.DataFrame:
        """The metrics of these runs (default: every finished one): the file each run row names, or for a run
        without a row its orphan file. Unreadable files are left out."""
        scan = scan or self.scan(verify=False)
        rows = scan.runs[scan.runs["status"].isin(FINISHED)]
        files = {r["run_id"]: self.root / "metrics" / _metrics_name(r) for _, r in rows.iterrows()}
        files.update({o: self.root / "metrics" / f"{o}.parquet" for o in scan.orphans if o not in files})
        wanted = sorted(files if run_ids is None else set(files) & set(run_ids))
        tables = []
        for run_id in wanted:
            try:
                tables.append(pq.read_table(files[run_id], columns=METRICS_SCHEMA.names).cast(METRICS_SCHEMA))
            except (OSError, pa.ArrowException, KeyError):
                continue
        if not tables:
            return METRICS_SCHEMA.empty_table().to_pandas()
        return pa.concat_tables(tables).to_pandas()

    def incomplete(self, scan: Scan | None = None) -> list[str]:
        """Run ids not finished: metrics but no run row (killed mid-write), a failed or pruned run, or a run
        whose files are damaged."""
        scan = scan or self.scan()
        failed = set(scan.runs.loc[~scan.runs["status"].isin(FINISHED), "run_id"])
        return sorted(set(scan.orphans) | failed | set(scan.damaged))


def load(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, metrics) of the finished runs whose files check out: what reports read. Opens the store read-only
    and warns once (one line) per damaged run or foreign file."""
    store = Store(root, readonly=True)
    scan = store.report_problems()
    runs = scan.finished
    return runs, store.metrics(set(runs["run_id"]), scan)


# --- upgrade -------------------------------------------------------------------------------------------------
def upgrade(root: str | os.PathLike) -> tuple[int, list[str]]:
    """Rewrite a version 1 store as version 2: every run row in the new types, with the checksum of its metrics
    file as it is now (a finished run whose metrics file fails the legacy check keeps no checksum, so it stays
    flagged). Each row is replaced atomically and the marker last, so an interrupted upgrade is finished by
    running it again. Returns (rows rewritten, one line per run left without checksum)."""
    store = Store(root, readonly=True)
    if store.version == SCHEMA_VERSION:
        return 0, []
    if store.version is None:
        raise BenchError(f"{store.root} has no store.json; it is not a nint-bench results directory")
    scan = store.scan()
    for line in scan.foreign:
        print(f"{store.root}: ignored {line}", file=sys.stderr)
    unchecked, count = [], 0
    for _, row in scan.runs.iterrows():
        record = row.to_dict()
        if row["status"] in FINISHED and not (isinstance(row["metrics_sha256"], str) and row["metrics_sha256"]):
            path = store.root / "metrics" / _metrics_name(row)
            if row["run_id"] in scan.damaged:
                unchecked.append(f"run {row['run_id']}: {scan.damaged[row['run_id']]}; left without checksum")
            else:
                data = path.read_bytes()
                record.update(metrics_file=path.name, metrics_rows=pq.ParquetFile(io.BytesIO(data)).metadata.num_rows,
                              metrics_bytes=len(data), metrics_sha256=hashlib.sha256(data).hexdigest())
        try:
            atomic_write_table(_runs_table([record]), store.root / "runs" / f"{row['run_id']}.parquet", **RUN_ENCODING)
        except OSError as exc:
            raise BenchError(f"cannot rewrite {store.root / 'runs'}: {exc.strerror}; nothing is lost, rerun the "
                             "upgrade once it is writable") from None
        count += 1
    atomic_write_text(json.dumps({"schema_version": SCHEMA_VERSION}) + "\n", store.root / "store.json")
    return count, unchecked


def is_compact(path: Path) -> bool:
    """Is this metrics file in METRICS_ENCODING (zstd) already?"""
    meta = pq.ParquetFile(path).metadata
    return meta.num_row_groups > 0 and meta.row_group(0).column(0).compression == "ZSTD"


def compact(root: str | os.PathLike) -> tuple[int, int, int]:
    """Rewrite a store's files in the encodings that new runs get (METRICS_ENCODING, RUN_ENCODING), the values
    and types unchanged (checked in memory before anything is written). A run whose metrics file is rewritten
    goes through write_run: the new file comes first, then its run row, then the old file goes; a run whose
    metrics are compact already gets only its row rewritten, atomically. An interrupted compaction is finished
    by running it again. Returns (runs rewritten, their bytes before, after)."""
    store = Store(root)
    scan = store.scan()
    if scan.damaged:
        raise BenchError(f"{store.root} has {len(scan.damaged)} damaged run(s) (`python3 -m benchmark.store check "
                         f"{store.root}` names them); compact a store whose every run verifies")
    count = before = after = 0
    for _, row in scan.runs.iterrows():
        run_file = store.root / "runs" / f"{row['run_id']}.parquet"
        finished = row["status"] in FINISHED
        path = store.root / "metrics" / _metrics_name(row) if finished else None
        old_metrics = path is not None and not is_compact(path)
        if not old_metrics and (is_compact_run_file(run_file) or not COMPACT_ROWS):
            continue
        size = run_file.stat().st_size + (path.stat().st_size if path is not None else 0)
        if old_metrics:
            metrics = pq.read_table(path, columns=METRICS_SCHEMA.names).cast(METRICS_SCHEMA).to_pandas()
            encoded = io.BytesIO()
            write_parquet(_metrics_table(metrics), encoded, **METRICS_ENCODING)
            if not pq.read_table(io.BytesIO(encoded.getvalue())).cast(METRICS_SCHEMA).to_pandas().equals(metrics):
                raise BenchError(f"run {row['run_id']}: its metrics would not read back unchanged; nothing was written")
            store.write_run(metrics, row.to_dict())
        else:
            table = _runs_table([row.to_dict()])
            encoded = io.BytesIO()
            write_parquet(table, encoded, **RUN_ENCODING)
            old, new = pd.read_parquet(run_file), pd.read_parquet(io.BytesIO(encoded.getvalue()))
            if not (new.dtypes.equals(old.dtypes) and new.equals(old)):
                raise BenchError(f"run {row['run_id']}: its run row would not read back unchanged; nothing was written")
            atomic_write_table(table, run_file, **RUN_ENCODING)
        rewritten, _, _ = _read_run_row(run_file)
        count, before = count + 1, before + size
        after += run_file.stat().st_size + (int(rewritten["metrics_bytes"].iloc[0]) if finished else 0)
    return count, before, after


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmark.store", description="Store maintenance.")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="rewrite a version 1 store (or several) as version 2, in place")
    up.add_argument("dirs", nargs="+")
    check = sub.add_parser("check", help="verify a store; one line per damaged run or foreign file")
    check.add_argument("dirs", nargs="+")
    comp = sub.add_parser("compact", help="rewrite the metrics files and run rows of a store (or several) in the "
                                          "compact encodings that new runs get, in place, the values unchanged")
    comp.add_argument("dirs", nargs="+")
    args = p.parse_args(argv)
    try:
        bad = 0
        for d in args.dirs:
            if args.command == "compact":
                count, before, after = compact(d)
                print(f"{d}: {count} runs rewritten" + (f", {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB"
                                                                 if count else " (all compact already)"))
            elif args.command == "upgrade":
                count, unchecked = upgrade(d)
                for line in unchecked:
                    print(f"{d}: {line}", file=sys.stderr)
                print(f"{d}: {'already version 2' if not count and not unchecked else f'{count} run rows rewritten as version 2'}")
            else:
                store = Store(d, readonly=True)
                scan = store.scan()
                for line in scan.messages(store.root):
                    print(line, file=sys.stderr)
                bad += len(scan.damaged)
                print(f"{d}: version {store.version}, {len(scan.finished)} finished runs verified, {len(scan.damaged)} "
                      f"damaged, {len(scan.foreign)} foreign files, {len(scan.orphans)} orphan metrics files")
        return 1 if bad else 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
