"""Run the grid's jobs, or the trials of one Optuna study, as tasks on a Dask cluster (`--dask ADDRESS`).

ADDRESS is a scheduler address (`tcp://host:8786`, started with `dask scheduler`), or `local[:N]` for a
`distributed.LocalCluster` of N worker processes (one thread each; N defaults to the CPU count). Workers
need this repository on their PYTHONPATH and --out on a filesystem that every worker and the client share.

Grid: each job is one task running `runner.execute` on a worker, which writes the run into the shared store
(metrics first, run row last, each file written then renamed). Finished runs are skipped by the client before
anything is submitted; a failing job is stored as failed and the others go on. When a worker dies mid-job
(killed, preempted, out of host memory), the scheduler runs the task again on another worker; a run whose row
the dead worker had already written is not fit again. A task whose workers die ALLOWED_FAILURES times is
recorded as failed by the client (for a LocalCluster; an external scheduler uses its own
`distributed.scheduler.allowed-failures`).

GPUs: if any worker declares the resource `GPU` (`dask worker ... --resources GPU=1`), every task asks for
`GPU=1`, so a worker runs at most as many jobs at once as it has GPUs; inside a worker each job holds one of
the GPUs it sees (CUDA_VISIBLE_DEVICES) until it ends. A worker without CUDA runs its jobs on the CPU.

Study: each task runs exactly one trial of the study in the shared Optuna storage (a journal file on the
shared filesystem, or an RDB URL); the client submits as many tasks as trials are missing, so the study ends
with exactly --n-trials finished trials unless some fail (failed trials do not count; rerun to fill them up).

dask is imported only here and only when --dask is used.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any, Iterator

from .errors import BenchError

CONNECT_TIMEOUT = "5s"  # an unreachable scheduler is reported after this long
WORKER_WAIT_SECONDS = 30  # a scheduler with no worker after this long is reported
ALLOWED_FAILURES = 3  # a LocalCluster task is given up after its worker died this many times
_LOCAL = re.compile(r"^local(?::(\d+))?$")
_GPU_TOKENS: queue.Queue | None = None  # in a worker process: the GPUs no job holds right now
_GPU_TOKENS_LOCK = threading.Lock()


# --- connecting ----------------------------------------------------------------------------------------------
def _can_import_benchmark() -> bool:
    import importlib.util

    return importlib.util.find_spec("benchmark") is not None and importlib.util.find_spec("strategies") is not None


@contextlib.contextmanager
def connect(address: str) -> Iterator[Any]:
    """A distributed.Client for ADDRESS (see the module docstring) with at least one worker that can import
    nint-bench; every way of failing is one BenchError line."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise BenchError("--dask needs Dask: pip install 'dask[distributed]>=2024.1'") from None
    address = address.strip()
    local = _LOCAL.match(address)
    cluster = None
    if local:
        n = int(local.group(1)) if local.group(1) else (os.cpu_count() or 1)
        if n < 1:
            raise BenchError(f"--dask {address}: a local cluster needs at least one worker, e.g. --dask local:2")
        repo = str(Path(__file__).resolve().parent.parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=logging.ERROR)  # no "worker still alive, killing" at shutdown
        client = Client(cluster)
    elif not re.match(r"^[a-z]+://\S+$", address):
        raise BenchError(f"--dask {address!r} is not a scheduler address; write e.g. --dask tcp://host:8786 "
                         "(printed by `dask scheduler`), or --dask local:2 for two worker processes here")
    else:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise BenchError(f"cannot reach a Dask scheduler at {address} ({str(exc).splitlines()[0]}); start one "
                             f"with `dask scheduler` and workers with `dask worker {address}`, or use --dask local:2"
                             ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError:
            raise BenchError(f"the Dask scheduler at {address} has no worker after {WORKER_WAIT_SECONDS} s; start "
                             f"one with `dask worker {client.scheduler.address}`") from None
        lacking = sorted(w for w, ok in client.run(_can_import_benchmark).items() if not ok)
        if lacking:
            raise BenchError(f"Dask worker(s) {', '.join(lacking)} cannot import nint-bench; start them from the "
                             "repository, with PYTHONPATH=<repository>")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _task_resources(client) -> dict[str, float] | None:
    """GPU=1 per task when some worker declares GPUs, so each GPU runs one job at a time; else none."""
    workers = client.scheduler_info().get("workers", {}).values()
    return {"GPU": 1} if any("GPU" in (w.get("resources") or {}) for w in workers) else None


# --- on a worker ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def held_device() -> Iterator[str]:
    """A device for one job on this worker: one of its visible GPUs, held until the job ends, or "cpu"."""
    global _GPU_TOKENS
    import torch

    if not torch.cuda.is_available():
        yield "cpu"
        return
    with _GPU_TOKENS_LOCK:
        if _GPU_TOKENS is None:
            _GPU_TOKENS = queue.Queue()
            for i in range(torch.cuda.device_count()):
                _GPU_TOKENS.put(f"cuda:{i}")
    device = _GPU_TOKENS.get()
    try:
        yield device
    finally:
        _GPU_TOKENS.put(device)


def _stored_finished_row(root: str, run_id: str) -> dict[str, Any] | None:
    """The run row of a finished run (e.g. one written by a worker that died right after), else None."""
    import pandas as pd

    from .store import FINISHED

    path = Path(root) / "runs" / f"{run_id}.parquet"
    if not path.is_file():
        return None
    row = pd.read_parquet(path).iloc[0].to_dict()
    return row if row["status"] in FINISHED else None


def run_one(job, root: str, lpips_mode: str, lpips_weights: str | None, mode: str, force: bool) -> dict[str, Any]:
    """The task body of one grid job."""
    from .runner import execute

    if not force:
        row = _stored_finished_row(root, job.cfg.run_id)
        if row is not None:
            return row
    with held_device() as device:
        return execute(job, root, device, lpips_mode, lpips_weights, mode)


def run_trial(args, plan, storage_spec: str, name: str, index: int) -> tuple[int, str] | None:
    """The task body of one study trial: attach to the shared study, run one trial; (number, state), or None
    when the study already has --n-trials finished trials."""
    from . import tune

    study = tune.load_study(plan, tune.open_storage(storage_spec), name, args.pruner, args.pruner_startup,
                            args.sampler_seed, index)
    tune.recover_killed_trials(study)
    if tune.finished_count(study) >= args.n_trials:
        return None
    tune._warm_up()
    ran = []
    with held_device() as device:
        study.optimize(tune.objective_fn(plan, device, study), n_trials=1, catch=(tune.RunFailed,),
                       callbacks=[lambda _study, trial: ran.append(trial)])
    return ran[0].number, ran[0].state.name


# --- on the client -------------------------------------------------------------------------------------------
def _record_lost(job, root: str, mode: str, error: str) -> dict[str, Any]:
    """Store a job that never returned a row (its workers kept dying, or Dask could not run it) as failed."""
    import time

    from .runner import _run_row
    from .store import Store

    row = _run_row(job.cfg, "unknown", mode, time.time(), status="failed", error=error)
    Store(root).write_failure(row)
    return row


def run_jobs(jobs: list, root: str, address: str, lpips_mode: str, lpips_weights: str | None, mode: str,
             force: bool, bar) -> list[dict[str, Any]]:
    """Run `jobs` (already filtered to the ones to run) as Dask tasks; the outcome rows, as runner.run_jobs."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker, as_completed

    root = str(Path(root).resolve())  # workers may start in another directory
    outcomes = []
    if not jobs:
        return outcomes
    with connect(address) as client:
        resources = _task_resources(client)
        futures = {client.submit(run_one, job, root, lpips_mode, lpips_weights, mode, force,
                                 key=f"run-{job.cfg.run_id}", resources=resources): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                row = future.result()
            except BenchError:  # the store is full: stop, finished runs are kept
                client.cancel(list(futures))
                raise
            except KilledWorker as exc:
                row = _record_lost(job, root, mode, f"the Dask workers running it died each time it was tried "
                                                    f"(KilledWorker: {exc}); is the host out of memory?")
            except CancelledError:
                raise BenchError(f"the Dask scheduler at {address} cancelled the runs (did it stop?); finished runs "
                                 "are kept: rerun the same command") from None
            except Exception as exc:  # noqa: BLE001 - e.g. a worker that cannot unpickle the job: record, go on
                row = _record_lost(job, root, mode, f"Dask could not run it: {type(exc).__name__}: {exc}")
            bar.set_postfix_str(f"{job.cfg.label} {job.cfg.image} s{job.cfg.seed}")
            bar.update()
            outcomes.append(row)
    from .store import Store

    Store(root)  # a last sweep for temporary files of workers that died on this host
    return outcomes


def tune_study(address: str, args, plan, storage_spec: str, name: str, missing: int) -> None:
    """Run the study's `missing` trials as Dask tasks, one trial each, through the shared storage."""
    import dataclasses
    import sys
    import uuid

    from distributed import as_completed
    from tqdm.auto import tqdm

    if "://" not in storage_spec:
        storage_spec = str(Path(storage_spec).resolve())
    plan = dataclasses.replace(plan, out=str(Path(plan.out).resolve()))
    with connect(address) as client:
        resources = _task_resources(client)
        batch = uuid.uuid4().hex[:8]
        futures = [client.submit(run_trial, args, plan, storage_spec, name, i, key=f"trial-{batch}-{i}",
                                 resources=resources) for i in range(missing)]
        failed = []
        with tqdm(total=missing, desc="trials", unit="trial") as bar:
            for future in as_completed(futures):
                if future.status != "finished":
                    failed.append(f"{type(future.exception()).__name__}: {future.exception()}")
                elif future.result() is not None and future.result()[1] == "FAIL":
                    failed.append(f"trial {future.result()[0]} failed")
                bar.update()
    for line in failed:
        print(f"{line}; rerun the same command to fill the study up to --n-trials", file=sys.stderr)
