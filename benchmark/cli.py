"""The nint-bench command line: `run` (the default), `tune`, `report` and `list`.

`nint-bench` (installed with `pip install -e .`) and `python3 run_benchmark.py` are the same program. A first
argument that is not a command is read as an option of `run`, so `python3 run_benchmark.py --suite kodak` is
`python3 run_benchmark.py run --suite kodak`, and no argument at all runs the short offline demo.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from .argparsing import ArgParser, HelpFormatter
from .errors import BenchError

COMMANDS = {
    "run": "fit strategies × images × seeds into a results store (the default command)",
    "tune": "Optuna search over the sampling ratio and NINT's parameters of one strategy",
    "report": "tables and figures of a results store",
    "list": "list the strategies, suites, presets or models",
}
LISTS = ("strategies", "suites", "presets", "models")
DEMO_PRESET = "demo"  # experiments/demo.yaml: what `run` without any option runs


def top_parser(prog: str) -> argparse.ArgumentParser:
    examples = f"""\
examples (each line pastes as it is):
  {prog}          # the offline demo: 4 strategies on a CPU in a few minutes
  {prog} list strategies
  {prog} run --suite kodak --strategies nint,int,uniform,standard --seeds 0,1 --out results/kodak
  {prog} run --preset nint-table-a --suite kodak --out results/kodak-table-a
  {prog} run --config my-experiment.yaml --seeds 0,1
  {prog} tune --suite kodak --strategy nint --search mt_ratio,xi --iters 2000 --n-trials 40
  {prog} report --results results/kodak

