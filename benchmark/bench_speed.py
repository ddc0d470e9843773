"""Speed benchmark: ms/iteration per strategy through the real fit loop, where NINT's step time goes, and the
opt-in variants (torch.compile, TF32) with their PSNR-trajectory difference against plain fp32.

    python -m benchmark.bench_speed --kodak-dir DIR --div2k-dir DIR [--iters 300] [--out results/bench]

Prints a table and writes results/bench/speed-<gpu>.json. "train ms/it" is the median per-step training time
(CUDA events, warm-up steps excluded); "user ms/it" is wall time of a whole default run (PSNR every iteration,
SSIM every 100) divided by its iterations. "release-style" emulates how the released NINT code is run by
default (its selection and step, then PSNR and SSIM on the CPU with scikit-image every iteration, wall clock
without synchronisation): it is this suite's code in that mode, not the release itself.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import datasets
import strategies
from benchmark.config import RunConfig
from benchmark.fit import fit
from benchmark.metrics import psnr, ssim
from benchmark.models import build_model
from benchmark.ntk import ntk_scores
from benchmark.store import atomic_write_text
from benchmark.task import Task, coordinate_grid

WARMUP = 20


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_ms(fn, reps: int = 20, warmup: int = 3) -> float:
    """Median of `reps` timings of fn() in ms (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def run_config(image_id: str, img: np.ndarray, strategy: str, iters: int, seed: int = 0, **kw) -> RunConfig:
    _, params = strategies.resolve(strategy)
    return RunConfig(image=image_id, image_sha256=datasets.pixels_sha256(img), strategy=strategy, params=params,
                     iters=iters, seed=seed, eval_every=100, suite="bench", **kw)


def time_strategy(image_id, img, strategy, iters, device, **kw) -> dict:
    cfg = run_config(image_id, img, strategy, iters, **kw)
    sync()
    t0 = time.perf_counter()
    res = fit(cfg, img, device)
    sync()
    wall = time.perf_counter() - t0
    steps = np.diff(res.metrics["train_seconds"].to_numpy()) * 1000
    return {"strategy": strategy, "image": image_id, "iters": iters, **kw,
            "train_ms_median": float(np.median(steps[WARMUP:])), "train_ms_mean": float(steps[WARMUP:].mean()),
            "user_ms": 1000 * wall / iters, "final_psnr": float(res.metrics["psnr"].iloc[-1]),
            "psnr": res.metrics["psnr"].to_numpy().tolist()}


def make_task(img, device, ratio=0.2, iters=1000, seed=0) -> Task:
    h, w = img.shape[:2]
    torch.manual_seed(seed)
    model = build_model("siren").to(device)
    targets = torch.from_numpy(datasets.to_float(img)).to(device).reshape(-1, 3)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return Task(model, coordinate_grid(h, w, device), targets, img, h, w, iters, ratio, "constant", "dense", gen)


def breakdown(img, device) -> dict:
    """Where one NINT step's time goes (SIREN 5×256, r = 0.2), each part timed on its own."""
    task = make_task(img, device)
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-4)
    cls, params = strategies.resolve("nint")
    strat = cls(task, **params)
    strat.select(0)
    strat.calls = 60  # past the NTK window: the steady state of ~99% of a 5000-iteration run
    n = task.budget(1)
    idx = strat.select(1).indices

    def step():
        loss = (task.model(task.coords[idx]) - task.targets[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    pred = task.forward_full()
    img_t = task.targets.view(task.height, task.width, 3)
    return {
        "full_forward_nograd": median_ms(task.forward_full),
        "ntk_vjp_jvp": median_ms(lambda: ntk_scores(task, "kg"), reps=5),
        "nint_select_steady": median_ms(lambda: strat.choose(1)),  # includes its full forward
        "train_step_20pct": median_ms(step),
        "train_step_full": median_ms(lambda: (task.model(task.coords) - task.targets).pow(2).mean().backward()),
        "eval_psnr": median_ms(lambda: psnr(pred, task.targets)),
        "eval_ssim": median_ms(lambda: ssim(pred.view_as(img_t), img_t)),
        "budget": n,
    }


def release_style_ms(img, device, iters: int = 60) -> float:
    """nint-released with the release's default evaluation: skimage PSNR+SSIM on the CPU every iteration,
    wall clock without synchronisation (see the module docstring)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    task = make_task(img, device)
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-4)
    cls, params = strategies.resolve("nint-released")
    strat = cls(task, **params)
    gt = datasets.to_float(img)
    t0 = None
    for t in range(iters + 5):
        if t == 5:
            t0 = time.time()
        batch = strat.select(t)
        loss = (task.model(task.coords[batch.indices]) - task.targets[batch.indices]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        full = batch.full_pred.clamp(0, 1).view(task.height, task.width, 3).cpu().numpy()
        peak_signal_noise_ratio(gt, full, data_range=1)
        structural_similarity(gt, full, channel_axis=-1, data_range=1)
    return 1000 * (time.time() - t0) / iters


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak-dir")
    ap.add_argument("--div2k-dir")
    ap.add_argument("--table", help="reprint the tables of a saved speed-*.json instead of measuring")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--strategies", default="standard,uniform,int,nint,nint-released")
    ap.add_argument("--variant-iters", type=int, default=1000, help="iterations for the compile/TF32 comparison")
    ap.add_argument("--variant-seeds", type=int, default=3)
    ap.add_argument("--skip-variants", action="store_true")
    ap.add_argument("--out", default="results/bench")
    args = ap.parse_args(argv)
    if args.table:
        report = json.loads(Path(args.table).read_text())
        print_table(report)
        print_variants(report)
        return 0
    if not (args.kodak_dir and args.div2k_dir):
        ap.error("--kodak-dir and --div2k-dir are required (or --table JSON to reprint a saved run)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    images = {
        "kodim01": datasets.load_image(Path(args.kodak_dir) / "kodim01.png"),
        "div2k00": datasets.load_image(Path(args.div2k_dir) / "00.png"),
    }
    report = {"gpu": gpu, "torch": torch.__version__, "iters": args.iters, "strategies": [], "breakdown": {},
              "release_style_ms": {}, "variants": []}
    time_strategy("div2k00", images["div2k00"], "nint", 30, device)  # warm-up: CUDA context, kernels, allocator
    for image_id, img in images.items():
        for name in [s for s in args.strategies.split(",") if s]:
            row = time_strategy(image_id, img, name, args.iters, device)
            report["strategies"].append(row)
            print(f"{image_id} {name:14s} train {row['train_ms_median']:7.2f} ms/it  user {row['user_ms']:7.2f} "
                  f"ms/it  psnr@{args.iters} {row['final_psnr']:.2f}", flush=True)
        report["breakdown"][image_id] = breakdown(img, device)
        report["release_style_ms"][image_id] = release_style_ms(img, device)
        print(image_id, "breakdown (ms):", json.dumps({k: round(v, 3) for k, v in report["breakdown"][image_id].items()}))
        print(image_id, f"release-style ms/it: {report['release_style_ms'][image_id]:.2f}", flush=True)
    if not args.skip_variants:
        img = images["div2k00"]
        for variant in ({}, {"compile": True}, {"tf32": True}, {"compile": True, "tf32": True},
                        {"compile": "max-autotune", "tf32": True}):
            if variant.get("compile"):  # the one-off compile and autotuning stay out of "user ms/it"
                time_strategy("div2k00", img, "nint", 30, device, **variant)
            for seed in range(args.variant_seeds):
                row = time_strategy("div2k00", img, "nint", args.variant_iters, device, seed=seed, **variant)
                report["variants"].append(row)
            rows = [r for r in report["variants"] if variant_name(r) == variant_name(variant)]
            print(f"nint div2k00 {variant_name(variant)}: train {np.mean([r['train_ms_median'] for r in rows]):.2f} ms/it, "
                  f"user {np.mean([r['user_ms'] for r in rows]):.2f} ms/it, "
                  f"psnr@{args.variant_iters} {np.mean([r['final_psnr'] for r in rows]):.3f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"speed-{gpu.replace(' ', '_')}.json"
    atomic_write_text(json.dumps(report, indent=1), path)
    print_table(report)
    print_variants(report)
    print(f"wrote {path}")
    return 0


def print_table(report: dict) -> None:
    print(f"\n{'image':9s} {'strategy':14s} {'train ms/it':>11s} {'user ms/it':>10s} {'psnr':>7s}")
    for r in report["strategies"]:
        print(f"{r['image']:9s} {r['strategy']:14s} {r['train_ms_median']:11.2f} {r['user_ms']:10.2f} {r['final_psnr']:7.2f}")
    for image_id, ms in report["release_style_ms"].items():
        print(f"{image_id:9s} {'release-style':14s} {'':11s} {ms:10.2f}")


def variant_name(settings: dict) -> str:
    """"fp32", "tf32", "compile", "compile+tf32", "max-autotune+tf32", ... from a run's compile/tf32 settings."""
    mode = settings.get("compile")
    parts = [mode if isinstance(mode, str) else "compile" if mode else "", "tf32" if settings.get("tf32") else ""]
    return "+".join(p for p in parts if p) or "fp32"


def print_variants(report: dict) -> None:
    """Per variant, means over seeds. SIREN training under Adam has transient PSNR drops of several dB, and
    runs whose rounding differs (TF32, fused kernels) hit them at different iterations: so besides the final
    PSNR, the median and the lowest PSNR over the last 10% of iterations."""
    groups: dict[str, list[dict]] = {}
    for r in report.get("variants", []):
        groups.setdefault(variant_name(r), []).append(r)
    if not groups:
        return
    print(f"\n{'variant':13s} {'seeds':>5s} {'train ms/it':>11s} {'user ms/it':>10s} {'final PSNR':>10s} "
          f"{'median last 10%':>15s} {'lowest last 10%':>15s}")
    for name, rows in groups.items():
        tails = [np.asarray(r["psnr"])[-max(1, len(r["psnr"]) // 10):] for r in rows]
        print(f"{name:13s} {len(rows):5d} {np.mean([r['train_ms_median'] for r in rows]):11.2f} "
              f"{np.mean([r['user_ms'] for r in rows]):10.2f} {np.mean([r['final_psnr'] for r in rows]):10.2f} "
              f"{np.mean([np.median(t) for t in tails]):15.2f} {np.mean([t.min() for t in tails]):15.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
