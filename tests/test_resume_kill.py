"""A suite killed at any point resumes by rerunning the same command: nothing lost, nothing run twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

import datasets
from benchmark import store as store_mod
from benchmark.runner import build_jobs, parse_strategies, run_jobs
from benchmark.store import Store, load
from conftest import ROOT, tiny_image

STRATEGIES = "uniform,standard,int,nint"
SEEDS = 2
GRID = 3 * 4 * SEEDS  # builtin suite: 3 images × 4 strategies × 2 seeds


def command(out) -> list[str]:
    return [sys.executable, str(ROOT / "run_benchmark.py"), "--suite", "builtin", "--max-size", "16",
            "--model-param", "depth=2", "--model-param", "width=16", "--strategies", STRATEGIES,
            "--seeds", ",".join(map(str, range(SEEDS))), "--iters", "400", "--eval-every", "100",
            "--no-lpips", "--no-progress", "--out", str(out)]


# One thread: tiny models gain nothing from more, and a busy machine makes thread hand-offs very slow.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_files(root, sub) -> list[str]:
    return sorted(p.stem for p in (root / sub).glob("*.parquet"))


def test_sigkill_mid_suite_then_rerun_finishes_every_run_once(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen(command(out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline and proc.poll() is None:
            if len(run_files(out, "runs")) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the suite ended before it could be killed: " + proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_with = len(run_files(out, "runs"))
    assert 2 <= killed_with < GRID  # killed mid-suite, with some runs finished

    rerun = subprocess.run(command(out), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{killed_with} of {GRID} runs already finished" in rerun.stderr  # finished runs were not redone

    runs = pd.read_parquet(out / "runs")
    assert len(runs) == GRID == runs["run_id"].nunique()  # each run exactly once
    assert (runs["status"] == "ok").all(), runs[["label", "status", "error"]]
    assert sorted(runs["strategy"].value_counts().items()) == [(s, 3 * SEEDS) for s in sorted(STRATEGIES.split(","))]
    assert run_files(out, "runs") == run_files(out, "metrics") == sorted(runs["run_id"])
    assert not list(out.rglob("*.tmp"))  # no temporary file left anywhere in the store
    assert Store(out).incomplete() == []
    finished, metrics = load(out)
    assert len(finished) == GRID
    per_run = metrics.groupby("run_id")["iteration"].agg(["count", "max"])
    assert (per_run["count"] == 401).all() and (per_run["max"] == 400).all()  # every metrics file is whole


def tiny_jobs(strategies="uniform,int", seeds=(0, 1)):
    refs = [datasets.ImageRef("tiny", loader=tiny_image)]
    return build_jobs(refs, parse_strategies(strategies), list(seeds), iters=5, eval_every=5,
                      model_params={"depth": 2, "width": 8}, lpips=False, suite="test")


def test_orphan_metrics_file_is_reported_and_the_run_redone(tmp_path):
    root = tmp_path / "r"
    jobs = tiny_jobs()
    first = run_jobs(jobs, root, ["cpu"], progress=False)
    assert [r["status"] for r in first] == ["ok"] * 4
    victim = jobs[1].cfg.run_id
    (root / "runs" / f"{victim}.parquet").unlink()  # killed after the metrics write, before the run row
    assert (root / "metrics" / f"{victim}.parquet").exists()

    store = Store(root)
    assert store.incomplete() == [victim]
    runs, metrics = load(root)
    assert victim not in set(runs["run_id"]) and victim not in set(metrics["run_id"])  # reports ignore it

    again = run_jobs(jobs, root, ["cpu"], progress=False)
    assert [r["run_id"] for r in again] == [victim] and again[0]["status"] == "ok"  # only the orphan is redone
    assert store.incomplete() == []
    runs, metrics = load(root)
    assert len(runs) == 4 and metrics.groupby("run_id").size().eq(6).all()


def test_a_write_killed_mid_file_leaves_a_temp_file_that_the_next_open_removes(tmp_path):
    """A real SIGKILL inside `atomic_write_table` (after the data, before the rename) leaves a hidden temp file;
    opening the store deletes it because its writer is gone, while a live writer's temp file is kept."""
    root = tmp_path / "r"
    Store(root)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        import pyarrow as pa
        from pathlib import Path
        from benchmark import store
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # die between fsync and rename
        store.atomic_write_table(pa.table({{"x": [1, 2, 3]}}), Path({str(root)!r}) / "metrics" / "abc.parquet")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    left = list((root / "metrics").glob("*.tmp"))
    assert len(left) == 1 and left[0].name.startswith(f".nintbench-{proc.pid}@") and ".abc.parquet." in left[0].name
    assert left[0].stat().st_size > 0  # the data was written, only the rename was missing
    assert not (root / "metrics" / "abc.parquet").exists()

    live = root / "runs" / f"{store_mod._tmp_prefix(root / 'runs' / 'live.parquet')}x.tmp"  # this process: alive
    live.write_bytes(b"partial")
    other_host = root / "runs" / ".nintbench-1@otherhost.new.parquet.z.tmp"  # its writer may still be busy
    other_host.write_bytes(b"partial")
    old = time.time() - 30 * 86400
    users = [root / "notes.tmp", root / "metrics" / ".draft.tmp", root / "runs" / f".{proc.pid}@x.y.tmp",
             root / f".nintbench-notapid@{store_mod._host()}.a.b.tmp"]  # not our pattern: never deleted, however old
    for path in users:
        path.write_bytes(b"mine")
        os.utime(path, (old, old))

    Store(root)
    assert not left[0].exists()
    assert live.exists() and other_host.exists() and all(p.read_bytes() == b"mine" for p in users)
    assert Store(root).runs().empty  # temp files are never read as runs


def test_a_write_that_fails_removes_its_temp_file_and_leaves_no_orphan(tmp_path, monkeypatch):
    root = tmp_path / "r"
    jobs = tiny_jobs("uniform", seeds=(0,))
    calls = []
    real = store_mod.pq.write_table

    def second_write_fails(table, fh):  # the metrics write succeeds, the run-row write dies half-way
        calls.append(fh)
        real(table, fh)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(store_mod.pq, "write_table", second_write_fails)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, root, ["cpu"], progress=False)
    assert not list(root.rglob("*.tmp")) and not list(root.rglob("*.parquet"))
    assert Store(root).incomplete() == []


def test_store_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    root = tmp_path / "r"
    run_jobs(tiny_jobs("uniform", seeds=(0,)), root, ["cpu"], progress=False)
    files = [root / "store.json", *root.rglob("*.parquet")]
    expected = 0o666 & ~store_mod._UMASK  # 0644 under the usual umask 022: others can read the results
    assert len(files) == 3 and {f.stat().st_mode & 0o777 for f in files} == {expected}