`{prog} COMMAND --help` shows the options of one command."""
    p = ArgParser(prog=prog, formatter_class=HelpFormatter, epilog=examples.replace("%", "%%"),
                  description="Benchmark of pixel-sampling strategies for training implicit neural representations\n"
                              "(a SIREN fits one image; each step a strategy picks the pixels it trains on).\n"
                              "Without a command, the arguments are those of `run`.")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


# --- run -----------------------------------------------------------------------------------------------------
def run_parser(prog: str) -> argparse.ArgumentParser:
    """The options of `run`; each is one line, and its argparse default is the protocol's default."""
    p = ArgParser(prog=prog, usage="%(prog)s [OPTION ...]", formatter_class=HelpFormatter, description=f"""\
Fit every strategy × image × seed × model variant and store each run in a Parquet results store; a rerun of the
same command skips the finished runs (resume). Then print a summary table.

Settings come from, in rising priority: the defaults below, --preset, --config, the flags given.
Without any option, `run` is the offline demo (experiments/{DEMO_PRESET}.yaml).

examples:
  {prog} --suite kodak --strategies nint,int,uniform,standard --mt-ratio 0.2 --seeds 0,1 --out results/kodak
  {prog} --preset nint-table-a --suite kodak --images kodim01,kodim02
  {prog} --config experiments/nint-ablation.yaml --iters 500 --max-size 256
  {prog} --suite photos/ --strategies 'nint[xi=0.5|0.7],uniform' --max-size 512""".replace("%", "%%"))
    w = p.add_argument_group("what to fit")
    w.add_argument("--suite", default="builtin", help="builtin | kodak | div2k16 | a folder | an image file")
    w.add_argument("--data-dir", help="local folder with the suite's images (kodak, div2k16)")
    w.add_argument("--images", help="comma-separated image ids to keep (e.g. kodim01,kodim02)")
    w.add_argument("--max-images", type=int, default=0, help="keep only the first N images (0 keeps all)")
    w.add_argument("--max-size", type=int, default=0, help="downscale so the longest side is at most this (0 = native)")
    w.add_argument("--max-pixels", type=int, help="refuse images of more pixels than this, read from the file's "
                   "header before decoding (default 100000000)")
    w.add_argument("--convert-rgb", action="store_true", help="convert grayscale/RGBA images to RGB with a warning")
    w.add_argument("--strategies", default="standard,uniform,int,nint",
                   help="comma-separated selectors, e.g. nint,int or 'nint[xi=0.5|0.7]' (see `list strategies`)")
    w.add_argument("--seeds", default="0", help="comma-separated seeds")
    e = p.add_argument_group("experiment files")
    e.add_argument("--preset", help="a named protocol: experiments/NAME.yaml (see `list presets`)")
    e.add_argument("--config", metavar="FILE.yaml", help="an experiment file whose keys are these long options "
                   "(e.g. `mt-ratio: 0.2`); flags given override it")
    t = p.add_argument_group("training protocol")
    t.add_argument("--iters", type=int, default=5000, help="training iterations")
    t.add_argument("--mt-ratio", type=float, default=0.2, help="sampling ratio r in (0, 1]")
    t.add_argument("--ratio-schedule", default="constant", help="constant | linear | step | cosine | reverse-cosine")
    t.add_argument("--interval", default="dense",
                   help="dense | dense2 | dense5 | incremental | reverse-incremental | decremental")
    t.add_argument("--model", default="siren", help="model name, or comma-separated names to run each (see `list models`)")
    t.add_argument("--model-param", action="append", default=[], metavar="KEY=VALUE",
                   help="model parameter, repeatable (e.g. depth=3, width=64)")
    t.add_argument("--lr", type=float, help="Adam learning rate (default: the model's, 1e-4 for SIREN)")
    t.add_argument("--lr-schedule", default="constant", help="constant | cosine (to 1e-6)")
    m = p.add_argument_group("measurement")
    m.add_argument("--eval-every", type=int, default=100, help="SSIM/LPIPS period in iterations")
    m.add_argument("--psnr-every", type=int, default=1, help="PSNR period in iterations; a longer one saves the "
                   "full-image forward of strategies that do not run one themselves")
    m.add_argument("--no-lpips", action="store_true", help="do not compute LPIPS")
    m.add_argument("--lpips-weights", help="path of torchvision's alexnet-owt-7be5be79.pth (offline LPIPS)")
    m.add_argument("--lpips-norm", default="minmax", choices=["minmax", "fixed"],
                   help="LPIPS input: each image min-max normalised to [-1, 1] (the NINT release) or [0, 1] mapped "
                        "to [-1, 1] (fixed: how runs stored before this option computed it)")
    s = p.add_argument_group("speed (opt-in; each changes numerics or needs a GPU)")
    s.add_argument("--compile", nargs="?", const="default",
                   choices=["default", "max-autotune", "cudagraphs", "reduce-overhead"],
                   help="torch.compile the model (faster on a GPU); max-autotune also tunes the GEMMs (minutes of "
                        "one-off autotuning, cached on disk); cudagraphs adds CUDA graphs to that; reduce-overhead "
                        "is the CUDA graphs alone (seconds to compile)")
    s.add_argument("--tf32", action="store_true", help="TF32 matrix products (faster, changes numerics)")
    s.add_argument("--bf16-scoring", action="store_true",
                   help="INT and NINT rank pixels by a bf16 forward (SIREN; faster, changes the picks)")
    s.add_argument("--graph-steps", action="store_true",
                   help="replay each step after its selection as one CUDA graph (GPU; constant ratio and lr)")
    s.add_argument("--chunk-size", type=int, default=0, help="pixels per chunk for full-image forwards (0 = one pass)")
    x = p.add_argument_group("execution and output")
    x.add_argument("--out", help="results directory (default: results/<suite>)")
    x.add_argument("--devices", help="comma-separated devices (default: every visible GPU, else cpu)")
    x.add_argument("--workers-per-device", type=int, default=1,
                   help="concurrent runs per device (throughput mode; timing is then shared, and recorded so)")
    x.add_argument("--pack", type=int, default=1, metavar="K",
                   help="train up to K runs of one strategy on images of one size as one batched model (GPU "
                        "throughput; their train-seconds come from exclusive timing profiles); see docs/packed.md")
    x.add_argument("--dask", metavar="ADDRESS", help="run the jobs on a Dask cluster: tcp://host:8786, or local[:N] "
                   "for N worker processes here (see docs/dask.md)")
    x.add_argument("--force", action="store_true", help="rerun runs that are already finished")
    x.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="start no run that would be expected to end more than SECONDS after the command started "
                        "(expected: the store's finished runs of its strategy and iterations), then exit with "
                        "status 3 if runs are left: a scheduler's time slot ends between runs, not inside one; "
                        "one run at a time only")
    x.add_argument("--dry-run", action="store_true",
                   help="print what the command would run (per strategy: runs to do, finished, and an estimate "
                        "from the store's finished runs) and write nothing")
    x.add_argument("--no-progress", action="store_true", help="no progress bars")
    for name in LISTS:  # the older spelling of `list NAME`
        x.add_argument(f"--list-{name}", action="store_true", help=f"same as `list {name}`")
    return p


