"""Is a strategy's training step limited by the GPU or by the host that queues its kernels?

    python -m benchmark.bench_host --image <kodak>/kodim03.png [--strategies ...] [--modes default,reduce-overhead]

For each strategy and compile mode (SIREN 5×256, r = 0.2, TF32, fused Adam, the suite's own `train_step`),
after a warm-up it runs `--steps` steps back to back and reports three numbers per step:

- "gpu ms": CUDA events around the whole run of steps (what the GPU's clock saw, idle gaps included);
- "host ms": the host's wall time to queue those steps (no synchronisation inside);
- "kernel ms": the sum of the kernels' own durations (torch.profiler, over `--profile-steps` steps).

When "host ms" is about "gpu ms" and "kernel ms" is well below both, the GPU waits for the host: the step is
host-bound, and its ms/it depends on the CPU as much as on the GPU. Why that matters for time-to-PSNR: in
the fit loop an evaluation forward before a step gives the host a head start, so with PSNR every iteration a
host-bound step is timed at about its kernel time, and with `--psnr-every K` at about its host time.
Prints a table and writes results/bench/host-<gpu>.json (`--name` changes "host").
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import datasets
import strategies
from benchmark.bench_speed import make_task, sync
from benchmark.config import COMPILE_MODES
from benchmark.fit import compiled, train_step
from benchmark.step_graphs import StepGraphs
from benchmark.store import atomic_write_text

WARMUP_STEPS = 100


def measure(img, strategy: str, mode: str, steps: int, profile_steps: int, device: str) -> dict:
    """One strategy under one mode: "eager", "default" (--compile), a --compile mode name, or "graph-steps"
    (--compile --graph-steps)."""
    torch._dynamo.reset()  # each row compiles afresh: no row inherits another's graphs or recompile count
    task = make_task(img, device, iters=5000)
    if mode != "eager":
        task.predict = compiled(task.model, mode if mode in COMPILE_MODES else True, static_shapes=True)
    cls, params = strategies.resolve(strategy)
    strat = cls(task, **params)
    cuda = device.startswith("cuda")
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-4, fused=cuda, capturable=mode == "graph-steps")
    graphs = StepGraphs(task, opt) if mode == "graph-steps" else None
    t0 = time.perf_counter()
    for t in range(WARMUP_STEPS):  # compiles, and the evaluation graph as the fit loop would
        train_step(strat, opt, t, graphs)
        if t % 10 == 0:
            task.forward_full()
        if graphs is not None and t == 0:
            graphs.prepare(strat, strat.select(1), 1)  # as the fit loop does before its timed steps
    sync()
    warm_s = time.perf_counter() - t0
    start = torch.cuda.Event(enable_timing=True) if cuda else None
    end = torch.cuda.Event(enable_timing=True) if cuda else None
    t0 = time.perf_counter()
    if cuda:
        start.record()
    for t in range(WARMUP_STEPS, WARMUP_STEPS + steps):
        train_step(strat, opt, t, graphs)
    if cuda:
        end.record()
    host_ms = (time.perf_counter() - t0) / steps * 1000
    sync()
    gpu_ms = start.elapsed_time(end) / steps if cuda else host_ms
    kernel_ms, kernels = kernel_time(strat, opt, graphs, WARMUP_STEPS + steps, profile_steps, device)
    return {"strategy": strategy, "mode": mode, "gpu_ms": gpu_ms, "host_ms": host_ms, "kernel_ms": kernel_ms,
            "kernels_per_step": kernels, "warmup_s": warm_s, "steps": steps}


def kernel_time(strat, opt, graphs, first: int, n: int, device: str) -> tuple[float | None, float | None]:
    """Sum of the GPU kernels' durations per step, and the number of kernels per step (None off CUDA)."""
    if not device.startswith("cuda"):
        return None, None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for t in range(first, first + n):
            train_step(strat, opt, t, graphs)
        sync()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    return (sum(e.device_time_total for e in events) / n / 1000.0, sum(e.count for e in events) / n)


def print_table(rows: list[dict]) -> None:
    print(f"\n{'strategy':12s} {'mode':16s} {'gpu ms':>7s} {'host ms':>7s} {'kernel ms':>9s} {'kernels':>7s}  bound")
    for r in rows:
        kernel, count = r["kernel_ms"], r["kernels_per_step"]
        # host-bound: the GPU spends a tenth or more of the step idle, waiting for kernels
        bound = "" if kernel is None else "host" if kernel < 0.9 * r["gpu_ms"] else "gpu"
        kernel_text = "" if kernel is None else f"{kernel:.3f}"
        count_text = "" if count is None else f"{count:.0f}"
        print(f"{r['strategy']:12s} {r['mode']:16s} {r['gpu_ms']:7.3f} {r['host_ms']:7.3f} {kernel_text:>9s} "
              f"{count_text:>7s}  {bound}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", help="an RGB image file (e.g. <kodak>/kodim03.png)")
    ap.add_argument("--table", help="reprint the table of a saved host-*.json instead of measuring")
    ap.add_argument("--strategies", default="standard,uniform,egra,expansive,soft-mining,evos,int,nint")
    ap.add_argument("--modes", default="default,reduce-overhead",
                    help="comma-separated: eager, default, graph-steps, " + ", ".join(COMPILE_MODES))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--name", default="host")
    ap.add_argument("--out", default="results/bench")
    args = ap.parse_args(argv)
    if args.table:
        print_table(json.loads(Path(args.table).read_text())["rows"])
        return 0
    if not args.image:
        ap.error("--image is required (or --table JSON to reprint a saved run)")
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in ("eager", "default", "graph-steps", *COMPILE_MODES)]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; choose from eager, default, graph-steps, "
                 f"{', '.join(COMPILE_MODES)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    img = datasets.load_image(args.image)
    torch.set_float32_matmul_precision("high")  # TF32, as the timed grid runs
    rows = []
    for mode in modes:
        for name in [s for s in args.strategies.split(",") if s]:
            rows.append(measure(img, name, mode, args.steps, args.profile_steps, device))
            r = rows[-1]
            print(f"{name} {mode}: gpu {r['gpu_ms']:.3f} host {r['host_ms']:.3f} kernel {r['kernel_ms']} ms/step",
                  flush=True)
    report = {"gpu": gpu, "torch": torch.__version__, "image": Path(args.image).name,
              "image_size": list(img.shape[:2]), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}-{gpu.replace(' ', '_')}.json"
    atomic_write_text(json.dumps(report, indent=1), path)
    print_table(rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
