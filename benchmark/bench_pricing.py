"""How well a timing profile's cost per step prices a run's time, checked on a store's measured exclusive runs.

    python -m benchmark.bench_pricing --results results/kodak24-table-a [--psnr 30] [--steps 200]
        [--out results/bench]

A profile (benchmark/profiles.py) measures each kind of step over the first PROFILE_STEPS steps of one fit and
prices a run as the sum of its steps' costs. For strategies whose every step is one kind (SINGLE_KIND, dense
interval, constant ratio), each measured run holds its own profile: its first `--steps` steps. This script
prices each such run's train-seconds to `--psnr` dB (or to its end, if it never reaches it) from them, once at
their mean (what profiles.kind_costs uses) and once at their median, against the run's measured
train-seconds. No GPU needed: it reads the per-iteration train-seconds the store already holds. Prints a table
and writes results/bench/pricing-<store>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import store as store_mod
from benchmark.analysis import timing_group
from benchmark.errors import BenchError
from benchmark.profiles import PROFILE_STEPS, SKIP_FIRST, kind_costs

# strategies whose steps are all of one kind under a dense interval and a constant ratio
SINGLE_KIND = ("standard", "uniform", "egra", "expansive")


def price_run(step_seconds: np.ndarray, psnr: np.ndarray, level: float, steps: int) -> dict:
    """Priced against measured train-seconds at the first iteration reaching `level` (else the last)."""
    cumulative = np.concatenate([[0.0], np.cumsum(step_seconds)])
    hit = np.flatnonzero(psnr >= level)
    at = int(hit[0]) if len(hit) else len(cumulative) - 1
    sample = step_seconds[:steps]
    mean_ms = kind_costs(sample, ["one"] * len(sample))["one"]["ms"]
    median_ms = 1000.0 * statistics.median(sample[SKIP_FIRST:] if len(sample) > SKIP_FIRST else sample)
    measured = float(cumulative[at])
    return {"iteration": at, "reached": bool(len(hit)), "measured_s": measured,
            "mean_error": mean_ms * at / 1000.0 / measured - 1.0 if measured > 0 else None,
            "median_error": median_ms * at / 1000.0 / measured - 1.0 if measured > 0 else None}


def check_store(root: str, level: float, steps: int) -> pd.DataFrame:
    runs, metrics = store_mod.load(root)
    cfg = runs["config"].map(json.loads)
    keep = (runs["strategy"].isin(SINGLE_KIND) & (runs["interval"] == "dense")
            & (runs["ratio_schedule"] == "constant") & (runs["execution_mode"] == "exclusive")
            & (runs["iters"] > steps) & cfg.map(lambda c: c.get("timing", "measured") != "profile"))
    runs = runs[keep]
    if runs.empty:
        raise BenchError(f"{root} holds no finished exclusive runs of {', '.join(SINGLE_KIND)} (dense interval, "
                         f"constant ratio, more than {steps} iterations) to check the pricing on")
    rows = []
    for _, run in runs.iterrows():
        m = metrics[metrics["run_id"] == run["run_id"]].sort_values("iteration")
        seconds = m["train_seconds"].to_numpy(dtype=float)
        rows.append({"run_id": run["run_id"], "strategy": run["strategy"], "image": run["image"],
                     "seed": int(run["seed"]), "timing_group": timing_group(run),
                     **price_run(np.diff(seconds), m["psnr"].to_numpy(dtype=float), level, steps)})
    return pd.DataFrame(rows)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    def stats(g: pd.DataFrame) -> pd.Series:
        return pd.Series({"runs": len(g), "mean_pricing_max_abs": g["mean_error"].abs().max(),
                          "mean_pricing_mean": g["mean_error"].mean(),
                          "median_pricing_max_abs": g["median_error"].abs().max(),
                          "median_pricing_mean": g["median_error"].mean()})
    return rows.groupby("strategy")[["mean_error", "median_error"]].apply(stats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True, help="a results store with measured exclusive runs")
    ap.add_argument("--psnr", type=float, default=30.0, help="price the time to first reach this PSNR (dB)")
    ap.add_argument("--steps", type=int, default=PROFILE_STEPS, help="steps of each run that act as its profile")
    ap.add_argument("--out", default="results/bench")
    args = ap.parse_args(argv)
    try:
        if not Path(args.results).is_dir():
            raise BenchError(f"--results {args.results} is not a directory; pass a results store")
        rows = check_store(args.results, args.psnr, args.steps)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = summarize(rows)
    groups = sorted(rows["timing_group"].unique())
    print(f"{args.results}: time to {args.psnr:g} dB priced from each run's first {args.steps} steps "
          f"(first {SKIP_FIRST} left out) against its measured train-seconds")
    print("timing group(s): " + "; ".join(groups))
    print(f"{'strategy':10s} {'runs':>5} {'mean: max |err|':>16} {'mean err':>9} {'median: max |err|':>18} "
          f"{'mean err':>9}")
    for name, r in table.iterrows():
        print(f"{name:10s} {int(r['runs']):>5} {100 * r['mean_pricing_max_abs']:>15.2f}% "
              f"{100 * r['mean_pricing_mean']:>+8.2f}% {100 * r['median_pricing_max_abs']:>17.2f}% "
              f"{100 * r['median_pricing_mean']:>+8.2f}%")
    dest = Path(args.out) / f"pricing-{Path(args.results).resolve().name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    report = {"results": args.results, "level_db": args.psnr, "profile_steps": args.steps, "skip_first": SKIP_FIRST,
              "timing_groups": groups, "summary": table.reset_index().to_dict(orient="records"),
              "runs": rows.to_dict(orient="records")}
    store_mod.atomic_write_text(json.dumps(report, indent=1, default=float) + "\n", dest)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