def _coerce(action: argparse.Action, key: str, value: Any, source: str) -> Any:
    """An experiment file's value in the form the option's flag would give it, or a one-line error."""
    flag = action.option_strings[-1]
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise BenchError(f"{source}: {key} must be true or false, got {value!r}; e.g. `{flag[2:]}: true`")
        return value
    if isinstance(action, argparse._AppendAction):  # --model-param: a mapping, a list of KEY=VALUE, or one
        if isinstance(value, dict):
            return [f"{k}={v}" for k, v in value.items()]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if value is None:
        return None
    if isinstance(value, (bool, dict, list)) and not (action.dest == "compile" and value is True):
        raise BenchError(f"{source}: {key} takes one value like its flag {flag}, got {value!r}")
    if action.dest == "compile":
        value = action.const if value is True else value
        if value is False:
            return None
    if action.type is not None:
        try:
            value = action.type(str(value))  # via str: `iters: 2.5` is refused as `--iters 2.5` would be
        except ValueError:
            raise BenchError(f"{source}: {key} must be a {action.type.__name__}, got {value!r}") from None
    else:
        value = str(value)
    if action.choices is not None and value not in action.choices:
        raise BenchError(f"{source}: {key} must be one of {', '.join(action.choices)}, got {value!r}")
    return value


def experiment_defaults(parser: argparse.ArgumentParser, settings: dict[str, Any],
                        source: str) -> tuple[dict[str, Any], Any]:
    """(parser defaults, model_params) from an experiment file's settings; an unknown key is a one-line error."""
    from .presets import EXTRA_KEYS

    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config", "preset")
               and not a.dest.startswith("list_")}
    defaults, model_params = {}, None
    for key, value in settings.items():
        if key == "model_params":
            if not (isinstance(value, dict) or (isinstance(value, list) and all(isinstance(v, dict) for v in value))):
                raise BenchError(f"{source}: model_params must be a mapping (depth: 3) or a list of mappings, "
                                 f"got {value!r}")
            model_params = value
        elif key in actions:
            defaults[key] = _coerce(actions[key], key.replace("_", "-"), value, source)
        elif key not in EXTRA_KEYS:
            raise BenchError(f"{source}: unknown key {key.replace('_', '-')!r}; use the long options of `run` "
                             f"(e.g. mt-ratio, strategies) or {', '.join(EXTRA_KEYS)}")
    return defaults, model_params


def parse_run(argv: list[str], prog: str = "nint-bench run") -> tuple[argparse.Namespace, Any]:
    """The resolved options of `run` (defaults < --preset < --config < flags) and the model_params variants."""
    from . import presets

    parser = run_parser(prog)
    first = parser.parse_args(argv)
    layers = []
    if not argv:
        layers.append((presets.get(DEMO_PRESET)["settings"], f"experiments/{DEMO_PRESET}.yaml"))
    if first.preset:
        preset = presets.get(first.preset)
        layers.append((preset["settings"], f"preset {first.preset} ({preset['path'].name})"))
    if first.config:
        layers.append((presets.load_experiment(first.config), first.config))
    model_params = None
    for settings, source in layers:
        defaults, variants = experiment_defaults(parser, settings, source)
        parser.set_defaults(**defaults)
        model_params = variants if variants is not None else model_params
    return (parser.parse_args(argv) if layers else first), model_params


