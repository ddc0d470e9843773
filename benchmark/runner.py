"""Expand a grid of runs, skip the finished ones, run the rest across devices, record every outcome.

One joblib worker per device (each job takes a device token from a shared queue, so no two jobs of a worker
pool share a GPU unless `workers_per_device` > 1 asks for it). A job that raises is recorded as `failed` with
its error and the others go on; a finished run is never run again (resume = rerun the same command).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch

import datasets
from strategies import resolve

from . import __version__
from .config import RunConfig
from .errors import BenchError
from .fit import fit, ms_per_iter
from .metrics import make_lpips
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
    refs = datasets.suite_images(suite, data_dir)
    if images:
        wanted = csv_list(images)
        missing = sorted(set(wanted) - {r.id for r in refs})
        if missing:
            raise BenchError(f"suite {suite!r} has no image(s) {', '.join(missing)}; it has {', '.join(r.id for r in refs)}")
        refs = [r for r in refs if r.id in wanted]
    if max_images < 0:
        raise BenchError(f"--max-images must be >= 0 (0 keeps every image), got {max_images}")
    return refs[:max_images] if max_images else refs


def build_jobs(refs: list[datasets.ImageRef], strategies: list[tuple[str, dict[str, Any]]], seeds: list[int],
               convert_rgb: bool = False, **common: Any) -> list[Job]:
    """Every (image × strategy × seed). Images are read and checked here, so bad input stops the run before
    any GPU work, with a one-line error."""
    jobs = []
    for ref in refs:
        img = datasets.resize_longest(ref.read(convert_rgb), common.get("max_size", 0))
        digest = datasets.pixels_sha256(img)
        for (name, params), seed in product(strategies, seeds):
            _, full = resolve(name, params)
            cfg = RunConfig(image=ref.id, image_sha256=digest, strategy=name, params=full, seed=seed, **common)
            jobs.append(Job(cfg, ref, convert_rgb))
    return jobs


# --- execution -----------------------------------------------------------------------------------------------
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
        "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": time.time() - started, "train_seconds": None, "ms_per_iter": None,
        "final_psnr": None, "final_ssim": None, "final_lpips": None, "diverged_at": None,
        "peak_memory_mb": None,
    }
    row.update(extra)
    return row


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return ("CUDA out of memory; try a smaller --mt-ratio, a smaller --chunk-size (e.g. 65536) for the "
                "full-image forwards, or fewer workers per GPU")
    if isinstance(exc, BenchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def execute(job: Job, root: str, device: str | Any, lpips_mode: str = "auto", lpips_weights: str | None = None,
            mode: str = "exclusive", callback=None) -> dict[str, Any]:
    """Run one job and store its outcome. `device` is a device name or a queue of device tokens.
    `callback` is passed to `fit` (e.g. an Optuna pruner); a pruned run is stored with status "pruned"."""
    token_queue = None if isinstance(device, str) else device
    dev = token_queue.get() if token_queue is not None else device
    cfg, started = job.cfg, time.time()
    store = Store(root)
    try:
        if dev.startswith("cuda"):
            torch.cuda.set_device(torch.device(dev))
        img = datasets.resize_longest(job.ref.read(job.convert_rgb), cfg.max_size)
        result = fit(cfg, img, dev, _lpips_for(dev, lpips_mode, lpips_weights) if cfg.lpips else None, callback)
        last = result.metrics.iloc[-1]
        evaluated = result.metrics.dropna(subset=["ssim"])
        row = _run_row(
            cfg, dev, mode, started, status=result.status, height=result.height, width=result.width,
            train_seconds=result.train_seconds, ms_per_iter=ms_per_iter(result),
            final_psnr=float(last["psnr"]) if result.status == "ok" else None,
            final_ssim=float(evaluated["ssim"].iloc[-1]) if result.status == "ok" and len(evaluated) else None,
            final_lpips=(float(last["lpips"]) if result.status == "ok" and last["lpips"] == last["lpips"] else None),
            diverged_at=result.diverged_at, peak_memory_mb=result.peak_memory_mb,
            error=(f"loss became NaN/Inf at iteration {result.diverged_at}" if result.status == "diverged" else None),
        )
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
    store.write_failure(row)
    return row


def run_jobs(jobs: list[Job], root: str | os.PathLike, devices: list[str] | None = None, workers_per_device: int = 1,
             lpips_mode: str = "auto", lpips_weights: str | None = None, force: bool = False,
             progress: bool = True, dask: str | None = None) -> list[dict[str, Any]]:
    """Run every job not finished in `root`; returns the outcome rows of the jobs run now. `dask`: a Dask
    scheduler address (or local[:N]) to run the jobs on instead of this host's devices (see dask_runner)."""
    from tqdm.auto import tqdm

    store = Store(root)
    root = str(store.root)
    done = set() if force else store.finished_ids()
    pending = [j for j in jobs if j.cfg.run_id not in done]
    seen: set[str] = set()
    pending = [j for j in pending if not (j.cfg.run_id in seen or seen.add(j.cfg.run_id))]
    skipped = len(jobs) - len(pending)
    if skipped:
        print(f"{skipped} of {len(jobs)} runs already finished in {root}: skipped", file=sys.stderr)
    if any(j.cfg.lpips for j in pending) and lpips_mode != "off":
        _lpips_for("cpu", lpips_mode, lpips_weights)  # one notice or one error up front, not one per job
    devices = devices or available_devices()
    slots = [d for d in devices for _ in range(workers_per_device)]
    mode = "exclusive" if workers_per_device == 1 else f"shared-{workers_per_device}"
    bar = tqdm(total=len(pending), desc="runs", unit="run", disable=not progress or not pending)
    outcomes = []
    if dask:
        from . import dask_runner

        outcomes = dask_runner.run_jobs(pending, root, dask, lpips_mode, lpips_weights, mode, force, bar)
    elif len(slots) <= 1:
        for job in pending:
            bar.set_postfix_str(f"{job.cfg.label} {job.cfg.image} s{job.cfg.seed}")
            outcomes.append(execute(job, root, slots[0] if slots else "cpu", lpips_mode, lpips_weights, mode))
            bar.update()
    else:
        import multiprocessing

        from joblib import Parallel, delayed

        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        manager = multiprocessing.Manager()
        tokens = manager.Queue()
        for s in slots:
            tokens.put(s)
        parallel = Parallel(n_jobs=len(slots), backend="loky", return_as="generator_unordered")
        for row in parallel(delayed(execute)(j, root, tokens, lpips_mode, lpips_weights, mode) for j in pending):
            outcomes.append(row)
            bar.update()
        manager.shutdown()
    bar.close()
    return outcomes
