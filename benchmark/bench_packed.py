"""Packed fits on a GPU: throughput per member, equality with unpacked runs, profile-priced time, NTK memory and
where NINT's fp32 step time goes.

    python -m benchmark.bench_packed --kodak-dir scratch/kodak [--parts a,b,c,d,e] [--tf32] [--out results/bench]

Every fit and pack runs in fp32, or with TF32 matrix products under --tf32 (written to packed-<gpu>-tf32.json).

Parts (the JSON, results/bench/packed-<gpu>.json, is rewritten after each one, so a cut-off run keeps the
finished parts):
  a  NINT at 768×512: ms/it per packed member at K = 1, 4, 8 (the pack's step wall time / K, synchronised)
     against the exclusive fit's median ms/it; target ≤ 0.35× at K = 8. Beside it the GEMM floor: the median
     step's matrix-product FLOPs (torch's FlopCounterMode) at this GPU's measured rate in those numerics.
  b  NINT, uniform and INT, K = 4 images, 500 iterations: packed against unpacked PSNR trajectories, max |Δ|,
     beside the max |Δ| between two unpacked runs of the same seed (target: within 0.01 dB or that spread).
  c  every covered strategy on 3 Kodak images: the time to reach --psnr dB priced from a timing profile
     (200 exclusive steps) against the measured train-seconds of an exclusive run (target within 3 %).
  d  NINT at 512² (a centre crop): peak memory, torch.cuda.max_memory_allocated and nvidia-smi's reading
     (polled while the fit runs), with the NTK in chunks of NTK_CHUNK pixels and in one pass.
  e  NINT at 512²: ms/it, and a torch.profiler breakdown of steady-state steps: CUDA kernel time against
     host time per step, kernel launches per step, the kernels that take the time; and the GEMM floor.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import datasets
import strategies
from benchmark import ntk
from benchmark.bench_speed import WARMUP, run_config
from benchmark.errors import BenchError
from benchmark.fit import fit, matmul_precision, train_step
from benchmark.models import build_model
from benchmark.packed import fit_packed
from benchmark.profiles import measure_profile, priced_seconds
from benchmark.store import atomic_write_text
from benchmark.task import Task, coordinate_grid

COVERED = ["standard", "uniform", "int", "nint", "nint-released", "ntk-only", "egra", "expansive"]


def landscape(kodak_dir: str, count: int) -> list[tuple[str, np.ndarray]]:
    """The first `count` Kodak images of the first landscape image's size (768×512): a pack holds one size."""
    out, shape = [], None
    for path in sorted(Path(kodak_dir).glob("kodim*.png")):
        img = datasets.load_image(path)
        if shape is None and img.shape[1] > img.shape[0]:
            shape = img.shape
        if img.shape == shape:
            out.append((path.stem, img))
        if len(out) == count:
            return out
    raise BenchError(f"{kodak_dir} holds {len(out)} landscape Kodak PNGs (kodim*.png) of one size, {count} needed")