def plan_run(args: argparse.Namespace, model_params: Any = None) -> tuple[list, str, list[tuple[str, dict]]]:
    """(jobs, results directory, model variants) of a resolved `run`; every input error surfaces here, before
    anything is written."""
    import datasets

    from .models import build_model, model_spec
    from .runner import build_jobs, csv_list, parse_model_params, parse_seeds, parse_strategies, select_images

    models = csv_list(args.model) or ["siren"]
    for name in models:
        model_spec(name)  # unknown names fail here, before any image is read
    variants = model_params if model_params is not None else {}
    variants = [dict(v) for v in variants] if isinstance(variants, list) else [dict(variants)]
    overrides = parse_model_params(args.model_param)
    variants = list({json.dumps(v, sort_keys=True): v for v in ({**v, **overrides} for v in variants)}.values())
    refs = select_images(args.suite, args.data_dir, args.images, args.max_images)
    try:
        strategy_list = parse_strategies(args.strategies)
    except (TypeError, ValueError) as exc:  # e.g. nint[xi=abc]: the strategy compared a string with a number
        raise BenchError(f"--strategies {args.strategies!r}: a parameter value has the wrong type ({exc}); "
                         "write numbers as numbers, e.g. nint[xi=0.5]") from None
    if not strategy_list:
        raise BenchError(f"--strategies {args.strategies!r} names no strategy; e.g. --strategies nint,uniform "
                         "(see --list-strategies)")
    suite = Path(args.suite).name if Path(args.suite).exists() else args.suite
    common = dict(
        suite=suite, mt_ratio=args.mt_ratio, ratio_schedule=args.ratio_schedule, interval=args.interval,
        iters=args.iters, lr_schedule=args.lr_schedule, eval_every=args.eval_every, psnr_every=args.psnr_every,
        lpips=not args.no_lpips, lpips_norm=args.lpips_norm, max_size=args.max_size, chunk_size=args.chunk_size,
        compile={None: False, "default": True}.get(args.compile, args.compile), tf32=args.tf32,
        bf16_scoring=args.bf16_scoring, graph_steps=args.graph_steps,
    )
    seeds = parse_seeds(args.seeds)
    max_pixels = datasets.MAX_PIXELS if args.max_pixels is None else args.max_pixels
    jobs = []
    for name in models:  # each model with its own default lr unless --lr (or the experiment) sets one
        for params in variants:
            try:
                build_model(name, params)  # bad model parameters fail here, before any run
            except (TypeError, ValueError) as exc:  # e.g. depth=abc: the model compared a string with a number
                raise BenchError(f"--model-param {json.dumps(params, sort_keys=True)} for model {name!r}: a value has "
                                 f"the wrong type ({exc}); e.g. --model-param depth=3") from None
            jobs += build_jobs(refs, strategy_list, seeds, convert_rgb=args.convert_rgb, max_pixels=max_pixels, model=name,
                               model_params=params, lr=args.lr if args.lr is not None else model_spec(name).lr,
                               **common)
    return jobs, args.out or f"results/{suite}", [(m, v) for m in models for v in variants]


def run_main(argv: list[str], prog: str = "nint-bench run") -> int:
    from .runner import check_devices, csv_list, run_jobs

    started = time.monotonic()
    args, model_params = parse_run(argv, prog)
    listed = [name for name in LISTS if getattr(args, f"list_{name}")]
    if listed:
        return list_main(listed[:1])
    if not argv:
        print(f"no arguments: running the short offline demo (experiments/{DEMO_PRESET}.yaml: {args.strategies} on "
              f"{args.suite}/{args.images} at {args.max_size} px, {args.iters} iterations); see --help for the full "
              "benchmark", file=sys.stderr)
    jobs, out, variants = plan_run(args, model_params)
    if args.dry_run:
        print_plan(jobs, out, args.force)
        return 0
    devices = check_devices(csv_list(args.devices)) or None
    if args.workers_per_device < 1:
        raise BenchError(f"--workers-per-device must be >= 1, got {args.workers_per_device}")
    if args.pack < 1:
        raise BenchError(f"--pack must be >= 1 (1: no packing), got {args.pack}")
    deadline = None
    if args.time_limit is not None:
        if not args.time_limit > 0:
            raise BenchError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
        deadline = started + args.time_limit
    outcomes = run_jobs(jobs, out, devices, args.workers_per_device, "off" if args.no_lpips else "auto",
                        args.lpips_weights, args.force, progress=not args.no_progress, pack=args.pack,
                        dask=args.dask, deadline=deadline)
    failed = [o for o in outcomes if o["status"] != "ok"]
    for o in failed:
        print(f"{o['status']}: {o['label']} on {o['image']} (seed {o['seed']}): {o['error'].split(' | ')[0]}",
              file=sys.stderr)
    print_summary(jobs, out, variants, prog)
    if failed:
        return 1
    return 3 if deadline is not None and _left(jobs, out, args.force, outcomes) else 0


