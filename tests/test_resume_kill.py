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
import torch

import datasets
import run_benchmark
from benchmark import store as store_mod
from benchmark.runner import build_jobs, parse_strategies, run_jobs
from benchmark.store import Store, load
from conftest import ROOT, tiny_image

STRATEGIES = "uniform,standard,int,nint"
SEEDS = 1
GRID = 3 * 4 * SEEDS  # builtin suite: 3 images × 4 strategies × 1 seed
ITERS = 100  # short runs keep the test fast; a kill after 2 runs still leaves 10 unfinished


def command(out) -> list[str]:
    return [sys.executable, str(ROOT / "run_benchmark.py"), "--suite", "builtin", "--max-size", "16",
            "--model-param", "depth=2", "--model-param", "width=16", "--strategies", STRATEGIES,
            "--seeds", ",".join(map(str, range(SEEDS))), "--iters", str(ITERS), "--eval-every", "100",
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
    assert (per_run["count"] == ITERS + 1).all() and (per_run["max"] == ITERS).all()  # every metrics file is whole


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
    real = store_mod.write_parquet

    def second_write_fails(table, fh, **options):  # the metrics write succeeds, the run-row write dies half-way
        calls.append(fh)
        real(table, fh, **options)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "write_parquet", second_write_fails)
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


# --- clean interruption ------------------------------------------------------------------------------------------
def small_command(out, *extra) -> list[str]:
    """4 runs of one builtin image, long enough to be interrupted mid-suite."""
    return [sys.executable, str(ROOT / "run_benchmark.py"), "--suite", "builtin", "--max-images", "1", "--max-size",
            "16", "--model-param", "depth=2", "--model-param", "width=16", "--strategies", "uniform,int",
            "--seeds", "0,1", "--iters", "400", "--eval-every", "100", "--no-lpips", "--no-progress", "--out",
            str(out), *extra]


def interrupt_after(cmd, out, signum, ready, group=False):
    """Start cmd, wait until ready() holds, send signum (to its process group, as Ctrl-C does, if group)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        assert proc.poll() is None, "the suite ended before it could be interrupted: " + proc.stderr.read()
        (os.killpg if group else os.kill)(proc.pid, signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def assert_whole(out):
    """Every run row's files check out; no temporary file stays once the store is opened again."""
    store = Store(out)
    scan = store.scan()
    assert not scan.damaged and not scan.foreign, scan.messages(out)
    assert not list(out.rglob("*.tmp"))
    return scan


@pytest.mark.parametrize("signum, workers", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2),
                                             (signal.SIGTERM, 2)])
def test_sigint_and_sigterm_stop_with_one_line_and_a_whole_store(tmp_path, signum, workers):
    out = tmp_path / "r"
    cmd = small_command(out, "--workers-per-device", str(workers))
    code, err = interrupt_after(cmd, out, signum, lambda: len(run_files(out, "runs")) >= 1,
                                group=signum == signal.SIGINT)
    assert code == 128 + signum, err
    lines = err.strip().splitlines()
    assert lines[-1] == (f"interrupted by {signal.Signals(signum).name}: finished runs are stored, the run in "
                         "progress is not; rerun the same command to resume")
    assert "Traceback" not in err
    scan = assert_whole(out)
    assert 1 <= len(scan.finished) < 4


def test_sigint_during_force_keeps_every_run_whole(tmp_path):
    out = tmp_path / "r"
    # the finished store to replace: the same command's main() in this process (no second torch start-up),
    # on one thread as ENV gives the subprocesses
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_benchmark.main(small_command(out)[2:]) == 0
    finally:
        torch.set_num_threads(threads)
    before = {r.run_id: r.metrics_sha256 for r in Store(out).scan().finished.itertuples()}
    assert len(before) == 4
    replaced = lambda: any(".1." in p.name for p in (out / "metrics").glob("*.parquet"))  # noqa: E731
    code, err = interrupt_after(small_command(out, "--force"), out, signal.SIGINT, replaced, group=True)
    assert code == 130 and "Traceback" not in err, err
    scan = assert_whole(out)
    after = {r.run_id: r.metrics_sha256 for r in scan.finished.itertuples()}
    assert set(after) == set(before)  # every run still finished: the old one or its replacement, whole
    assert 1 <= sum(after[k] != before[k] for k in after) < 4


