"""The Dask runner: the same runs as the in-process runner, a worker SIGKILLed mid-grid, a study shared by
two Dask workers, and an unreachable scheduler."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import datasets
from benchmark import tune
from benchmark.errors import BenchError
from benchmark.runner import Job, build_jobs, parse_strategies, run_jobs
from conftest import ROOT

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, shared by the grid tests (workers take seconds to import torch)."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
            yield c


def grid(iters: int):
    """Six runs: three builtin images at 16 px × two strategies."""
    refs = datasets.suite_images("builtin")
    return build_jobs(refs, parse_strategies("uniform,int"), [0], suite="builtin", iters=iters, eval_every=10,
                      max_size=16, lpips=False, model_params={"depth": 2, "width": 32})


def temp_files(root) -> list:
    return [p for p in root.rglob("*.tmp")]


def test_dask_runs_the_same_runs_as_the_local_runner(cluster, tmp_path):
    good = grid(iters=30)
    lost = Job(dataclasses.replace(good[0].cfg, image="lost"), datasets.ImageRef("lost", path=tmp_path / "lost.png"))
    jobs = [lost, *good]  # a job that fails on its worker (its image is gone): recorded, the others go on
    local = run_jobs(jobs, tmp_path / "local", devices=["cpu"], progress=False)
    remote = run_jobs(jobs, tmp_path / "dask", progress=False, dask=cluster.scheduler_address)
    a = pd.read_parquet(tmp_path / "local" / "runs").set_index("run_id").sort_index()
    b = pd.read_parquet(tmp_path / "dask" / "runs").set_index("run_id").sort_index()
    assert sorted(r["run_id"] for r in remote) == sorted(r["run_id"] for r in local) == sorted(j.cfg.run_id for j in jobs)
    assert list(b.index) == list(a.index) and list(b["status"]) == list(a["status"])
    assert b.loc[lost.cfg.run_id, "status"] == "failed" and "image not found" in b.loc[lost.cfg.run_id, "error"]
    assert (b.drop(index=lost.cfg.run_id)["status"] == "ok").all()
    # CPU fits are deterministic (seeded), and products this small come out the same with the workers' one
    # thread as with this process's threads: equal bit for bit, every iteration.
    assert b["final_psnr"].equals(a["final_psnr"])  # NaN (the failed run) counts as equal to NaN
    ma = pd.read_parquet(tmp_path / "local" / "metrics").sort_values(["run_id", "iteration"]).reset_index(drop=True)
    mb = pd.read_parquet(tmp_path / "dask" / "metrics").sort_values(["run_id", "iteration"]).reset_index(drop=True)
    assert len(ma) == len(mb) == 6 * 31
    assert mb["psnr"].tolist() == ma["psnr"].tolist() and mb["loss"].equals(ma["loss"])
    assert {r["device"] for r in remote} == {"cpu"}

    again = run_jobs(good, tmp_path / "dask", progress=False, dask=cluster.scheduler_address)
    assert again == []  # every run finished: nothing is submitted


def test_a_worker_killed_mid_grid_leaves_every_run_once(cluster, tmp_path):
    root = tmp_path / "r"
    jobs = grid(iters=150)  # a couple of seconds per run, so the kill lands inside one
    done: dict = {}
    runner = threading.Thread(target=lambda: done.update(rows=run_jobs(jobs, root, progress=False,
                                                                       dask=cluster.scheduler_address)))
    runner.start()
    with distributed.Client(cluster.scheduler_address) as client:
        deadline, victim = time.monotonic() + 120, None
        while time.monotonic() < deadline and victim is None:
            finished = len(list((root / "runs").glob("*.parquet"))) if (root / "runs").is_dir() else 0
            busy = [w for w, keys in client.processing().items() if any(str(k).startswith("run-") for k in keys)]
            if finished >= 1 and busy:
                victim = busy[0]
            time.sleep(0.05)
        assert victim is not None, "no run was under way to kill"
        pid = client.run(os.getpid)[victim]
        os.kill(pid, signal.SIGKILL)

        def suspicious(dask_scheduler=None):
            return {str(k): ts.suspicious for k, ts in dask_scheduler.tasks.items() if ts.suspicious}

        deadline, hit = time.monotonic() + 30, {}
        while time.monotonic() < deadline and not hit:
            hit = client.run_on_scheduler(suspicious)
            time.sleep(0.05)
        assert hit and all(k.startswith("run-") for k in hit)  # the scheduler saw a run's worker die
        runner.join(timeout=240)
        assert not runner.is_alive()
        assert pid not in client.run(os.getpid).values()  # the killed process is gone (the nanny started another)
    runs = pd.read_parquet(root / "runs")
    assert sorted(runs["run_id"]) == sorted(j.cfg.run_id for j in jobs)  # every run exactly once
    assert (runs["status"] == "ok").all()
    assert sorted(r["run_id"] for r in done["rows"]) == sorted(runs["run_id"])
    metrics = pd.read_parquet(root / "metrics")
    assert metrics.groupby("run_id").size().eq(151).all() and metrics["run_id"].nunique() == 6
    assert temp_files(root) == []


def test_two_dask_workers_reach_exactly_n_trials(tmp_path):
    out = tmp_path / "tune"
    argv = ["--suite", "builtin", "--images", "astronaut", "--max-size", "16", "--model-param", "depth=2",
            "--model-param", "width=32", "--strategy", "uniform", "--no-lpips", "--iters", "100", "--pruner", "none",
            "--n-trials", "5", "--out", str(out), "--dask", "local:2"]
    assert tune.main(argv) == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    trials = optuna.load_study(study_name="tune-uniform-psnr-at-iters", storage=storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(trials) == len(complete) == 5  # exactly --n-trials, none over
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(5))  # no trial number twice
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both worker processes ran trials
    run_ids = [r for t in complete for r in t.user_attrs["run_ids"]]
    assert len(pd.read_parquet(out / "runs")) == len(set(run_ids))


def test_an_unreachable_scheduler_is_one_line_quickly(tmp_path, monkeypatch):
    from dask.utils import parse_timedelta

    from benchmark import dask_runner

    assert parse_timedelta(dask_runner.CONNECT_TIMEOUT) <= 10  # what a user waits for
    # A refused connection is retried until the timeout: a shorter one keeps the test fast.
    monkeypatch.setattr(dask_runner, "CONNECT_TIMEOUT", "1s")
    jobs = grid(iters=5)[:1]
    started = time.monotonic()
    with pytest.raises(BenchError, match="cannot reach a Dask scheduler at tcp://127.0.0.1:9.*dask scheduler") as err:
        run_jobs(jobs, tmp_path, progress=False, dask="tcp://127.0.0.1:9")
    assert time.monotonic() - started < 15
    assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match="not a scheduler address"):
        run_jobs(jobs, tmp_path, progress=False, dask="host:8786")


def test_dask_is_imported_only_when_asked_for():
    code = ("import sys, run_benchmark, benchmark.runner, benchmark.tune, benchmark.dask_runner; "
            "benchmark.cli.run_parser('x').parse_args(['--dask', 'local:2']); print('distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
