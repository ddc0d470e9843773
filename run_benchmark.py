#!/usr/bin/env python3
"""nint-bench command line.

    python run_benchmark.py                        # short offline demo on the builtin suite (CPU is fine)
    python run_benchmark.py --suite kodak --strategies nint,int,uniform,standard --iters 5000 \
        --mt-ratio 0.2 --seeds 0,1 --out results/kodak
    python run_benchmark.py --list-strategies | --list-suites
    python run_benchmark.py tune ...     # Optuna study (see benchmark/tune.py)
    python run_benchmark.py report ...   # tables and figures from a results directory
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import pandas as pd

from benchmark.errors import BenchError

DEMO = {"suite": "builtin", "strategies": "standard,uniform,int,nint", "iters": 300, "max_size": 64,
        "eval_every": 50, "out": "results/demo"}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too (`error: argument --iters: invalid int value: 'x'; see --help`, status 2)."""

    def error(self, message: str):
        raise BenchError(f"{message}; see --help")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="run_benchmark.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", help="builtin | kodak | div2k16 | a folder | an image file (default: demo)")
    p.add_argument("--data-dir", help="local folder with the suite's images (kodak, div2k16)")
    p.add_argument("--images", help="comma-separated image ids to keep (e.g. kodim01,kodim02)")
    p.add_argument("--max-images", type=int, default=0, help="keep only the first N images")
    p.add_argument("--strategies", help="comma-separated selectors, e.g. nint,int or 'nint[xi=0.5|0.7]'")
    p.add_argument("--preset", help="a named protocol (see --list-presets); explicit flags override it")
    p.add_argument("--iters", type=int, help="training iterations (default 5000)")
    p.add_argument("--mt-ratio", type=float, help="sampling ratio r in (0, 1] (default 0.2)")
    p.add_argument("--ratio-schedule", help="constant | linear | step | cosine | reverse-cosine")
    p.add_argument("--interval", help="dense | dense2 | dense5 | incremental | reverse-incremental | decremental")
    p.add_argument("--model", help="model name, or comma-separated names to run each (default siren)")
    p.add_argument("--model-param", action="append", default=[], metavar="KEY=VALUE",
                   help="model parameter, repeatable (e.g. depth=3, width=64)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the model's, 1e-4 for SIREN)")
    p.add_argument("--lr-schedule", help="constant | cosine (to 1e-6)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0)")
    p.add_argument("--eval-every", type=int, help="SSIM/LPIPS period in iterations (default 100)")
    p.add_argument("--psnr-every", type=int, help="PSNR period in iterations (default 1: every iteration); a "
                   "longer one saves the full-image forward of strategies that do not run one themselves")
    p.add_argument("--max-size", type=int, help="downscale so the longest side is at most this (0 = native)")
    p.add_argument("--chunk-size", type=int, help="pixels per chunk for full-image forwards (0 = one pass)")
    p.add_argument("--compile", nargs="?", const="default",
                   choices=["default", "max-autotune", "cudagraphs", "reduce-overhead"],
                   help="torch.compile the model (faster on a GPU; opt-in); max-autotune also tunes the GEMMs "
                        "(minutes of one-off autotuning, cached on disk); cudagraphs adds CUDA graphs to that; "
                        "reduce-overhead is the CUDA graphs alone (seconds to compile)")
    p.add_argument("--tf32", action="store_true", help="TF32 matrix products (faster, changes numerics; opt-in)")
    p.add_argument("--bf16-scoring", action="store_true",
                   help="INT and NINT rank pixels by a bf16 forward (SIREN; faster, changes the picks; opt-in)")
    p.add_argument("--graph-steps", action="store_true",
                   help="replay each step after its selection as one CUDA graph (GPU; constant ratio and lr)")
    p.add_argument("--out", help="results directory (default results/<suite>)")
    p.add_argument("--devices", help="comma-separated devices (default: every visible GPU, else cpu)")
    p.add_argument("--workers-per-device", type=int, default=1,
                   help="concurrent runs per device (throughput mode; timing is then shared, and recorded so)")
    p.add_argument("--dask", metavar="ADDRESS", help="run the jobs on a Dask cluster: tcp://host:8786, or local[:N] "
                   "for N worker processes here (see docs/dask.md)")
    p.add_argument("--no-lpips", action="store_true", help="do not compute LPIPS")
    p.add_argument("--lpips-weights", help="path of torchvision's alexnet-owt-7be5be79.pth (offline LPIPS)")
    p.add_argument("--convert-rgb", action="store_true", help="convert grayscale/RGBA images to RGB with a warning")
    p.add_argument("--force", action="store_true", help="rerun runs that are already finished")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-strategies", action="store_true")
    p.add_argument("--list-suites", action="store_true")
    p.add_argument("--list-presets", action="store_true")
    return p


def _check_devices(devices: list[str]) -> None:
    """Every --devices entry must exist here, so a typo stops the suite instead of failing each run."""
    import torch

    for name in devices:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise BenchError(f"--devices: {name!r} is not a device name; write cpu or cuda:N, e.g. --devices cuda:0,cuda:1") from None
        if dev.type == "cuda":
            count = torch.cuda.device_count()
            if count == 0 or (dev.index or 0) >= count:
                raise BenchError(f"--devices: {name} is not available, this machine has {count} visible GPU(s) "
                                 f"({', '.join(f'cuda:{i}' for i in range(count)) or 'use cpu'})")