def test_sigint_during_a_packaged_image_read_waits_for_the_read():
    """A package's image reader (skimage, through imageio) is not stopped half-way: Ctrl-C inside it is raised
    once the read is done, so no half-made reader object is left to print a traceback at exit."""
    from benchmark.interrupt import Interrupted, stop_on_signals

    done = []

    def reader():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append(1)
        return tiny_image()

    with stop_on_signals(), pytest.raises(Interrupted):
        datasets.ImageRef("packaged", loader=reader).read()
    assert done == [1]


def test_sigint_during_a_store_write_waits_for_the_write(tmp_path, monkeypatch):
    """The signal arrives while a replacement run is being written: the write completes, then it stops."""
    root = tmp_path / "r"
    jobs = tiny_jobs()
    run_jobs(jobs, root, ["cpu"], progress=False)
    old = {r.run_id: r.metrics_file for r in Store(root).scan().finished.itertuples()}
    real = store_mod.write_parquet
    calls = []

    def interrupted_write(table, fh, **options):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the first metrics write
        real(table, fh, **options)

    monkeypatch.setattr(store_mod, "write_parquet", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, root, ["cpu"], force=True, progress=False)
    assert len(calls) == 2  # the metrics file and the run row of the first run, nothing after
    scan = assert_whole(root)
    new = {r.run_id: r.metrics_file for r in scan.finished.itertuples()}
    first = jobs[0].cfg.run_id
    assert new[first] == f"{first}.1.parquet" and all(new[k] == old[k] for k in new if k != first)
    assert sorted(p.name for p in (root / "metrics").iterdir()) == sorted(new.values())  # the old file went


KILL_AT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from benchmark import store
    kill_at, calls = {kill_at}, []
    real = store.atomic_write_table
    if kill_at == 0:
        os.replace = lambda *a: os._exit(9)  # dies inside the metrics write, before its rename
    def write(table, dest, **options):
        real(table, dest, **options)
        calls.append(dest)
        if len(calls) == kill_at:
            os._exit(9)  # 1: after the new metrics file, 2: after the run row's switch
    store.atomic_write_table = write
    st = store.Store({out!r})
    row = st.scan().finished.iloc[0].to_dict()
    metrics = st.metrics({{row["run_id"]}})
    metrics["train_seconds"] *= 2
    st.write_run(metrics, dict(row, train_seconds=row["train_seconds"] * 2))
""")


@pytest.mark.parametrize("kill_at", [0, 1, 2])
def test_a_kill_at_any_point_of_a_replacement_leaves_the_old_or_the_new_run_whole(tmp_path, kill_at):
    root = tmp_path / "r"
    run_jobs(tiny_jobs("uniform", seeds=(0,)), root, ["cpu"], progress=False)
    (old,) = Store(root).scan().finished.itertuples()
    script = KILL_AT.format(root=str(ROOT), kill_at=kill_at, out=str(root))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    scan = assert_whole(root)
    (now,) = scan.finished.itertuples()
    if kill_at < 2:  # before the switch: the old run, whole
        assert (now.metrics_file, now.metrics_sha256, now.train_seconds) == (old.metrics_file, old.metrics_sha256,
                                                                              old.train_seconds)
    else:  # after it: the new run, whole
        assert now.metrics_file != old.metrics_file and now.train_seconds == 2 * old.train_seconds
        assert Store(root).metrics()["train_seconds"].max() == 2 * old.train_seconds
    Store(root).tidy()  # the next command's start removes the file the switch left behind
    assert [p.name for p in (root / "metrics").iterdir()] == [now.metrics_file]
