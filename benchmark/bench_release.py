"""Side by side with the released NINT code: the same GPU, the same image, the same settings, in one command.

    python -m benchmark.bench_release --release-dir PATH [--iters 1000] [--seeds 0,1,2] [--out results/bench]

PATH is a checkout of github.com/chen2hang/NTK_Guided_Implicit_Neural_Teaching (not shipped with this suite).
Its `train_image.py` is run unchanged, through Hydra overrides only, in a scratch copy of PATH:

- "release train": `TRAIN_CONFIGS.no_io=1` (no evaluation), one run per seed;
- "release psnr": PSNR on the CPU every iteration, SSIM off, one run per seed, for the PSNR trajectory;
- "release default": the configuration as shipped (PSNR and SSIM on the CPU every iteration, an image
  written every 100), one seed.

ms/it for the release is the median of its own per-iteration wall-clock timestamps (`metrics_history_*.pkl`),
after 20 warm-up steps. An image fit never calls W&B, audio loading or LPIPS (LPIPS is computed only with
W&B on), but the release imports them at start-up, and LPIPS's AlexNet cannot be downloaded offline: so
`wandb`, `lpips` and (when absent) `torchaudio` are replaced by empty import-only modules. This suite's
`nint-released` (the release's score and decay) and `nint` then run on the same PNG with the same seeds,
in fp32 and with `--tf32` (`--variants` adds `compile`, `compile+tf32`, `max-autotune`, `max-autotune+tf32`,
`cudagraphs+tf32`, `bf16-scoring+tf32`, `graph-steps`, `compile+graph-steps` (both fp32: the speed flags
without TF32), `graph-steps+tf32`, `compile+graph-steps+tf32` and `compile+graph-steps+bf16-scoring+tf32`). Each variant's PSNR trajectory is compared with this suite's fp32 one
(same seeds). A compiled variant first runs a 30-iteration fit whose wall time, the one-off compile and
autotuning, is reported as `compile_s` and kept out of the per-iteration figures. The JSON lands in
results/bench/<name>-<gpu>.json (`--name`, default "release") and a table is printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import datasets
from benchmark.bench_speed import WARMUP, time_strategy
from benchmark.errors import BenchError
from benchmark.store import atomic_write_text

STUBS = {
    "wandb": "def init(*a, **k): pass\ndef log(*a, **k): pass\ndef finish(*a, **k): pass\n",
    "lpips": ("import torch\nclass LPIPS(torch.nn.Module):\n"
              "    def __init__(self, *a, **k):\n        super().__init__()\n"),
}
VARIANTS = {"fp32": {}, "tf32": {"tf32": True}, "compile": {"compile": True},
            "compile+tf32": {"compile": True, "tf32": True}, "max-autotune": {"compile": "max-autotune"},
            "max-autotune+tf32": {"compile": "max-autotune", "tf32": True},
            "cudagraphs+tf32": {"compile": "cudagraphs", "tf32": True},
            "bf16-scoring+tf32": {"bf16_scoring": True, "tf32": True},
            "graph-steps": {"graph_steps": True}, "compile+graph-steps": {"compile": True, "graph_steps": True},
            "graph-steps+tf32": {"graph_steps": True, "tf32": True},
            "compile+graph-steps+tf32": {"compile": True, "graph_steps": True, "tf32": True},
            "compile+graph-steps+bf16-scoring+tf32": {"compile": True, "graph_steps": True, "bf16_scoring": True,
                                                      "tf32": True}}
MODES = {
    "train": ["TRAIN_CONFIGS.no_io=1"],
    "psnr": ["METRIC_LOGGING.log_ssim=0", "WANDB_CONFIGS.log_ssim=0"],
    "default": [],
}


def write_stubs(folder: Path) -> list[str]:
    """Import-only modules for what an image fit never calls; returns their names."""
    stubs = dict(STUBS)
    if importlib.util.find_spec("torchaudio") is None:
        stubs["torchaudio"] = "import types\ndatasets = types.SimpleNamespace(LIBRISPEECH=object)\n"
    for name, text in stubs.items():
        (folder / f"{name}.py").write_text(text)
    return sorted(stubs)


def run_release(release: Path, stub_dir: Path, image: Path, mode: str, seed: int, iters: int) -> dict:
    """One run of the release's train_image.py in a scratch copy; its ms/it and PSNR per iteration."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "release"
        shutil.copytree(release, work, ignore=shutil.ignore_patterns("outputs", ".git"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(stub_dir), str(work), *filter(None, [os.environ.get("PYTHONPATH")])]), "HYDRA_FULL_ERROR": "1"}
        cmd = [sys.executable, "train_image.py", f"TRAIN_CONFIGS.iterations={iters}", f"TRAIN_CONFIGS.seed={seed}",
               f"DATASET_CONFIGS.file_path={image}", "METRIC_LOGGING.log_lpips=0", *MODES[mode]]
        if not torch.cuda.is_available():
            cmd.append("TRAIN_CONFIGS.gpu_devices=''")  # the release's CPU fallback, for trying this script out
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise BenchError(f"the release's train_image.py failed ({mode}, seed {seed}): "
                             + (proc.stderr.strip().splitlines() or ["no output"])[-1])
        pkl = sorted(work.glob("outputs/*/metrics_history_*.pkl"))
        if not pkl:
            raise BenchError(f"the release wrote no metrics_history_*.pkl ({mode}, seed {seed})")
        hist = pickle.loads(pkl[-1].read_bytes())
    stamps = np.asarray(hist["timestamps"], dtype=float)
    steps = np.diff(stamps)[WARMUP:] * 1000
    psnr = [float(p) if p is not None else None for p in hist["psnr"]]
    return {"mode": mode, "seed": seed, "iters": iters, "ms_median": float(np.median(steps)),
            "ms_mean": float(steps.mean()), "process_wall_s": wall,
            "psnr_last": psnr[-1] if mode != "train" else None, "psnr": psnr if mode != "train" else None}


