"""Warm-up benchmark: the first timed step of a run in a fresh process against its median step, with and
without the fit loop's untimed warm-up (benchmark/fit.py, warm_up_outside_timing).

    python -m benchmark.bench_warmup --image kodim03.png [--strategies standard,uniform,int,nint,soft-mining]
        [--iters 200] [--out results/bench]

Each (strategy, warm-up on/off) runs in a new Python process, so the one-off costs of a fresh process (cuBLAS
start-up, torch.func's first JVP, first kernel launches) land where they would in a benchmark run. Prints
step 0, step 1 and the median step in ms, and step 0 / median; writes results/bench/warmup-<gpu>.json.
Step 0 of a strategy that trains on every pixel or scores every pixel at step 0 (EVOS, NINT) is a costlier
kind of step by design, so each row also compares step 0 with the median of the later steps of its own kind
(`Strategy.step_kind`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

DEFAULT_STRATEGIES = "standard,uniform,egra,expansive,soft-mining,evos,int,nint"


def measure(image: str, size: int, strategy: str, iters: int, warm_up: bool, device: str) -> dict:
    """One fit in this process; per-step train-seconds of steps 0, 1 and the median step."""
    import datasets
    from benchmark.bench_speed import run_config
    from benchmark.fit import fit

    img = datasets.to_uint8(datasets.resize_longest(datasets.load_image(image), size))
    cfg = run_config(Path(image).stem, img, strategy, iters, lpips=False)
    result = fit(cfg, img, device, warm_up=warm_up)
    steps = np.diff(result.metrics["train_seconds"].to_numpy()) * 1000.0
    median = float(np.median(steps))
    # step 0 of NINT (an NTK refresh) or EVOS (a fitness step) is a costlier kind of step: compare it with the
    # later steps of its own kind
    kinds = np.asarray(result.step_kinds)
    later_same = steps[1:][kinds[1:] == kinds[0]]
    same = float(np.median(later_same)) if later_same.size else float("nan")
    return {"strategy": strategy, "warm_up": warm_up, "step0_ms": float(steps[0]), "step1_ms": float(steps[1]),
            "median_ms": median, "step0_over_median": float(steps[0]) / median, "step0_kind": str(kinds[0]),
            "same_kind_steps": int(later_same.size), "same_kind_median_ms": same,
            "step0_over_same_kind": float(steps[0]) / same, "height": int(img.shape[0]), "width": int(img.shape[1])}


def run_child(args: argparse.Namespace, strategy: str, warm_up: bool) -> dict:
    """measure() in a fresh interpreter; its JSON line back."""
    cmd = [sys.executable, "-m", "benchmark.bench_warmup", "--child", "--image", args.image, "--size", str(args.size),
           "--strategies", strategy, "--iters", str(args.iters), "--device", args.device,
           *([] if warm_up else ["--no-warm-up"])]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise SystemExit(f"error: {strategy} (warm-up {'on' if warm_up else 'off'}) failed: "
                         f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_header() -> None:
    print(f"{'strategy':14s} {'warm-up':8s} {'step 0 ms':>10s} {'step 1 ms':>10s} {'median ms':>10s} {'0/median':>9s} "
          f"{'step 0 kind':>12s} {'kind median':>12s} {'0/kind':>7s}", flush=True)


def print_row(r: dict) -> None:
    print(f"{r['strategy']:14s} {'on' if r['warm_up'] else 'off':8s} {r['step0_ms']:10.3f} {r['step1_ms']:10.3f} "
          f"{r['median_ms']:10.3f} {r['step0_over_median']:9.2f} {r['step0_kind']:>12s} "
          f"{r['same_kind_median_ms']:12.3f} {r['step0_over_same_kind']:7.2f}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.bench_warmup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="an image file")
    p.add_argument("--size", type=int, default=0, help="longest side (0 = native)")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES)
    p.add_argument("--iters", type=int, default=200, help="steps per fit (>= 2)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--out", default="results/bench")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-warm-up", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.iters < 2:
        p.error("--iters must be >= 2")
    names = [s for s in args.strategies.split(",") if s]
    if args.child:
        print(json.dumps(measure(args.image, args.size, names[0], args.iters, not args.no_warm_up, args.device)))
        return 0
    from benchmark.store import atomic_write_text

    gpu = _gpu_name(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"warmup-{gpu.replace(' ', '_')}.json"
    rows: list[dict] = []
    print_header()
    for name in names:
        for warm in (False, True):
            rows.append(run_child(args, name, warm))
            print_row(rows[-1])
            # rewritten after every row: a run stopped part-way still leaves the rows it measured
            atomic_write_text(json.dumps({"device": gpu, "image": args.image, "iters": args.iters, "rows": rows},
                                         indent=1), path)
    print(f"wrote {path}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"


if __name__ == "__main__":
    sys.exit(main())
