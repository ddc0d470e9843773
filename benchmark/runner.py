"""Expand a grid of runs, skip the finished ones, run the rest across devices, record every outcome.

One joblib worker per device (each job takes a device token from a shared queue, so no two jobs of a worker
pool share a GPU unless `workers_per_device` > 1 asks for it). A job that raises is recorded as `failed` with
its error and the others go on; a finished run is never run again (resume = rerun the same command).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch

import datasets
from strategies import resolve

from . import __version__
from . import memory
from .config import LPIPS_NORMS, RunConfig
from .errors import BenchError
from .fit import CALLBACK_EVERY, fit, ms_per_iter
from .metrics import make_lpips
from .interrupt import signals_deferred
from .store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Job:
    cfg: RunConfig
    ref: datasets.ImageRef
    convert_rgb: bool = False


# --- grid ----------------------------------------------------------------------------------------------------
_SELECTOR = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[(.*)\])?\s*$")


def parse_value(text: str) -> Any:
    """'0.5' -> 0.5, '10' -> 10, 'true' -> True, 'none' -> None, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside brackets: 'nint[xi=0.5,alpha=5],int' -> ['nint[xi=0.5,alpha=5]', 'int']."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_strategies(text: str) -> list[tuple[str, dict[str, Any]]]:
    """'nint[xi=0.5|0.7,alpha=10],uniform' -> every (name, params); '|' lists values to sweep."""
    out = []
    for sel in split_top(text):
        m = _SELECTOR.match(sel)
        if not m:
            raise BenchError(f"cannot parse strategy selector {sel!r}; write name or name[key=value,...]")
        name, body = m.group(1), m.group(2)
        grid: dict[str, list[Any]] = {}
        for item in split_top(body or ""):
            if "=" not in item:
                raise BenchError(f"strategy parameter {item!r} in {sel!r} needs the form key=value")
            key, values = item.split("=", 1)
            grid[key.strip()] = [parse_value(v) for v in values.split("|")]
        for combo in product(*grid.values()):
            params = dict(zip(grid, combo))
            resolve(name, params)  # unknown names/parameters fail here, before anything runs
            out.append((name, params))
    return out


def csv_list(text: str | None) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def parse_seeds(text: str) -> list[int]:
    """'0,1' -> [0, 1]; anything else is a one-line BenchError."""
    try:
        seeds = [int(t) for t in csv_list(text)]
    except ValueError:
        raise BenchError(f"--seeds must be comma-separated whole numbers, got {text!r}") from None
    if not seeds:
        raise BenchError(f"--seeds {text!r} names no seed; e.g. --seeds 0,1")
    return seeds


def parse_model_params(items: list[str]) -> dict[str, Any]:
    """Repeated --model-param key=value -> {key: value}."""
    params = {}
    for item in items:
        if "=" not in item:
            raise BenchError(f"--model-param {item!r} needs the form key=value")
        key, value = item.split("=", 1)
        params[key.strip()] = parse_value(value)
    return params


def select_images(suite: str, data_dir: str | None, images: str | None, max_images: int) -> list[datasets.ImageRef]:
    """The suite's images, filtered by --images (ids) and --max-images (first N; 0 keeps all)."""
    wanted = csv_list(images) if images else None
    refs = datasets.suite_images(suite, data_dir, only=wanted)
    if wanted:
        missing = sorted(set(wanted) - {r.id for r in refs})
        if missing:
            raise BenchError(f"suite {suite!r} has no image(s) {', '.join(missing)}; it has {', '.join(r.id for r in refs)}")
        refs = [r for r in refs if r.id in wanted]
    if max_images < 0:
        raise BenchError(f"--max-images must be >= 0 (0 keeps every image), got {max_images}")
    return refs[:max_images] if max_images else refs