def _left(jobs: list, out: str, force: bool, outcomes: list) -> set[str]:
    """The runs of this command that are neither finished in the store nor run now (--force: not run now)."""
    from .store import Store

    finished = set() if force else set(Store(out, readonly=True).scan().finished["run_id"])
    return {j.cfg.run_id for j in jobs} - {o["run_id"] for o in outcomes} - finished


def print_plan(jobs: list, out: str, force: bool) -> None:
    """--dry-run: per strategy label, the runs this command would do and those already finished in `out`, with
    the median wall-clock seconds of the store's finished runs of that label and iteration count (the GPU and
    flags they ran with, so a guide, not a promise). Nothing is written."""
    import pandas as pd

    from .runner import wall_estimates
    from .store import Store

    finished = pd.DataFrame(columns=["run_id", "label", "iters", "wall_seconds"])
    if (Path(out) / "runs").is_dir():
        finished = Store(out, readonly=True).scan().finished
    done = set() if force else set(finished["run_id"])
    seconds = wall_estimates(finished)
    distinct = {j.cfg.run_id: j.cfg for j in jobs}
    rows, total, unknown = [], 0.0, 0
    for label in dict.fromkeys(cfg.label for cfg in distinct.values()):
        cfgs = [c for c in distinct.values() if c.label == label]
        todo = [c for c in cfgs if c.run_id not in done]
        each = [seconds.get((label, c.iters)) for c in todo]
        known = [e for e in each if e is not None]
        total += sum(known)
        unknown += len(each) - len(known)
        estimate = f"{sum(known) / 60:.1f}" if known else ("?" if todo else "—")
        rows.append((label, len(todo), len(cfgs) - len(todo), estimate))
    width = max([len("strategy")] + [len(r[0]) for r in rows])
    print(f"{out}: {sum(r[1] for r in rows)} of {len(distinct)} runs to do (dry run: nothing is written)")
    print(f"{'strategy':{width}}  {'to do':>6}  {'finished':>8}  {'est. min':>8}")
    for label, todo, done_count, estimate in rows:
        print(f"{label:{width}}  {todo:>6}  {done_count:>8}  {estimate:>8}")
    if unknown and not total:
        print("estimate: none (the store has no finished run of these strategies and iterations to go by)")
        return
    note = f"; {unknown} runs without a finished run of their label and iterations to go by" if unknown else ""
    print(f"estimate: {total / 60:.1f} min of wall clock, one run at a time, from the store's finished runs{note}")


def print_summary(jobs: list, out: str, variants: list[tuple[str, dict]], prog: str) -> None:
    """One table per model variant of this command's runs, columns named by the iteration they are read at."""
    import pandas as pd

    from .analysis import summary_table
    from .store import load

    runs, metrics = load(out)
    ids = {j.cfg.run_id for j in jobs}
    runs, metrics = runs[runs["run_id"].isin(ids)], metrics[metrics["run_id"].isin(ids)]
    several = len(variants) > 1
    for name, params in variants:
        key = json.dumps(params, sort_keys=True)
        part = runs[(runs["model"] == name) & (runs["model_params"] == key)] if several else runs
        if not len(part):
            continue
        iters = sorted({int(i) for i in part["iters"]})
        at = "/".join(map(str, iters))
        table = summary_table(part, metrics[metrics["run_id"].isin(part["run_id"])], 30.0)
        table = table.rename(columns={c: f"{c}@{at}" for c in ("psnr", "ssim", "lpips")})
        with pd.option_context("display.width", 160, "display.precision", 3, "display.max_columns", 20):
            what = f" with {name} {key}" if several else ""
            print(f"\nsummary of {len(part)} runs in {out}{what} (means over images and seeds):")
            print(table.to_string())
    print(f"\npsnr@N, ssim@N, lpips@N: at iteration N, the end of the runs; ms/it: train-milliseconds per "
          f"iteration; s_to_30dB, it_to_30dB: train-seconds and iterations to first reach 30 dB (mean over the runs "
          f"that did; `reached` counts them).\ntables and figures: {_command(prog)} report --results {out}")