def run_ours(image_id: str, img: np.ndarray, strategy: str, seed: int, iters: int, variant: str, device) -> dict:
    """This suite's fit as users run it (PSNR every iteration, SSIM every 100), timed as bench_speed times it;
    row t = after t updates."""
    row = time_strategy(image_id, img, strategy, iters, device, seed=seed, **VARIANTS[variant])
    return {"strategy": strategy, "variant": variant, "seed": seed, "iters": iters,
            "ms_median": row["train_ms_median"], "user_ms": row["user_ms"],
            "psnr_last": row["psnr"][iters - 1], "psnr": row["psnr"]}


def mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else float("nan")


def trajectory_vs_fp32(ours: list[dict], strategy: str, variant: str) -> dict:
    """How far a variant's PSNR trajectory (mean over the seeds both ran) lies from this suite's fp32 one:
    the mean and the largest absolute difference over the iterations, and the difference at the last."""
    fp32 = {r["seed"]: r["psnr"] for r in ours if r["strategy"] == strategy and r["variant"] == "fp32"}
    runs = {r["seed"]: r["psnr"] for r in ours if r["strategy"] == strategy and r["variant"] == variant}
    seeds = sorted(set(fp32) & set(runs))
    if variant == "fp32" or not seeds:
        return {}
    diff = np.mean([np.asarray(runs[s], float) - np.asarray(fp32[s], float) for s in seeds], axis=0)
    return {"vs_fp32_mean_abs_db": float(np.nanmean(np.abs(diff))), "vs_fp32_max_abs_db": float(np.nanmax(np.abs(diff))),
            "vs_fp32_last_db": float(diff[-1])}


def summarise(report: dict) -> list[dict]:
    """One row per configuration: mean over seeds of ms/it and of PSNR after iters-1 updates."""
    rows = []
    rel = report["release"]
    for mode in MODES:
        runs = [r for r in rel if r["mode"] == mode]
        if runs:
            rows.append({"name": f"release {mode}", "ms": mean(r["ms_median"] for r in runs),
                         "psnr": mean(r["psnr_last"] for r in runs), "seeds": len(runs)})
    for strategy in dict.fromkeys(r["strategy"] for r in report["ours"]):
        for variant in VARIANTS:
            runs = [r for r in report["ours"] if r["strategy"] == strategy and r["variant"] == variant]
            if runs:
                tag = f"ours {strategy}" + ("" if variant == "fp32" else f" {variant}")
                rows.append({"name": tag + " train", "ms": mean(r["ms_median"] for r in runs),
                             "psnr": mean(r["psnr_last"] for r in runs), "seeds": len(runs),
                             **trajectory_vs_fp32(report["ours"], strategy, variant)})
                rows.append({"name": tag + " default", "ms": mean(r["user_ms"] for r in runs),
                             "psnr": float("nan"), "seeds": len(runs)})
    base = {r["name"]: r for r in rows}
    ref_psnr = base["release psnr"]["psnr"] if "release psnr" in base else float("nan")
    for r in rows:
        ref = base.get("release default" if r["name"].endswith("default") else "release train")
        r["ratio_vs_release"] = r["ms"] / ref["ms"] if ref else float("nan")
        r["psnr_minus_release"] = r["psnr"] - ref_psnr if r["name"].startswith("ours") else float("nan")
    return rows