def crop512(img: np.ndarray) -> np.ndarray:
    """The centre square of side 512 (or of the short side, if shorter)."""
    h, w = img.shape[:2]
    side = min(512, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(img[top:top + side, left:left + side])


NUMERICS = {"tf32": False}  # set once by main (--tf32) for every fit and pack of the run


def cfg_for(image_id, img, strategy, iters, seed=0, **kw):
    return run_config(image_id, img, strategy, iters, seed=seed, **{**NUMERICS, **kw})


def steady_median(values: np.ndarray) -> float:
    """Median after the WARMUP first values (all of them for a short run)."""
    return float(np.median(values[WARMUP:] if len(values) > 2 * WARMUP else values))


def exclusive_ms(result) -> float:
    return steady_median(np.diff(result.metrics["train_seconds"].to_numpy()) * 1000)


def steady_nint(img: np.ndarray, device, warm_steps: int = 70):
    """NINT past its NTK window (refreshes at u = 1 … 60) on the fit's own code path: (strategy, optimizer,
    next step). Its later steps are the median step of a run: a full no-grad forward plus a 20 % train step."""
    h, w = img.shape[:2]
    torch.manual_seed(0)
    model = build_model("siren").to(device)
    targets = torch.from_numpy(datasets.to_float(img)).to(device).reshape(-1, 3)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    task = Task(model, coordinate_grid(h, w, device), targets, datasets.to_uint8(img), h, w, 1000, 0.2,
                "constant", "dense", gen)
    cls, params = strategies.resolve("nint")
    strat = cls(task, **params)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for t in range(warm_steps):
        train_step(strat, opt, t)
    return strat, opt, warm_steps


def step_flops(strat, opt, t: int) -> int:
    """Matrix-product FLOPs of training step t (forward, backward and scoring), counted by torch's FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        train_step(strat, opt, t)
    return int(counter.get_total_flops())


def gemm_tflops(rows: int, width: int, device, tf32: bool = False, repeats: int = 20) -> float:
    """The rate this GPU reaches on the model's own product shape, (rows × width) @ (width × width), in fp32
    (or TF32): the divisor of the GEMM floor."""
    a = torch.randn(rows, width, device=device)
    b = torch.randn(width, width, device=device)
    with matmul_precision(tf32):
        for _ in range(3):
            a @ b
        wait = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        wait()
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        wait()
        seconds = time.perf_counter() - started
    return 2.0 * rows * width * width * repeats / seconds / 1e12


def gemm_floor(strat, opt, t: int, device) -> dict:
    """The least time matrix products allow for a steady NINT's median step (`steady_nint`): its FLOPs at the
    GPU's measured GEMM rate in the run's numerics. Packing batches the products but cannot lower this per
    member."""
    flops = step_flops(strat, opt, t)
    rate = gemm_tflops(strat.task.n_pixels, 256, device, NUMERICS["tf32"])
    return {"step_gflop": flops / 1e9, "gemm_tflops": rate, "numerics": "tf32" if NUMERICS["tf32"] else "fp32",
            "floor_ms": flops / (rate * 1e12) * 1000}


def part_a(images, iters: int, device) -> dict:
    name, img = images[0]
    out = {"strategy": "nint", "size": f"{img.shape[1]}x{img.shape[0]}", "iters": iters, "rows": []}
    alone = exclusive_ms(fit(cfg_for(name, img, "nint", iters, psnr_every=iters), img, device))
    out["exclusive_ms"] = alone
    for k in (1, 4, 8):
        members = [images[i % len(images)] for i in range(k)]
        cfgs = [cfg_for(n, im, "nint", iters, seed=i, psnr_every=iters) for i, (n, im) in enumerate(members)]
        packed = fit_packed(cfgs, [im for _, im in members], device)
        per_member = 1000 * steady_median(packed.pack_seconds) / k
        out["rows"].append({"K": k, "pack_ms": per_member * k, "member_ms": per_member, "ratio": per_member / alone,
                            "peak_memory_mb": packed.results[0].peak_memory_mb})
        torch.cuda.empty_cache()
    out["gemm_floor"] = floor = gemm_floor(*steady_nint(img, device), device)
    out["floor_ratio"] = floor["floor_ms"] / alone  # the lowest member_ms / exclusive_ms fp32 GEMMs allow
    out["target"] = "member_ms / exclusive_ms <= 0.35 at K = 8"
    return out


def part_b(images, iters: int, names: list[str], device) -> dict:
    """Packed against unpacked PSNR trajectories, judged against how far two unpacked runs of the same seed
    already differ on this GPU (its run-to-run spread): a strategy whose reruns are bit-identical must match to
    0.01 dB, one whose reruns drift (NINT's near-tied top-k picks) must stay within that drift."""
    members = images[:4]
    out = {"K": 4, "iters": iters, "strategies": {},
           "target": "max |dPSNR| packed vs unpacked <= max(0.01 dB, unpacked vs unpacked rerun)"}
    for strategy in names:
        cfgs = [cfg_for(n, im, strategy, iters, seed=i) for i, (n, im) in enumerate(members)]
        packed = fit_packed(cfgs, [im for _, im in members], device)
        rows = []
        for cfg, (n, im), result in zip(cfgs, members, packed.results):
            alone, again = (fit(cfg, im, device).metrics["psnr"].to_numpy() for _ in range(2))
            rows.append({"image": n, "seed": cfg.seed,
                         "max_abs_dpsnr": float(np.nanmax(np.abs(result.metrics["psnr"].to_numpy() - alone))),
                         "max_abs_dpsnr_rerun": float(np.nanmax(np.abs(again - alone))),
                         "final_psnr_packed": float(result.metrics["psnr"].iloc[-1]), "final_psnr_alone": float(alone[-1])})
        worst = max(r["max_abs_dpsnr"] for r in rows)
        rerun = max(r["max_abs_dpsnr_rerun"] for r in rows)
        out["strategies"][strategy] = {"rows": rows, "max_abs_dpsnr": worst, "max_abs_dpsnr_rerun": rerun,
                                       "met": worst <= max(0.01, rerun)}
    return out


def first_reach(psnr: np.ndarray, level: float) -> int | None:
    hit = np.flatnonzero(psnr >= level)
    return int(hit[0]) if len(hit) else None


def part_c(images, iters: int, level: float, strategies: list[str], device) -> dict:
    rows = []
    for strategy in strategies:
        name0, img0 = images[0]
        profile = measure_profile(cfg_for(name0, img0, strategy, 200), img0, device)
        for name, img in images[:3]:
            res = fit(cfg_for(name, img, strategy, iters), img, device)
            measured = res.metrics["train_seconds"].to_numpy()
            priced = priced_seconds(res.step_kinds, profile)
            t = first_reach(res.metrics["psnr"].to_numpy(), level)
            at = t if t is not None else len(measured) - 1
            rows.append({"strategy": strategy, "image": name, "reached": t is not None, "iteration": at,
                         "measured_s": float(measured[at]), "priced_s": float(priced[at]),
                         "rel_error": float(priced[at] / measured[at] - 1.0) if measured[at] > 0 else None,
                         "kinds": {k: v["ms"] for k, v in profile["kinds"].items()}})
            print(f"  c {strategy:14s} {name}: measured {measured[at]:.3f} s, priced {priced[at]:.3f} s at it {at}"
                  f"{'' if t is not None else ' (level not reached: whole run)'}", flush=True)
    return {"level_db": level, "iters": iters, "rows": rows, "target": "|rel_error| <= 3 %",
            "max_abs_rel_error": max(abs(r["rel_error"]) for r in rows if r["rel_error"] is not None)}


class SmiPoller:
    """nvidia-smi's memory.used of this GPU, polled every 0.1 s while the `with` block runs (its maximum)."""

    def __init__(self, index: int):
        self.index, self.peak, self._stop = index, None, threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            try:
                text = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                       "-i", str(self.index)], capture_output=True, text=True, timeout=5).stdout
                value = float(text.strip().splitlines()[0])
                self.peak = value if self.peak is None else max(self.peak, value)
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def part_d(img512, iters: int, device) -> dict:
    rows = []
    default_chunk = ntk.NTK_CHUNK
    for label, chunk in (("ntk chunks of %d" % default_chunk, default_chunk), ("ntk one pass", 10**9)):
        ntk.NTK_CHUNK = chunk
        try:
            torch.cuda.empty_cache()
            with SmiPoller(torch.device(device).index or 0) as smi:
                res = fit(cfg_for("crop512", img512, "nint", iters, psnr_every=10), img512, device)
            rows.append({"mode": label, "max_memory_allocated_mb": res.peak_memory_mb, "nvidia_smi_peak_mb": smi.peak,
                         "ms_per_it": exclusive_ms(res)})
        finally:
            ntk.NTK_CHUNK = default_chunk
    return {"strategy": "nint", "size": "512x512", "iters": iters, "rows": rows,
            "note": "nvidia-smi counts the whole process (CUDA context, allocator cache); compare with the "
                    "release's nvidia-smi peak measured alone on the GPU"}