def _command(prog: str) -> str:
    """The program part of a subcommand's prog ("nint-bench run" -> "nint-bench")."""
    return prog.rsplit(" ", 1)[0] if prog.endswith((" run", " list")) else prog


# --- list ----------------------------------------------------------------------------------------------------
def list_parser(prog: str) -> argparse.ArgumentParser:
    p = ArgParser(prog=prog, formatter_class=HelpFormatter,
                  description="List what the benchmark knows: one name and one line about it per row.")
    p.add_argument("what", choices=LISTS, help="strategies (selectors for --strategies), suites (for --suite), "
                   "presets (experiments/NAME.yaml, for --preset), models (for --model)")
    return p


def list_main(argv: list[str], prog: str = "nint-bench list") -> int:
    what = list_parser(prog).parse_args(argv).what
    rows: list[tuple[str, str]]
    if what == "strategies":
        import strategies

        rows = [(name, strategies.describe(name)) for name in strategies.list_strategies()]
    elif what == "suites":
        import datasets

        rows = [*datasets.list_suites().items(), ("<path>", "any folder of images, or one image file")]
    elif what == "presets":
        from .presets import PRESETS

        rows = [(name, preset["doc"]) for name, preset in PRESETS.items()]
    else:
        from .models import MODELS

        rows = [(name, f"{spec.doc} (lr {spec.lr:g})") for name, spec in sorted(MODELS.items())]
    width = max(len(name) for name, _ in rows) + 2
    for name, doc in rows:
        print(f"{name:{width}s}{doc}")
    return 0


# --- entry point ---------------------------------------------------------------------------------------------
def _tune(argv: list[str], prog: str) -> int:
    from . import tune

    return tune.main(argv, prog=prog)


def _report(argv: list[str], prog: str) -> int:
    from . import report

    return report.main(argv, prog=prog)


HANDLERS: dict[str, Callable[[list[str], str], int]] = {"run": run_main, "tune": _tune, "report": _report,
                                                         "list": list_main}


def dispatch(argv: list[str], prog: str) -> int:
    if argv and argv[0] in ("-h", "--help"):
        top_parser(prog).print_help()
        return 0
    if argv and argv[0] in HANDLERS:
        return HANDLERS[argv[0]](argv[1:], f"{prog} {argv[0]}")
    if argv and not argv[0].startswith("-"):
        raise BenchError(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)} (run is the default, "
                         f"e.g. {prog} --suite kodak)")
    return run_main(argv, f"{prog} run")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None, prog: str = "nint-bench") -> int:
    """Run one command; returns the exit status (2 for bad input, one `error: …` line on stderr)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    previous_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning  # "warning: …", one line
    from .interrupt import signal_number, stop_on_signals

    try:
        with stop_on_signals():  # SIGTERM ends the command as SIGINT does: the run in progress is not stored
            code = dispatch(argv, prog)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (e.g. `| head -2`): what it read is all it wanted. Point stdout at /dev/null so
        # the interpreter's last flush does not fail again, and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = signal_number(exc)
        print(f"interrupted by {signal.Signals(signum).name}: finished runs are stored, the run in progress is not; "
              "rerun the same command to resume", file=sys.stderr)
        return 128 + signum
    finally:
        warnings.formatwarning = previous_format


def console_main() -> None:
    """The `nint-bench` console command."""
    sys.exit(main())