def print_table(report: dict) -> None:
    it = report["iters"]
    width = max(30, *(len(r["name"]) for r in report["summary"]))
    print(f"\n{'configuration':{width}s} {'ms/it':>8s} {'x release':>9s} {f'PSNR@{it - 1}':>10s} {'vs release':>10s} "
          f"{'seeds':>5s} {'vs fp32: last':>13s} {'mean |d|':>8s} {'max |d|':>8s}")
    for r in report["summary"]:
        fp32 = (f" {r['vs_fp32_last_db']:+13.3f} {r['vs_fp32_mean_abs_db']:8.3f} {r['vs_fp32_max_abs_db']:8.3f}"
                if "vs_fp32_last_db" in r else "")
        print(f"{r['name']:{width}s} {r['ms']:8.2f} {r['ratio_vs_release']:9.3f} {r['psnr']:10.3f} "
              f"{r['psnr_minus_release']:+10.3f} {r['seeds']:5d}{fp32}")
    print("ms/it: median step (train rows) or whole-run wall clock per iteration (default rows); x release: against "
          "'release train' or 'release default'; PSNR after iters-1 updates, mean over seeds; "
          "'vs release': minus 'release psnr'; 'vs fp32': the variant's PSNR trajectory (mean over seeds) minus this "
          "suite's fp32 one, at the last iteration, and its mean and largest absolute value over the iterations.")


def save(report: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{report['name']}-{report['gpu'].replace(' ', '_')}.json"
    atomic_write_text(json.dumps(report, indent=1), path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release-dir", required=True, help="checkout of the released NINT code")
    ap.add_argument("--image", help="PNG to fit (default: the release's own images/01.png, 512x512)")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strategies", default="nint-released,nint")
    ap.add_argument("--variants", default="fp32,tf32", help=f"this suite's modes, of {', '.join(VARIANTS)}")
    ap.add_argument("--skip-default", action="store_true", help="skip the release's slow as-shipped run")
    ap.add_argument("--name", default="release", help="JSON file name prefix")
    ap.add_argument("--out", default="results/bench")
    args = ap.parse_args(argv)
    release = Path(args.release_dir).resolve()
    try:
        if not (release / "train_image.py").is_file():
            raise BenchError(f"{release} has no train_image.py; pass a checkout of the released NINT code")
        image = Path(args.image).resolve() if args.image else release / "images" / "01.png"
        img = datasets.load_image(image)
        seeds = [int(s) for s in args.seeds.split(",") if s]
        variants = [v for v in args.variants.split(",") if v]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise BenchError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        report = {"name": args.name, "gpu": gpu, "torch": torch.__version__,
                  "image": str(image.name), "image_shape": list(img.shape), "iters": args.iters,
                  "release": [], "ours": []}
        with tempfile.TemporaryDirectory() as stub_tmp:
            report["stubbed_modules"] = write_stubs(Path(stub_tmp))
            plan = [(m, s) for m in ("train", "psnr") for s in seeds]
            if not args.skip_default:
                plan.append(("default", seeds[0]))
            for mode, seed in plan:
                row = run_release(release, Path(stub_tmp), image, mode, seed, args.iters)
                report["release"].append(row)
                print(f"release {mode:8s} seed {seed}: {row['ms_median']:7.2f} ms/it  psnr {row['psnr_last']}",
                      flush=True)
        run_ours("warmup", img, "nint", 0, 30, "fp32", device)  # CUDA context, kernels, allocator
        report["compile_s"] = {}
        for strategy in [s for s in args.strategies.split(",") if s]:
            for variant in variants:
                if VARIANTS[variant].get("compile"):
                    t0 = time.perf_counter()
                    run_ours("warmup", img, strategy, 0, 30, variant, device)
                    report["compile_s"][f"{strategy} {variant}"] = time.perf_counter() - t0
                    print(f"ours {strategy:14s} {variant:12s} one-off compile: "
                          f"{report['compile_s'][f'{strategy} {variant}']:.1f} s", flush=True)
                for seed in seeds:
                    row = run_ours(image.stem, img, strategy, seed, args.iters, variant, device)
                    report["ours"].append(row)
                    print(f"ours {strategy:14s} {variant:12s} seed {seed}: train {row['ms_median']:6.2f} ms/it "
                          f"user {row['user_ms']:6.2f} ms/it psnr {row['psnr_last']:.3f}", flush=True)
        report["summary"] = summarise(report)
        path = save(report, Path(args.out))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