def build_jobs(refs: list[datasets.ImageRef], strategies: list[tuple[str, dict[str, Any]]], seeds: list[int],
               convert_rgb: bool = False, max_pixels: int = datasets.MAX_PIXELS, **common: Any) -> list[Job]:
    """Every distinct (image × strategy × seed). Images are read and checked here, and every run is checked
    against the memory available, so bad input stops the run before any GPU work, with a one-line error.
    Entries that name one run twice (a seed or strategy given twice) are kept once, with a note."""
    from .models import weight_bytes

    datasets.check_max_pixels(max_pixels)
    jobs = []
    device_have, host_have = memory.available_device_bytes(), memory.available_host_bytes()
    weights: dict[str, tuple[int, dict[str, Any]]] = {}
    for ref in refs:
        ref = dataclasses.replace(ref, max_size=common.get("max_size", 0), max_pixels=max_pixels)
        img = datasets.resize_longest(ref.read(convert_rgb), common.get("max_size", 0))
        digest = datasets.pixels_sha256(img)
        for (name, params), seed in product(strategies, seeds):
            _, full = resolve(name, params)
            cfg = RunConfig(image=ref.id, image_sha256=digest, strategy=name, params=full, seed=seed, **common)
            key = json.dumps([cfg.model, cfg.model_params], sort_keys=True, default=str)
            if key not in weights:
                weights[key] = weight_bytes(cfg.model, cfg.model_params)
            size, model_params = weights[key]
            memory.check_run_fits(cfg, img.shape[0] * img.shape[1], size, model_params["width"],
                                  model_params["depth"], device_have, host_have)
            jobs.append(Job(cfg, ref, convert_rgb))
    return unique_jobs(jobs)


def unique_jobs(jobs: list[Job]) -> list[Job]:
    """The jobs with each run id once (first occurrence kept); a one-line note says how many repeats went."""
    seen: dict[str, Job] = {}
    for job in jobs:
        seen.setdefault(job.cfg.run_id, job)
    if len(seen) < len(jobs):
        print(f"note: {len(jobs) - len(seen)} of {len(jobs)} grid entries repeat another entry (same image, "
              f"strategy, parameters and seed): running each once, {len(seen)} distinct run(s)", file=sys.stderr)
    return list(seen.values())


# --- execution -----------------------------------------------------------------------------------------------
def check_devices(names: list[str]) -> list[str]:
    """Every --devices entry must exist here, once, so a typo stops the command instead of failing each run."""
    for name in names:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise BenchError(f"--devices: {name!r} is not a device name; write cpu or cuda:N, "
                             "e.g. --devices cuda:0,cuda:1") from None
        if dev.type == "cuda":
            count = torch.cuda.device_count()
            if count == 0 or (dev.index or 0) >= count:
                raise BenchError(f"--devices: {name} is not available, this machine has {count} visible GPU(s) "
                                 f"({', '.join(f'cuda:{i}' for i in range(count)) or 'use cpu'})")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BenchError(f"--devices names {', '.join(twice)} twice; list each device once")
    return names


def available_devices() -> list[str]:
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def _versions() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "nint_bench": __version__, "git_commit": commit, "host": socket.gethostname()}


_LPIPS_CACHE: dict[tuple, Any] = {}


def _lpips_for(device: str, mode: str, weights: str | None):
    key = (device, mode, weights)
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = make_lpips(mode, weights, device)
    return _LPIPS_CACHE[key]


def _run_row(cfg: RunConfig, device: str, mode: str, started: float, **extra: Any) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else ""
    row = {
        "run_id": cfg.run_id, "status": "ok", "error": None, "suite": cfg.suite, "image": cfg.image,
        "strategy": cfg.strategy, "label": cfg.label, "seed": cfg.seed, "iters": cfg.iters,
        "mt_ratio": cfg.mt_ratio, "ratio_schedule": cfg.ratio_schedule, "interval": cfg.interval,
        "model": cfg.model, "lr": cfg.lr, "lr_schedule": cfg.lr_schedule,
        "params": json.dumps(cfg.params, sort_keys=True), "model_params": json.dumps(cfg.model_params, sort_keys=True),
        "config": json.dumps(cfg.to_dict(), sort_keys=True, default=str), "height": None, "width": None,
        "device": device, "gpu_name": gpu, "execution_mode": mode, "versions": json.dumps(_versions()),
        "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc),
        "finished_at": dt.datetime.now(dt.timezone.utc),
        "wall_seconds": time.time() - started, "train_seconds": None, "ms_per_iter": None,
        "final_psnr": None, "final_ssim": None, "final_lpips": None, "diverged_at": None,
        "peak_memory_mb": None, "timing": None,
    }
    row.update(extra)
    return row


# --- sharing -------------------------------------------------------------------------------------------------
COMPUTE_APPS = ["nvidia-smi", "--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"]


