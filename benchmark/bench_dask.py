"""How much faster does a grid run on 2 Dask workers than on 1? (CPU, tiny runs)

    python -m benchmark.bench_dask [--iters 200] [--max-size 32] [--repeats 2] [--name dask-cpu]

A 12-run grid (the three builtin images × uniform, int × seeds 0, 1; SIREN 2×32) runs once on a
LocalCluster of 1 worker process and once on one of 2 (one thread each), each into a fresh store. The
timed part is the grid alone: the cluster is started and its workers have imported torch and nint-bench
before the clock starts (the start-up is reported separately). The two sizes alternate (1, 2, 1, 2, ...)
for --repeats rounds and the fastest grid of each counts, so a burst of other work on the machine slows one
round rather than one side. Prints a table and writes results/bench/<name>.json with the command that
produced it, every round and the load average. On a machine shared with other work the speed-up is below
what the cores allow.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchmark.store import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent


def _import_everything() -> bool:
    import benchmark.fit  # noqa: F401
    import benchmark.runner  # noqa: F401
    import skimage.data  # noqa: F401

    return True


def grid(iters: int, max_size: int) -> list:
    import datasets
    from benchmark.runner import build_jobs, parse_strategies

    return build_jobs(datasets.suite_images("builtin"), parse_strategies("uniform,int"), [0, 1], suite="builtin",
                      iters=iters, eval_every=50, max_size=max_size, lpips=False,
                      model_params={"depth": 2, "width": 32})


def measure(workers: int, iters: int, max_size: int) -> dict:
    from distributed import Client, LocalCluster

    from benchmark.runner import run_jobs

    jobs = grid(iters, max_size)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.run(_import_everything)
        startup = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as out:
            t1 = time.perf_counter()
            rows = run_jobs(jobs, out, progress=False, dask=cluster.scheduler_address)
            wall = time.perf_counter() - t1
    bad = [r for r in rows if r["status"] != "ok"]
    if len(rows) != len(jobs) or bad:
        raise SystemExit(f"{len(bad)} of {len(jobs)} runs did not finish ok: {bad[:1]}")
    return {"workers": workers, "runs": len(rows), "grid_seconds": round(wall, 3), "startup_seconds": round(startup, 3),
            "mean_run_wall_seconds": round(sum(r["wall_seconds"] for r in rows) / len(rows), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--max-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="rounds of (1 worker, 2 workers)")
    p.add_argument("--name", default="dask-cpu", help="results/bench/<name>.json")
    args = p.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    load_before = os.getloadavg()[0]  # other work on the machine slows both measurements
    rounds = [measure(n, args.iters, args.max_size) for _ in range(max(args.repeats, 1)) for n in (1, 2)]
    rows = [min((r for r in rounds if r["workers"] == n), key=lambda r: r["grid_seconds"]) for n in (1, 2)]
    speedup = rows[0]["grid_seconds"] / rows[1]["grid_seconds"]
    print(f"{'workers':>7} {'runs':>4} {'grid s':>8} {'start-up s':>10} {'s/run':>6}   (fastest of {args.repeats})")
    for r in rows:
        print(f"{r['workers']:>7} {r['runs']:>4} {r['grid_seconds']:>8.2f} {r['startup_seconds']:>10.2f} "
              f"{r['mean_run_wall_seconds']:>6.2f}")
    print(f"speed-up of 2 workers over 1: {speedup:.2f}x")
    result = {"command": " ".join(["python -m benchmark.bench_dask", *(argv if argv is not None else sys.argv[1:])]),
              "iters": args.iters, "max_size": args.max_size, "cpu_count": os.cpu_count(),
              "load_average_1min_before": round(load_before, 2),
              "load_average_1min_after": round(os.getloadavg()[0], 2), "python": platform.python_version(),
              "rows": rows, "rounds": rounds, "speedup_2_over_1": round(speedup, 3)}
    dest = REPO_ROOT / "results" / "bench" / f"{args.name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(result, indent=2) + "\n", dest)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
