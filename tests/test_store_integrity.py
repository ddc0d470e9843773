"""The store never lies: damaged, missing, partial and foreign files are named in one line and their runs count
as unfinished; report reads without writing into the store; version 1 stores read and upgrade; the types read
the same in pandas, polars and duckdb; one command per store; GPU sharing is detected."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import datasets
import run_benchmark
from benchmark import report, runner
from benchmark import store as store_mod
from benchmark.config import RunConfig
from benchmark.errors import BenchError
from benchmark.runner import build_jobs, parse_strategies, run_jobs
from benchmark.store import RUNS_SCHEMA, Store, StoreWarning, load
from conftest import ROOT, tiny_image


def tiny_jobs(strategies="uniform,int", seeds=(0, 1)):
    refs = [datasets.ImageRef("tiny", loader=tiny_image)]
    return build_jobs(refs, parse_strategies(strategies), list(seeds), iters=5, eval_every=5,
                      model_params={"depth": 2, "width": 8}, lpips=False, suite="test")


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory):
    """Four finished tiny runs; tests copy it."""
    root = tmp_path_factory.mktemp("base") / "r"
    jobs = tiny_jobs()
    run_jobs(jobs, root, ["cpu"], progress=False)
    return root, jobs


@pytest.fixture
def store(finished_store, tmp_path):
    import shutil

    root, jobs = finished_store
    copy = tmp_path / "r"
    shutil.copytree(root, copy)
    return copy, jobs


def warned(fn, *args, **kw):
    """fn's result and the StoreWarning lines it gave."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kw)
    return result, [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]


def half_rows(path):
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows // 2), path)


def cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path):
    path.write_bytes(b"\x00garbage!" * (path.stat().st_size // 9 + 1))


DAMAGE = {  # how, which file, the expected message after "counted as unfinished: "
    "metrics deleted": (lambda p: p.unlink(), "metrics", "its metrics file metrics/{id}.parquet is missing"),
    "metrics with half its rows": (half_rows, "metrics", "its metrics file metrics/{id}.parquet has {n} bytes, "
                                   "the run row says {m}"),
    "metrics truncated": (cut, "metrics", "its metrics file metrics/{id}.parquet has {n} bytes, the run row says {m}"),
    "metrics zero bytes": (lambda p: p.write_bytes(b""), "metrics", "its metrics file metrics/{id}.parquet is empty "
                           "(0 bytes)"),
    "metrics garbage of its size": (lambda p: p.write_bytes(b"x" * p.stat().st_size), "metrics",
                                    "its metrics file metrics/{id}.parquet does not match the run row's sha256 "
                                    "(changed or damaged)"),
    "run row zero bytes": (lambda p: p.write_bytes(b""), "runs", "its run row runs/{id}.parquet is empty (0 bytes)"),
    "run row garbage": (garbage, "runs", "its run row runs/{id}.parquet is unreadable ("),
    "run row truncated": (cut, "runs", "its run row runs/{id}.parquet is unreadable ("),
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_run_is_named_left_out_and_redone(store, how):
    root, jobs = store
    damage, sub, expected = DAMAGE[how]
    victim = jobs[1].cfg.run_id
    path = root / sub / f"{victim}.parquet"
    size = path.stat().st_size
    damage(path)
    expected = expected.format(id=victim, n=path.stat().st_size if path.exists() else 0, m=size)

    (runs, metrics), lines = warned(load, root)
    assert len(lines) == 1 and lines[0].startswith(f"{root}: run {victim} is counted as unfinished: {expected}")
    assert "\n" not in lines[0]
    assert victim not in set(runs["run_id"]) and victim not in set(metrics["run_id"]) and len(runs) == 3
    assert victim in Store(root).incomplete()

    again, _ = warned(run_jobs, jobs, root, ["cpu"], progress=False)
    assert [r["run_id"] for r in again] == [victim] and again[0]["status"] == "ok"  # only the damaged run redone
    scan = Store(root).scan()
    assert not scan.damaged and not scan.foreign and len(scan.finished) == 4
    assert Store(root).tidy() == []  # the rerun's write already removed the metrics file of the damaged run
    assert sorted(p.name for p in (root / "metrics").iterdir()) == sorted(scan.finished["metrics_file"])


def test_foreign_files_are_named_and_ignored(store):
    root, jobs = store
    pq.write_table(pa.table({"x": [1, 2]}), root / "runs" / "notes.parquet")
    pq.write_table(pa.table({"y": [1.0]}), root / "metrics" / "mine.parquet")
    (root / "metrics" / "junk.parquet").write_bytes(b"not parquet at all")
    (runs, _), lines = warned(load, root)
    assert len(runs) == 4
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert f"{root}: ignored runs/notes.parquet: is not a run file (lacks run_id, status, error, …)" in lines
    assert f"{root}: ignored metrics/mine.parquet: not a metrics file (other columns or name)" in lines
    assert any(line.startswith(f"{root}: ignored metrics/junk.parquet: not a metrics file (") for line in lines)
    assert warned(run_jobs, jobs, root, ["cpu"], progress=False)[0] == []  # nothing redone, nothing deleted
    assert (root / "runs" / "notes.parquet").exists() and (root / "metrics" / "junk.parquet").exists()


def test_report_leaves_damaged_runs_out_and_says_so(store, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    root, jobs = store
    victim = jobs[0].cfg.run_id
    (root / "metrics" / f"{victim}.parquet").unlink()
    pq.write_table(pa.table({"x": [1]}), root / "runs" / "notes.parquet")
    result, _ = warned(report.build_report, root, tmp_path / "rep", resamples=20)
    text = result["report"].read_text()
    assert "3 finished runs" in text
    assert ("Left out: 1 run(s) whose files are damaged (see Incomplete runs); ignored runs/notes.parquet: is not a "
            "run file") in text
    row = result["incomplete"].set_index("run_id").loc[victim]
    assert row["status"] == "damaged (left out)" and row["error"] == f"its metrics file metrics/{victim}.parquet is missing"


# --- report safety -------------------------------------------------------------------------------------------
def tree(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_report_never_writes_into_results(store, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    root, _ = store
    before = tree(root)
    assert report.main(["--results", str(root), "--out", str(tmp_path / "rep"), "--resamples", "20"]) == 0
    assert tree(root) == before
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(BenchError, match="is not a results directory"):
        report.main(["--results", str(plain), "--out", str(tmp_path / "rep2")])
    assert list(plain.iterdir()) == []  # no metrics/, no store.json
    (plain / "runs").mkdir()
    with pytest.raises(BenchError, match="no finished runs"):
        report.main(["--results", str(plain), "--out", str(tmp_path / "rep2")])
    assert [p.name for p in plain.iterdir()] == ["runs"]


def test_report_out_errors_are_one_line_and_name_out(store, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    root, _ = store
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(BenchError) as err:
        report.main(["--results", str(root), "--out", str(a_file)])
    assert str(err.value) == f"--out {a_file} is a file, not a folder; choose a folder for the report"
    with pytest.raises(BenchError) as err:
        report.main(["--results", str(root), "--out", str(a_file / "sub")])
    assert str(err.value) == (f"cannot write the report to --out {a_file / 'sub'}: Not a directory; choose another "
                              "--out (e.g. --out /tmp/report)")

    real_access = os.access
    monkeypatch.setattr(report.os, "access", lambda p, m: False if str(p) == str(tmp_path / "ro") else real_access(p, m))
    with pytest.raises(BenchError) as err:
        report.main(["--results", str(root), "--out", str(tmp_path / "ro")])
    assert str(err.value) == f"--out {tmp_path / 'ro'} is not writable; choose another --out (e.g. --out /tmp/report)"

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "write_table", full)
    with pytest.raises(BenchError) as err:
        report.main(["--results", str(root), "--out", str(tmp_path / "rep"), "--resamples", "20"])
    assert str(err.value) == (f"no space left on the device while writing the report to --out {tmp_path / 'rep'}; "
                              "free some space or choose another --out")


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not stop root")
def test_report_from_a_read_only_results_folder(store, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    root, _ = store
    for p in [root, *root.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        assert report.main(["--results", str(root), "--out", str(tmp_path / "rep"), "--resamples", "20"]) == 0
        with pytest.raises(BenchError, match=f"cannot write the report to --out {root / 'report'}: Permission denied"):
            report.main(["--results", str(root)])
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def cfg_row(seed=0, image="img1", digest="aaa", **kw):
    cfg = RunConfig(image=image, image_sha256=digest, strategy="uniform", seed=seed, iters=10, **kw)
    return {"run_id": cfg.run_id, "label": cfg.label, "config": json.dumps(cfg.to_dict(), sort_keys=True)}


def test_config_key_is_the_run_id_without_the_seed_and_mixed_setups_are_refused():
    same = pd.DataFrame([cfg_row(0), cfg_row(1), cfg_row(0, image="img2", digest="bbb")])
    keys = [store_mod.config_key(c) for c in same["config"]]
    assert keys[0] == keys[1] != keys[2]  # seeds share a key, another image does not
    assert len(set(same["run_id"])) == 3
    store_mod.check_same_setup(same)  # seeds and images are what a row averages over
    tf32 = pd.DataFrame([cfg_row(0), cfg_row(1, tf32=True)])
    assert store_mod.setup_differences(tf32) == ["uniform: 2 runs differ in tf32"]
    pixels = pd.DataFrame([cfg_row(0), cfg_row(1, digest="other")])
    assert store_mod.setup_differences(pixels) == ["uniform: 2 runs differ in image_sha256 of img1"]
    evals = pd.DataFrame([cfg_row(0), cfg_row(1, eval_every=5)])
    with pytest.raises(BenchError, match=r"^runs that would be averaged in one row differ in more than their seed: "
                                         r"uniform: 2 runs differ in eval_every; report each set-up"):
        store_mod.check_same_setup(evals)
    shown = pd.DataFrame([cfg_row(0), cfg_row(1, mt_ratio=0.5)])  # a column of the tables: separate rows anyway
    assert store_mod.setup_differences(shown) == []


def test_report_refuses_to_average_runs_of_different_setups(tmp_path):
    from test_report import write_run

    st = Store(tmp_path / "res")
    for seed, tf32 in ((0, False), (1, True)):
        write_run(st, f"u{seed}", "uniform", "img1", lambda t: 20 + t / 60, seed=seed)
        row = pq.read_table(st.root / "runs" / f"u{seed}.parquet").to_pandas()
        row["config"] = json.dumps({"max_size": 0, "tf32": tf32})
        row["config_key"] = None
        store_mod.atomic_write_table(store_mod._runs_table(row), st.root / "runs" / f"u{seed}.parquet")
    with pytest.raises(BenchError, match="uniform: 2 runs differ in tf32"):
        report.main(["--results", str(st.root), "--out", str(tmp_path / "rep")])
    assert not (tmp_path / "rep").exists()


# --- version 2 types, readers, version 1 ---------------------------------------------------------------------
@pytest.fixture
def typed_store(tmp_path):
    """One ok run and one diverged run (diverged_at set), written as the runner writes them."""
    from test_report import write_run

    st = Store(tmp_path / "res")
    write_run(st, "ok-run", "uniform", "img1", lambda t: 20 + t / 60)
    write_run(st, "nan-run", "nint", "img1", lambda t: 20 + t / 60)
    row = pq.read_table(st.root / "runs" / "nan-run.parquet").to_pandas()
    row["status"], row["diverged_at"], row["height"] = "diverged", 7, 12
    row["started_at"] = pd.Timestamp("2026-01-02T03:04:05.123456Z")
    store_mod.atomic_write_table(store_mod._runs_table(row), st.root / "runs" / "nan-run.parquet")
    return st.root


def test_parquet_types_in_pandas_polars_and_duckdb(typed_store):
    import duckdb
    import polars as pl

    root = typed_store
    schema = pq.read_schema(root / "runs" / "nan-run.parquet")
    assert schema.field("started_at").type == pa.timestamp("us", tz="UTC") and schema.field("diverged_at").type == pa.int64()
    assert schema.names == RUNS_SCHEMA.names

    runs = pd.read_parquet(root / "runs").set_index("run_id")
    assert str(runs["started_at"].dtype) == "datetime64[us, UTC]" and str(runs["diverged_at"].dtype) == "Int64"
    assert runs.loc["nan-run", "diverged_at"] == 7 and pd.isna(runs.loc["ok-run", "diverged_at"])
    assert runs.loc["nan-run", "started_at"] == pd.Timestamp("2026-01-02T03:04:05.123456Z")
    assert json.loads(runs.loc["ok-run", "model_params"]) == {}

    plr = pl.read_parquet(str(root / "runs" / "*.parquet")).sort("run_id")
    assert plr.schema["started_at"] == pl.Datetime("us", "UTC") and plr.schema["diverged_at"] == pl.Int64
    assert plr["diverged_at"].to_list() == [7, None]
    plm = pl.read_parquet(str(root / "metrics" / "*.parquet"))
    assert plm.schema["iteration"] == pl.Int64 and plm.height == 2 * 1001

    types = duckdb.sql(f"select typeof(started_at), typeof(diverged_at), typeof(metrics_rows) "
                       f"from '{root}/runs/*.parquet' limit 1").fetchall()[0]
    assert types == ("TIMESTAMP WITH TIME ZONE", "BIGINT", "BIGINT")
    joined = duckdb.sql(f"select r.label, count(*) from '{root}/runs/*.parquet' r join '{root}/metrics/*.parquet' m "
                        "using (run_id) group by r.label order by r.label").fetchall()
    assert joined == [("nint", 1001), ("uniform", 1001)]

    loaded, _ = load(root)
    assert str(loaded["diverged_at"].dtype) == "Int64" and str(loaded["finished_at"].dtype) == "datetime64[us, UTC]"


V1_TYPES = {"started_at": pa.string(), "finished_at": pa.string()}


def make_v1(root):
    """Rewrite a store as version 1 wrote it: times as ISO strings, no metrics columns, no config_key."""
    v1 = pa.schema([pa.field(f.name, V1_TYPES.get(f.name, f.type)) for f in RUNS_SCHEMA
                    if f.name in store_mod.V1_COLUMNS + ["peak_memory_mb"]])
    for path in (root / "runs").glob("*.parquet"):
        df = pq.read_table(path).to_pandas()
        for name in V1_TYPES:
            df[name] = [t.isoformat(timespec="seconds") if pd.notna(t) else None for t in df[name]]
        df["diverged_at"] = df["diverged_at"].astype("float64")
        pq.write_table(pa.Table.from_pandas(df[v1.names], schema=v1, preserve_index=False), path)
    (root / "store.json").write_text(json.dumps({"schema_version": 1}))


def test_a_version_1_store_reads_refuses_new_runs_and_upgrades(store, capsys):
    root, jobs = store
    v2_runs, v2_metrics = load(root)
    make_v1(root)
    victim = jobs[2].cfg.run_id
    half_rows(root / "metrics" / f"{victim}.parquet")

    (runs, metrics), lines = warned(load, root)  # legacy rows: unverified, but a truncated file is still seen
    assert lines == [f"{root}: run {victim} is counted as unfinished: its metrics file metrics/{victim}.parquet "
                     "holds 3 rows up to iteration 2, the run has 5 iterations (truncated)"]
    assert len(runs) == 3 and str(runs["started_at"].dtype) == "datetime64[us, UTC]"
    assert runs["metrics_sha256"].isna().all()
    by_id = v2_runs.set_index("run_id")
    assert (runs.set_index("run_id")["config_key"] == by_id.loc[runs["run_id"], "config_key"]).all()

    with pytest.raises(BenchError) as err:
        run_jobs(jobs, root, ["cpu"], progress=False)
    assert str(err.value) == (f"{root} is a version 1 store; upgrade it first with `python3 -m benchmark.store "
                              f"upgrade {root}` (keeps every run, adds checksums)")

    assert store_mod.main(["upgrade", str(root)]) == 0
    out = capsys.readouterr()
    assert out.out == f"{root}: 4 run rows rewritten as version 2\n"
    assert out.err == (f"{root}: run {victim}: its metrics file metrics/{victim}.parquet holds 3 rows up to iteration "
                       "2, the run has 5 iterations (truncated); left without checksum\n")
    assert json.loads((root / "store.json").read_text()) == {"schema_version": 2}
    scan = Store(root, readonly=True).scan()
    assert set(scan.damaged) == {victim} and len(scan.finished) == 3
    assert scan.finished["metrics_sha256"].str.len().eq(64).all()
    assert store_mod.main(["upgrade", str(root)]) == 0 and "already version 2" in capsys.readouterr().out

    again, _ = warned(run_jobs, jobs, root, ["cpu"], progress=False)  # a version 2 store: the damaged run is redone
    assert [r["run_id"] for r in again] == [victim]
    runs, metrics = load(root)
    assert len(runs) == 4 and len(metrics) == len(v2_metrics)


def test_compact_rewrites_old_metrics_files_and_run_rows_with_the_same_values(tmp_path, monkeypatch, capsys):
    root = tmp_path / "r"
    monkeypatch.setattr(store_mod, "METRICS_ENCODING", {})  # Parquet's defaults, as stores written before
    monkeypatch.setattr(store_mod, "RUN_ENCODING", {})
    run_jobs(tiny_jobs(), root, ["cpu"], progress=False)
    monkeypatch.undo()
    st = store_mod.Store(root)
    row = st.scan().finished.iloc[0].to_dict()
    monkeypatch.setattr(store_mod, "RUN_ENCODING", {})
    st.write_run(st.metrics({row["run_id"]}), row)  # one run whose metrics are compact already, its row not
    monkeypatch.undo()
    key = ["run_id", "iteration"]
    runs, metrics = load(root)
    direct = pd.read_parquet(root / "runs")  # what a user reading the folder with pandas gets
    assert sum(store_mod.is_compact(p) for p in (root / "metrics").iterdir()) == 1
    assert not any(store_mod.is_compact_run_file(p) for p in (root / "runs").iterdir())
    bytes_before = sum(p.stat().st_size for p in (root / "runs").iterdir())
    assert store_mod.main(["compact", str(root)]) == 0
    assert capsys.readouterr().out.startswith(f"{root}: 4 runs rewritten, ")
    after_runs, after = load(root)
    pd.testing.assert_frame_equal(after.sort_values(key).reset_index(drop=True),
                                  metrics.sort_values(key).reset_index(drop=True))
    drop = ["metrics_file", "metrics_bytes", "metrics_sha256"]
    pd.testing.assert_frame_equal(after_runs.drop(columns=drop).sort_values("run_id").reset_index(drop=True),
                                  runs.drop(columns=drop).sort_values("run_id").reset_index(drop=True))
    direct_after = pd.read_parquet(root / "runs")
    assert direct_after.dtypes.equals(direct.dtypes) and str(direct_after["diverged_at"].dtype) == "Int64"
    assert str(direct_after["started_at"].dtype) == "datetime64[us, UTC]"
    files = list((root / "metrics").iterdir())
    assert len(files) == 4 and all(store_mod.is_compact(p) for p in files)  # the old files are gone
    assert all(store_mod.is_compact_run_file(p) for p in (root / "runs").iterdir())
    assert sum(p.stat().st_size for p in (root / "runs").iterdir()) < 0.6 * bytes_before
    scan = Store(root, readonly=True).scan()
    assert not scan.damaged and not scan.orphans and not scan.foreign
    assert store_mod.main(["compact", str(root)]) == 0 and "all compact already" in capsys.readouterr().out
    run_jobs(tiny_jobs("egra", seeds=(0,)), root, ["cpu"], progress=False)  # new runs are written compact
    assert all(store_mod.is_compact(p) for p in (root / "metrics").iterdir())
    assert all(store_mod.is_compact_run_file(p) for p in (root / "runs").iterdir())


def test_run_rows_read_back_the_same_without_the_compact_writer(tmp_path, monkeypatch):
    """pyarrow < 17 cannot add the pandas metadata alone: the row then keeps its Arrow schema and reads the same,
    and compact leaves it so."""
    root = tmp_path / "r"
    run_jobs(tiny_jobs("uniform", seeds=(0,)), root, ["cpu"], progress=False)
    (path,) = (root / "runs").iterdir()
    compact_row = pd.read_parquet(path)
    monkeypatch.setattr(store_mod, "COMPACT_ROWS", False)
    row = Store(root).scan().finished.iloc[0].to_dict()
    Store(root).write_run(Store(root).metrics({row["run_id"]}), row)
    old_style = pd.read_parquet(path)
    assert not store_mod.is_compact_run_file(path)
    assert old_style.dtypes.equals(compact_row.dtypes) and str(old_style["diverged_at"].dtype) == "Int64"
    drop = ["metrics_file"]
    pd.testing.assert_frame_equal(old_style.drop(columns=drop), compact_row.drop(columns=drop))
    assert store_mod.compact(root)[0] == 0


def test_every_committed_store_reads(tmp_path):
    """The stores under results/ load with every finished run verified (legacy checks for version 1)."""
    stores = [d for d in sorted((ROOT / "results").iterdir()) if (d / "runs").is_dir()]
    assert stores
    for d in stores[:3]:
        (runs, _), lines = warned(load, d)
        assert lines == [] and len(runs) > 0, d


# --- one writer per store ------------------------------------------------------------------------------------
def test_a_second_command_on_the_same_store_refuses_in_one_line(store, capsys):
    root, jobs = store
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from benchmark.runner import store_lock
        with store_lock(Path({str(root)!r})):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BenchError) as err:
            run_jobs(jobs, root, ["cpu"], force=True, progress=False)
        assert str(err.value).startswith(f"{root} is in use by another nint-bench command (pid {holder.pid}@")
        assert str(err.value).endswith("; wait for it to end, or run with another --out")
        image = root.parent / "img.png"
        import imageio.v3 as iio

        iio.imwrite(image, tiny_image())
        code = run_benchmark.main(["--suite", str(image), "--strategies", "uniform", "--iters", "3", "--no-lpips",
                                   "--no-progress", "--out", str(root)])
        err_lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err_lines) == 1 and "is in use by another nint-bench command" in err_lines[0]
    finally:
        holder.kill()
        holder.wait()
    assert len(run_jobs(jobs, root, ["cpu"], force=True, progress=False)) == 4  # the lock went with its holder


# --- execution mode ------------------------------------------------------------------------------------------
SMI = """GPU-1111aaaa-0000-0000-0000-000000000000, 4242
GPU-1111aaaa-0000-0000-0000-000000000000, {me}
GPU-2222bbbb-0000-0000-0000-000000000000, 777
"""


def test_the_gpu_process_list_marks_shared_runs(monkeypatch):
    me = os.getpid()
    apps = runner.parse_compute_apps(SMI.format(me=me) + "No running processes found\n")
    assert apps == {"1111aaaa-0000-0000-0000-000000000000": {4242, me}, "2222bbbb-0000-0000-0000-000000000000": {777}}
    monkeypatch.setattr(runner, "gpu_uuid", lambda dev: {"cuda:0": "1111aaaa-0000-0000-0000-000000000000",
                                                          "cuda:1": "2222bbbb-0000-0000-0000-000000000000"}[dev])
    alone = f"GPU-1111aaaa-0000-0000-0000-000000000000, {me}\n"
    assert runner.foreign_gpu_processes("cuda:0", query=lambda: SMI.format(me=me)) == 1  # 4242, by pid
    assert runner.foreign_gpu_processes("cuda:0", query=lambda: alone) == 0
    # Another pid namespace (a container): our pid is not listed, so every process beyond our own counts.
    assert runner.foreign_gpu_processes("cuda:1", query=lambda: SMI.format(me=me)) == 0
    assert runner.foreign_gpu_processes("cuda:1", query=lambda: SMI.format(me=me) + "GPU-2222bbbb-0000, 5\n") == 0
    assert runner.foreign_gpu_processes("cuda:1", query=lambda: SMI.format(me=me)
                                        + "GPU-2222bbbb-0000-0000-0000-000000000000, 778\n") == 1

    def missing():
        raise FileNotFoundError("nvidia-smi")

    assert runner.foreign_gpu_processes("cuda:0", query=missing) is None
    assert runner.sharing_mode("exclusive", "cuda:0", 0, 0) == "exclusive"
    assert runner.sharing_mode("exclusive", "cuda:0", 0, 1) == "shared-external"
    assert runner.sharing_mode("exclusive", "cuda:0", 2, None) == "shared-external"
    assert runner.sharing_mode("exclusive", "cuda:0", None, 0) == "exclusive-unchecked"
    assert runner.sharing_mode("shared-2", "cuda:0", 3, 3) == "shared-2"
    assert runner.sharing_mode("exclusive", "cpu", None, None) == "exclusive"