def part_e(img512, iters: int, device) -> dict:
    from torch.profiler import ProfilerActivity, profile

    cfg = cfg_for("crop512", img512, "nint", iters, psnr_every=iters)
    plain = fit(cfg, img512, device)
    steps = 20
    # a steady-state NINT (past its NTK window) on the fit's own code path, without evaluation in between
    strat, opt, first = steady_nint(img512, device)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with matmul_precision(NUMERICS["tf32"]), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for t in range(first, first + steps):
            train_step(strat, opt, t)
        torch.cuda.synchronize()
    wall_ms = 1000 * (time.perf_counter() - t0) / steps
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)
    total_kernel_us = sum(e.self_device_time_total for e in kernels)
    launches = sum(e.count for e in kernels)
    cpu_ops = sorted((e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CPU),
                     key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "strategy": "nint", "size": "512x512", "numerics": "tf32" if NUMERICS["tf32"] else "fp32",
        "fit_ms_per_it": exclusive_ms(plain),
        "profiled_wall_ms_per_step": wall_ms, "kernel_ms_per_step": total_kernel_us / 1000 / steps,
        "kernel_launches_per_step": launches / steps, "gemm_floor": gemm_floor(strat, opt, first + steps, device),
        "top_kernels": [{"name": e.key[:120], "ms_per_step": e.self_device_time_total / 1000 / steps,
                         "launches_per_step": e.count / steps} for e in kernels[:15]],
        "top_host_ops": [{"name": e.key[:80], "self_cpu_ms_per_step": e.self_cpu_time_total / 1000 / steps,
                          "calls_per_step": e.count / steps} for e in cpu_ops[:10]],
    }