def parse_compute_apps(text: str) -> dict[str, set[int]]:
    """nvidia-smi's `gpu_uuid, pid` lines -> {uuid without the GPU- prefix, lower case: pids}."""
    apps: dict[str, set[int]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[1].isdigit():
            apps.setdefault(parts[0].lower().removeprefix("gpu-"), set()).add(int(parts[1]))
    return apps


def gpu_uuid(device: str) -> str | None:
    try:
        return str(torch.cuda.get_device_properties(torch.device(device)).uuid).lower().removeprefix("gpu-")
    except (AttributeError, RuntimeError, AssertionError):
        return None


def foreign_gpu_processes(device: str, own: int = 1, query=None) -> int | None:
    """How many processes other than this one hold a context on `device` (None: nvidia-smi cannot tell).
    Where this process's pid is in nvidia-smi's list (same pid namespace) the others are counted by pid;
    otherwise (e.g. in a container) every listed process beyond `own` counts as another."""
    uuid = gpu_uuid(device)
    try:
        text = query() if query else subprocess.run(COMPUTE_APPS, capture_output=True, text=True, timeout=10,
                                                    check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    apps = parse_compute_apps(text)
    if uuid is None:
        return None
    pids = apps.get(uuid, set())
    if os.getpid() in pids:
        return len(pids - {os.getpid()})
    return max(0, len(pids) - own)


def sharing_mode(mode: str, device: str, before: int | None, after: int | None) -> str:
    """An exclusive run on a GPU is stored as `shared-external` if another process held that GPU at its start
    or end, and as `exclusive-unchecked` if nvidia-smi could not say; CPU runs and shared-k runs keep `mode`."""
    if mode != "exclusive" or not device.startswith("cuda"):
        return mode
    if (before or 0) > 0 or (after or 0) > 0:
        return "shared-external"
    return "exclusive" if before is not None and after is not None else "exclusive-unchecked"


@contextmanager
def store_lock(root: Path):
    """Hold `<root>/.lock` (a POSIX record lock, not inherited by forked helpers) while this command runs jobs
    into the store: a second command on the same store refuses in one line instead of fitting the same runs."""
    import fcntl

    path = root / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise BenchError(f"cannot create the lock file {path}: {exc.strerror}; choose another --out") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise BenchError(f"{root} is in use by another nint-bench command (pid {holder}); wait for it to end, "
                             "or run with another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with the next command)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return ("CUDA out of memory; try a smaller --mt-ratio, a smaller --chunk-size (e.g. 65536) for the "
                "full-image forwards, or fewer workers per GPU")
    if isinstance(exc, BenchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def gpu_processes_at_start(dev: str, mode: str):
    """Other processes on the GPU as a run starts (None unless exclusive), after this process's own context
    exists, so that it is not mistaken for another."""
    torch.zeros(1, device=dev)
    return foreign_gpu_processes(dev) if mode == "exclusive" else None


def execute(job: Job, root: str, device: str | Any, lpips_mode: str = "auto", lpips_weights: str | None = None,
            mode: str = "exclusive", callback=None) -> dict[str, Any]:
    """Run one job and store its outcome. `device` is a device name or a queue of device tokens.
    `callback` is passed to `fit` (e.g. an Optuna pruner); a pruned run is stored with status "pruned"."""
    token_queue = None if isinstance(device, str) else device
    if token_queue is not None and multiprocessing.parent_process() is not None:
        # a worker process: Ctrl-C reaches the whole process group, and the main process stops the workers
        # itself; handled here it would only print "Exception ignored" from the queue proxy's finalizer
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    dev = token_queue.get() if token_queue is not None else device
    cfg, started = job.cfg, time.time()
    store = Store(root)
    try:
        before = None
        if dev.startswith("cuda"):
            torch.cuda.set_device(torch.device(dev))
            before = gpu_processes_at_start(dev, mode)
        img = datasets.resize_longest(job.ref.read(job.convert_rgb), cfg.max_size)
        result = fit(cfg, img, dev, _lpips_for(dev, lpips_mode, lpips_weights) if cfg.lpips else None, callback)
        if dev.startswith("cuda") and mode == "exclusive":
            mode = sharing_mode(mode, dev, before, foreign_gpu_processes(dev))
        last = result.metrics.iloc[-1]
        evaluated = result.metrics.dropna(subset=["ssim"])
        row = _run_row(
            cfg, dev, mode, started, status=result.status, height=result.height, width=result.width,
            train_seconds=result.train_seconds, ms_per_iter=ms_per_iter(result),
            final_psnr=float(last["psnr"]) if result.status == "ok" else None,
            final_ssim=float(evaluated["ssim"].iloc[-1]) if result.status == "ok" and len(evaluated) else None,
            final_lpips=(float(last["lpips"]) if result.status == "ok" and last["lpips"] == last["lpips"] else None),
            diverged_at=result.diverged_at, peak_memory_mb=result.peak_memory_mb, timing="measured",
            error=(f"loss became NaN/Inf at iteration {result.diverged_at}" if result.status == "diverged" else None),
        )
        with signals_deferred():  # an interruption waits for the run to be stored whole
            store.write_run(result.metrics, row)
        return row
    except BenchError as exc:
        if "no space left" in str(exc):
            raise  # the store cannot take more: stop the suite, finished runs stay intact
        row = _run_row(cfg, dev, mode, started, status="failed", error=describe_failure(exc))
    except Exception as exc:  # noqa: BLE001 - isolate the failure, record it, let the suite go on
        row = _run_row(cfg, dev, mode, started, status="failed",
                       error=describe_failure(exc) + " | " + traceback.format_exc(limit=-3).replace("\n", " "))
    finally:
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
        if token_queue is not None:
            token_queue.put(dev)
    with signals_deferred():
        store.write_failure(row)
    return row


class IterationBar:
    """A second progress line for one run: its iteration and current PSNR. It is fit's callback, so it moves
    every CALLBACK_EVERY iterations, from the PSNR that fit evaluates there outside the timed steps. Only for
    runs whose PSNR rows include those iterations anyway, so the stored metrics (and the timing, which an
    evaluated row already separates from the next step) are the same with the bar as without it."""

    @staticmethod
    def fits(cfg: RunConfig) -> bool:
        return cfg.iters > CALLBACK_EVERY and CALLBACK_EVERY % cfg.psnr_every == 0

    def __init__(self, iters: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=iters, desc="  iterations", unit="it", leave=False, position=1)

    def __call__(self, iteration: int, psnr: float) -> None:
        self.bar.set_postfix_str(f"PSNR {psnr:.2f} dB", refresh=False)
        self.bar.update(iteration - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def wall_estimates(finished: pd.DataFrame) -> dict[tuple[str, int], float]:
    """Median wall-clock seconds of finished runs per (strategy label, iterations): what --dry-run and
    --time-limit expect a run to take (the GPU and flags of those runs, so a guide)."""
    if finished.empty:
        return {}
    return {(label, int(iters)): float(s) for (label, iters), s in
            finished.groupby(["label", "iters"])["wall_seconds"].median().items()}


def run_jobs(jobs: list[Job], root: str | os.PathLike, devices: list[str] | None = None, workers_per_device: int = 1,
             lpips_mode: str = "auto", lpips_weights: str | None = None, force: bool = False,
             progress: bool = True, pack: int = 1, dask: str | None = None,
             deadline: float | None = None) -> list[dict[str, Any]]:
    """Run every job not finished in `root`; returns the outcome rows of the jobs run now. Holds the store's
    lock throughout (a second command on the same store refuses); damaged runs count as unfinished. With
    `pack` > 1, runs that may share a model train in packs of up to `pack` (benchmark/packed.py), one pack
    after another on the first device, before the others. `dask`: a Dask scheduler address (or local[:N]) to
    run the jobs on instead of this host's devices (benchmark/dask_runner.py). `deadline` (time.monotonic()),
    one run at a time only: no run starts that would be expected to end after it (wall_estimates)."""
    at_once = workers_per_device * len(devices or available_devices())
    if deadline is not None and (at_once > 1 or pack > 1 or dask):  # refused before the store exists
        raise BenchError("--time-limit works with one run at a time; drop --workers-per-device, --pack, --dask "
                         "and extra devices (--devices names one), or the time limit")
    if any(j.cfg.lpips for j in jobs) and lpips_mode != "off":
        _lpips_for("cpu", lpips_mode, lpips_weights)  # one notice or one error up front, before the store exists
    store = Store(root)
    with store_lock(store.root):
        store.tidy()
        scan = store.report_problems()
        done = set() if force else set(scan.finished["run_id"])
        return _run_pending(jobs, str(store.root), done, devices, workers_per_device, lpips_mode, lpips_weights,
                            progress, pack, dask, force, deadline, wall_estimates(scan.finished))


def _note_other_lpips_norm(pending: list[Job], done: set[str], root: str) -> None:
    """A store made before --lpips-norm's default became minmax holds its runs under the old mapping's ids:
    say how to resume them rather than silently running them again."""
    for norm in LPIPS_NORMS:
        same = [j for j in pending if j.cfg.lpips_norm != norm
                and dataclasses.replace(j.cfg, lpips_norm=norm).run_id in done]
        if same:
            print(f"note: {len(same)} of the runs to do are finished in {root} with --lpips-norm {norm}; "
                  f"add --lpips-norm {norm} to resume them instead of running them again", file=sys.stderr)


def _run_pending(jobs: list[Job], root: str, done: set[str], devices: list[str] | None, workers_per_device: int,
                 lpips_mode: str, lpips_weights: str | None, progress: bool, pack: int = 1, dask: str | None = None,
                 force: bool = False, deadline: float | None = None,
                 estimates: dict[tuple[str, int], float] | None = None) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    pending = [j for j in jobs if j.cfg.run_id not in done]
    seen: set[str] = set()
    pending = [j for j in pending if not (j.cfg.run_id in seen or seen.add(j.cfg.run_id))]
    distinct = {j.cfg.run_id for j in jobs}  # a grid entry given twice is one run
    skipped = len(distinct & done)
    if skipped:
        print(f"{skipped} of {len(distinct)} runs already finished in {root}: skipped", file=sys.stderr)
    _note_other_lpips_norm(pending, done, root)
    devices = devices or available_devices()
    slots = [d for d in devices for _ in range(workers_per_device)]
    mode = "exclusive" if workers_per_device == 1 else f"shared-{workers_per_device}"
    bar = tqdm(total=len(pending), desc="runs", unit="run", disable=not progress or not pending)
    outcomes = []
    if pack > 1:
        from .packed import execute_pack, plan_packs

        packs, pending = plan_packs(pending, pack)
        for members in packs:
            bar.set_postfix_str(f"pack of {len(members)} {members[0].cfg.label}")
            outcomes += execute_pack(members, root, slots[0] if slots else "cpu", lpips_mode, lpips_weights)
            bar.update(len(members))
    if dask:
        from . import dask_runner

        outcomes += dask_runner.run_jobs(pending, root, dask, lpips_mode, lpips_weights, mode, force, bar)
    elif len(slots) <= 1:
        estimates = dict(estimates or {})
        for i, job in enumerate(pending):
            key = (job.cfg.label, job.cfg.iters)
            if deadline is not None and time.monotonic() + estimates.get(key, 0.0) > deadline:
                print(f"time limit: {len(pending) - i} of {len(pending)} runs not started (the next, {job.cfg.label} "
                      f"on {job.cfg.image}, would not end in time); rerun the same command to go on", file=sys.stderr)
                break
            bar.set_postfix_str(f"{job.cfg.label} {job.cfg.image} s{job.cfg.seed}")
            iterations = IterationBar(job.cfg.iters) if progress and IterationBar.fits(job.cfg) else None
            try:
                outcomes.append(execute(job, root, slots[0] if slots else "cpu", lpips_mode, lpips_weights, mode,
                                        callback=iterations))
            finally:
                if iterations is not None:
                    iterations.close()
            if outcomes[-1]["status"] == "ok":
                estimates.setdefault(key, outcomes[-1]["wall_seconds"])
            bar.update()
    else:

        from joblib import Parallel, delayed

        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        manager = multiprocessing.Manager()
        tokens = manager.Queue()
        for s in slots:
            tokens.put(s)
        parallel = Parallel(n_jobs=len(slots), backend="loky", return_as="generator_unordered")
        try:
            for row in parallel(delayed(execute)(j, root, tokens, lpips_mode, lpips_weights, mode) for j in pending):
                outcomes.append(row)
                bar.update()
        finally:  # also when interrupted, so no finalizer is left to fail at exit with a traceback
            with signals_deferred():
                manager.shutdown()
    bar.close()
    return outcomes