def run(argv: list[str]) -> int:
    import datasets
    import strategies
    from benchmark import presets
    from benchmark.analysis import summary_table
    from benchmark.models import build_model, model_spec
    from benchmark.runner import (build_jobs, csv_list, parse_model_params, parse_seeds, parse_strategies,
                                  run_jobs, select_images)
    from benchmark.store import load

    args = parser().parse_args(argv)
    if args.list_strategies:
        for name in strategies.list_strategies():
            print(f"{name:16s} {strategies.describe(name)}")
        return 0
    if args.list_suites:
        for name, doc in datasets.list_suites().items():
            print(f"{name:10s} {doc}")
        print(f"{'<path>':10s} any folder of images, or one image file")
        return 0
    if args.list_presets:
        for name, preset in presets.PRESETS.items():
            print(f"{name:18s} {preset['doc']}")
        return 0

    demo = len(argv) == 0
    settings = dict(DEMO) if demo else {}
    if args.preset:
        settings.update(presets.get(args.preset)["settings"])
    for key in ("suite", "strategies", "iters", "mt_ratio", "ratio_schedule", "interval", "model", "lr",
                "lr_schedule", "seeds", "eval_every", "psnr_every", "max_size", "chunk_size", "out"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    suite = settings.get("suite", "builtin")
    models = csv_list(settings.get("model", "siren")) or ["siren"]
    for name in models:
        model_spec(name)  # unknown names fail here, before any image is read
    # A preset may give a list of model_params variants (e.g. depth × width): each one is a grid of its own.
    variants = settings.get("model_params", {})
    variants = [dict(v) for v in variants] if isinstance(variants, list) else [dict(variants)]
    overrides = parse_model_params(args.model_param)
    variants = list({json.dumps(v, sort_keys=True): v for v in ({**v, **overrides} for v in variants)}.values())
    if demo:
        print("no arguments: running the short demo "
              f"({DEMO['strategies']} on the builtin suite at {DEMO['max_size']} px, {DEMO['iters']} iterations); "
              "see --help for the full benchmark", file=sys.stderr)

    refs = select_images(suite, args.data_dir, args.images, args.max_images)
    selectors = settings.get("strategies", "standard,uniform,int,nint")
    try:
        strategy_list = parse_strategies(selectors)
    except (TypeError, ValueError) as exc:  # e.g. nint[xi=abc]: the strategy compared a string with a number
        raise BenchError(f"--strategies {selectors!r}: a parameter value has the wrong type ({exc}); "
                         "write numbers as numbers, e.g. nint[xi=0.5]") from None
    if not strategy_list:
        raise BenchError(f"--strategies {selectors!r} names no strategy; e.g. --strategies nint,uniform "
                         "(see --list-strategies)")
    common = dict(
        suite=Path(suite).name if Path(suite).exists() else suite,
        mt_ratio=settings.get("mt_ratio", 0.2), ratio_schedule=settings.get("ratio_schedule", "constant"),
        interval=settings.get("interval", "dense"),
        iters=settings.get("iters", 5000),
        lr_schedule=settings.get("lr_schedule", "constant"), eval_every=settings.get("eval_every", 100),
        psnr_every=settings.get("psnr_every", 1),
        lpips=not args.no_lpips, max_size=settings.get("max_size", 0), chunk_size=settings.get("chunk_size", 0),
        compile={None: False, "default": True}.get(args.compile, args.compile), tf32=args.tf32,
        bf16_scoring=args.bf16_scoring, graph_steps=args.graph_steps,
    )
    seeds = parse_seeds(str(settings.get("seeds", "0")))
    jobs = []
    for name in models:  # each model with its own default lr unless --lr (or the preset) sets one
        for params in variants:
            try:
                build_model(name, params)  # bad model parameters fail here, before any run
            except (TypeError, ValueError) as exc:  # e.g. depth=abc: the model compared a string with a number
                raise BenchError(f"--model-param {json.dumps(params, sort_keys=True)} for model {name!r}: a value has "
                                 f"the wrong type ({exc}); e.g. --model-param depth=3") from None
            jobs += build_jobs(refs, strategy_list, seeds, convert_rgb=args.convert_rgb, model=name,
                               model_params=params, lr=settings.get("lr", model_spec(name).lr), **common)
    out = settings.get("out") or f"results/{common['suite']}"
    devices = csv_list(args.devices) or None
    _check_devices(devices or [])
    if args.workers_per_device < 1:
        raise BenchError(f"--workers-per-device must be >= 1, got {args.workers_per_device}")
    outcomes = run_jobs(jobs, out, devices, args.workers_per_device, "off" if args.no_lpips else "auto",
                        args.lpips_weights, args.force, progress=not args.no_progress, dask=args.dask)
    failed = [o for o in outcomes if o["status"] != "ok"]
    for o in failed:
        print(f"{o['status']}: {o['label']} on {o['image']} (seed {o['seed']}): {o['error'].split(' | ')[0]}",
              file=sys.stderr)

    runs, metrics = load(out)
    ids = {j.cfg.run_id for j in jobs}
    runs = runs[runs["run_id"].isin(ids)]
    metrics = metrics[metrics["run_id"].isin(ids)]
    several = len(models) * len(variants) > 1
    for name, params in [(m, v) for m in models for v in variants]:  # one table per model variant
        key = json.dumps(params, sort_keys=True)
        part = runs[(runs["model"] == name) & (runs["model_params"] == key)] if several else runs
        if len(part):
            with pd.option_context("display.width", 160, "display.precision", 3, "display.max_columns", 20):
                what = f" with {name} {key}" if several else ""
                print(f"\nsummary of {len(part)} runs in {out}{what} (means over images and seeds):")
                print(summary_table(part, metrics[metrics["run_id"].isin(part["run_id"])], 30.0).to_string())
        if not several:
            break
    return 1 if failed else 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    previous_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning  # "warning: …", one line
    try:
        if argv and argv[0] in ("tune", "report"):
            import importlib

            return importlib.import_module(f"benchmark.{argv[0]}").main(argv[1:])
        return run(argv)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are stored; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    sys.exit(main())