def print_report(report: dict) -> None:
    a = report.get("a")
    if a and "rows" in a:
        print(f"\n(a) NINT {a['size'].replace('x', '×')}, exclusive {a['exclusive_ms']:.2f} ms/it")
        print(f"{'K':>3} {'pack ms/step':>13} {'member ms/it':>13} {'× exclusive':>12} {'peak MB':>9}")
        for r in a["rows"]:
            print(f"{r['K']:>3} {r['pack_ms']:>13.2f} {r['member_ms']:>13.2f} {r['ratio']:>12.3f} "
                  f"{(r['peak_memory_mb'] or 0):>9.0f}")
        if "gemm_floor" in a:
            f = a["gemm_floor"]
            print(f"GEMM floor: {f['step_gflop']:.1f} GFLOP per step at {f['gemm_tflops']:.1f} {f['numerics']} "
                  f"TFLOP/s = {f['floor_ms']:.2f} ms, {a['floor_ratio']:.3f}× exclusive (no pack can go lower)")
    b = report.get("b")
    if b and "strategies" in b:
        print(f"\n(b) packed vs unpacked, K = 4, {b['iters']} it: max |ΔPSNR| against an unpacked rerun's")
        print(f"{'strategy':14s} {'packed dB':>10} {'rerun dB':>10}  target met")
        for name, r in b["strategies"].items():
            print(f"{name:14s} {r['max_abs_dpsnr']:>10.5f} {r['max_abs_dpsnr_rerun']:>10.5f}  {r['met']}")
    c = report.get("c")
    if c and "rows" in c:
        print(f"\n(c) time to {c['level_db']} dB, priced from a profile vs measured (exclusive)")
        print(f"{'strategy':14s} {'image':8s} {'it':>5} {'measured s':>11} {'priced s':>9} {'rel err':>8}")
        for r in c["rows"]:
            err = f"{100 * r['rel_error']:+.2f}%" if r["rel_error"] is not None else "n/a"
            print(f"{r['strategy']:14s} {r['image']:8s} {r['iteration']:>5} {r['measured_s']:>11.3f} "
                  f"{r['priced_s']:>9.3f} {err:>8}{'' if r['reached'] else '  (not reached)'}")
    d = report.get("d")
    if d and "rows" in d:
        print("\n(d) NINT 512² peak memory")
        for r in d["rows"]:
            print(f"  {r['mode']:24s} allocated {r['max_memory_allocated_mb']:.0f} MB, nvidia-smi "
                  f"{r['nvidia_smi_peak_mb']} MB, {r['ms_per_it']:.2f} ms/it")
    e = report.get("e")
    if e and "top_kernels" in e:
        print(f"\n(e) NINT {e.get('numerics', 'fp32')} 512²: fit {e['fit_ms_per_it']:.2f} ms/it; profiled step "
              f"{e['profiled_wall_ms_per_step']:.2f}"
              f" ms wall, {e['kernel_ms_per_step']:.2f} ms of kernels, {e['kernel_launches_per_step']:.0f} launches")
        if "gemm_floor" in e:
            f = e["gemm_floor"]
            print(f"  GEMM floor: {f['step_gflop']:.1f} GFLOP at {f['gemm_tflops']:.1f} {f['numerics']} TFLOP/s = "
                  f"{f['floor_ms']:.2f} ms")
        for k in e["top_kernels"]:
            print(f"  {k['ms_per_step']:7.3f} ms {k['launches_per_step']:5.1f}×  {k['name'][:90]}")
    for part, value in report.items():
        if isinstance(value, dict) and "error" in value:
            print(f"\n({part}) failed: {value['error']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak-dir", default="scratch/kodak")
    ap.add_argument("--parts", default="a,b,c,d,e")
    ap.add_argument("--iters-a", type=int, default=200)
    ap.add_argument("--iters-b", type=int, default=500)
    ap.add_argument("--strategies-b", default="nint,uniform,int")
    ap.add_argument("--iters-c", type=int, default=800)
    ap.add_argument("--psnr", type=float, default=30.0, help="level for part c's time-to-PSNR")
    ap.add_argument("--strategies-c", default=",".join(COVERED))
    ap.add_argument("--iters-d", type=int, default=100)
    ap.add_argument("--tf32", action="store_true", help="TF32 matrix products in every fit, pack and floor of the "
                                                         "run (parts a, b, c, e; default fp32)")
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--release-dir", help="not used by these parts (release comparisons: benchmark.bench_release)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    NUMERICS["tf32"] = args.tf32
    device = args.device
    need = 8 if "a" in parts else 4
    images = landscape(args.kodak_dir, need)
    img512 = crop512(images[0][1])
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    dest = Path(args.out) / f"packed-{gpu.replace(' ', '_')}{'-tf32' if args.tf32 else ''}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"gpu": gpu, "torch": torch.__version__, "numerics": "tf32" if args.tf32 else "fp32",
                    "images": [n for n, _ in images]}
    runners = {
        "a": lambda: part_a(images, args.iters_a, device),
        "b": lambda: part_b(images, args.iters_b, [s for s in args.strategies_b.split(",") if s], device),
        "c": lambda: part_c(images, args.iters_c, args.psnr, [s for s in args.strategies_c.split(",") if s], device),
        "d": lambda: part_d(img512, args.iters_d, device) if device.startswith("cuda") else {"error": "needs CUDA"},
        "e": lambda: part_e(img512, 100, device) if device.startswith("cuda") else {"error": "needs CUDA"},
    }
    for part in parts:
        started = time.time()
        print(f"part {part} …", flush=True)
        try:
            report[part] = runners[part]()
        except Exception as exc:  # noqa: BLE001 - keep the other parts
            report[part] = {"error": f"{type(exc).__name__}: {exc}"}
        report[part]["seconds"] = time.time() - started
        atomic_write_text(json.dumps(report, indent=1, default=str) + "\n", dest)
        print(f"part {part} done in {report[part]['seconds']:.0f} s", flush=True)
    print_report(report)
    print(f"\nwrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
