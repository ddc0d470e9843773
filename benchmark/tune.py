"""Optuna search over the sampling ratio (and optionally xi, alpha, lam, lr) of one strategy on one suite.

    python3 run_benchmark.py tune --suite kodak --data-dir DIR --strategy nint --search mt_ratio,xi --iters 2000 --n-trials 40 --out results/tune-kodak
    optuna-dashboard results/tune-kodak/study.journal     # live view (pip install optuna-dashboard)
    python3 run_benchmark.py report --results results/tune-kodak --study results/tune-kodak/study.journal

A trial is one parameter set fitted to every image × seed. Its runs go through `runner.execute` into the
Parquet store <out>/ like any benchmark run (the trial's run ids are in its user attrs, and in the study's
user attrs as `trial_<n>`); the value is read back from their metrics, as the mean over runs of:
  psnr-at-iters    PSNR at the final iteration (maximise)
  psnr-at-seconds  PSNR of the model at --budget-seconds of training; a run shorter than that counts with its
                   final PSNR and a warning (raise --iters) (maximise)
  time-to-psnr     train-seconds to first reach --target-db (minimise). Penalty: a run that never reaches it
                   counts as twice the train-seconds of a full --iters run (projected from its own pace if it
                   stopped early), so missing the target is always worse than reaching it at the last step.
A diverged run counts as 0 dB for the PSNR objectives (with a pruner, its NaN PSNR usually prunes the trial
first). A run that fails (e.g. out of memory) fails its trial, which does not count towards --n-trials, and the
study goes on with the next one.

Search space (`--search mt_ratio,xi`; ranges overridable as `--search mt_ratio=0.05:0.5,lr`): mt_ratio
0.05–1, xi 0–1, lam 0–4 (on a 0.001 grid), alpha 1–50 (integer, log), lr 1e-5–1e-2 (log). xi, alpha and lam are
strategy parameters, so the strategy must take them (nint does).

Storage: <out>/study.journal, an Optuna journal file (JournalFileBackend), unless --storage. A journal, not
SQLite, because it is an append-only log written one fsynced line per operation under a file lock: a SIGKILL
loses at most the line being written, and several processes, on this machine or on a shared NFS folder, can
append at once; SQLite locks the whole file per write and is unsafe on network file systems. A line torn by a
process killed mid-append (or by a full disk) is cut off under the journal's lock, before the next append and
when a study is opened, and kept in <journal>.torn, with a one-line warning: Optuna's reader skips a torn last
line, but an append glued onto it would make every later read fail. A journal already damaged that way is
repaired on open (the complete operation glued after the torn bytes is kept). `--storage URL` takes any Optuna
RDB URL (postgresql://…, mysql://…, sqlite:///…) for workers on several machines; there, heartbeats fail a
dead worker's trial and re-queue it automatically. Workers that create a new RDB study at the same moment race
to create its tables; each retries a few times with a growing, jittered pause before it gives up in one line.

Interrupting (Ctrl-C, SIGINT): the trial under way is marked FAIL and its parameters are queued again, tune
prints one line and exits with status 130; rerunning the same command resumes.

Resume: --n-trials is the total wanted (complete + pruned trials count): rerunning the same command runs only
the missing ones. A trial left RUNNING by a killed process of this machine is marked failed and its parameters
are queued again (one killed before it recorded its process: once it is UNCLAIMED_SECONDS old); runs it had
finished are read back from the store instead of being fit again. A rerun with
different settings (suite, iterations, search space, …) under the same study name is refused.

Pruning (`--pruner median|hyperband|none`): every 100 iterations of each run, the fit loop's callback reports
the PSNR to the trial at step = run index × iters + iteration (runs in a fixed image × seed order, so a step
means the same image and iteration in every trial) and raises RunStopped when the pruner says so; the run is
stored as "pruned" and the trial ends PRUNED. For time-to-psnr, −PSNR is reported (lower is better).

Workers: `--devices cuda:0,cuda:1` starts one worker process per device on the same storage. On several
machines, run the same command on each, with a shared --storage URL (or a journal on a shared file system) and
a shared --out. Workers stop once the study holds --n-trials finished trials; trials already running then
still finish, so the total can exceed it by up to (workers − 1). Each worker takes one throw-away optimiser
step first: torch imports its compiler on a process's first step, which would otherwise add seconds to the
train-seconds of its first run. `--dask ADDRESS` runs the trials as Dask tasks instead, one trial per task
through the shared storage, so the study ends with exactly --n-trials (see benchmark/dask_runner.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from .argparsing import ArgParser, HelpFormatter
from .errors import BenchError
from .study_storage import open_storage, retry_start_race  # noqa: F401 - open_storage: tune's and report's storage
from .runner import check_devices, csv_list, parse_model_params, parse_seeds, select_images

OBJECTIVES = {"psnr-at-iters": "maximize", "psnr-at-seconds": "maximize", "time-to-psnr": "minimize"}
PRUNERS = ("median", "hyperband", "none")
PENALTY_FACTOR = 2.0  # time-to-psnr: a run that misses the target counts as this × a full run's train-seconds
# name: (kind, low, high, log). xi/alpha/lam are strategy parameters, mt_ratio/lr run settings. Linear floats
# are drawn on a FLOAT_STEP grid, so run labels stay short (nint[xi=0.545]) and a repeated value reuses its runs.
FLOAT_STEP = 0.001
SPACE: dict[str, tuple[str, float, float, bool]] = {
    "mt_ratio": ("float", 0.05, 1.0, False),
    "xi": ("float", 0.0, 1.0, False),
    "alpha": ("int", 1, 50, True),
    "lam": ("float", 0.0, 4.0, False),
    "lr": ("float", 1e-5, 1e-2, True),
}
RUN_SETTINGS = ("mt_ratio", "lr")  # searched names that are RunConfig fields, not strategy parameters
UNCLAIMED_SECONDS = 60  # see recover_killed_trials


class RunFailed(Exception):
    """A run of a trial failed (stored as "failed"): the trial fails, the study goes on."""


class TrialInterrupted(Exception):
    """SIGINT during a trial: Optuna marks the trial FAIL (this is in its `catch`), and the study stops."""


# With neither --suite nor --strategy, `tune` is a small study that ends in about two minutes on a CPU.
DEMO = {"suite": "builtin", "images": "astronaut", "max_size": 64, "strategy": "nint", "iters": 300, "lr": 1e-3,
        "model_param": ["depth=3", "width=64"], "n_trials": 8, "pruner_startup": 2, "no_lpips": True,
        "out": "results/tune-demo"}
DEFAULT_SUITE, DEFAULT_STRATEGY = "builtin", "nint"


def parser(prog: str = "nint-bench tune") -> argparse.ArgumentParser:
    """The options of `tune`, each one line; the module docstring has the details of objectives and storage."""
    p = ArgParser(prog=prog, usage="%(prog)s [OPTION ...]", formatter_class=HelpFormatter, description=f"""\
Optuna search over the sampling ratio (and xi, alpha, lam, lr) of one strategy on one suite. A trial fits every
image × seed through the benchmark runner, so its runs land in the results store like any run; the study is a
journal file next to them (<out>/study.journal). Rerunning the same command resumes the study to --n-trials.
With neither --suite nor --strategy, a small study runs: nint with a SIREN 3×64 on one builtin image at
{DEMO['max_size']} px, {DEMO['iters']} iterations, {DEMO['n_trials']} trials (under two minutes on a CPU).

examples:
  {prog} --suite kodak --data-dir DIR --strategy nint --search mt_ratio,xi --iters 2000 --n-trials 40
  {prog} --suite kodak --strategy int --objective time-to-psnr --target-db 30 --devices cuda:0,cuda:1
  optuna-dashboard results/tune-kodak/study.journal""".replace("%", "%%"))
    g = p.add_argument_group("what to fit (as in `run`)")
    g.add_argument("--suite", help=f"builtin | kodak | div2k16 | a folder | an image file (default: {DEFAULT_SUITE})")
    g.add_argument("--data-dir", help="local folder with the suite's images (kodak, div2k16)")
    g.add_argument("--images", help="comma-separated image ids to keep")
    g.add_argument("--max-images", type=int, default=0, help="keep only the first N images (0 keeps all)")
    g.add_argument("--max-size", type=int, default=0, help="downscale so the longest side is at most this (0 = native)")
    g.add_argument("--convert-rgb", action="store_true", help="convert grayscale/RGBA images to RGB")
    g.add_argument("--strategy", help=f"one strategy selector, e.g. nint or 'nint[lam=2]' (default: {DEFAULT_STRATEGY})")
    g.add_argument("--max-pixels", type=int, help="refuse images of more pixels than this (default 100000000)")
    g.add_argument("--iters", type=int, default=5000, help="training iterations per run")
    g.add_argument("--seeds", default="0", help="comma-separated seeds; each trial fits every image × seed")
    g.add_argument("--mt-ratio", type=float, default=0.2, help="sampling ratio when it is not searched")
    g.add_argument("--lr", type=float, help="Adam lr when it is not searched (default: the model's)")
    g.add_argument("--ratio-schedule", default="constant", help="as in `run`")
    g.add_argument("--interval", default="dense", help="as in `run`")
    g.add_argument("--lr-schedule", default="constant", help="as in `run`")
    g.add_argument("--model", default="siren", help="model name")
    g.add_argument("--model-param", action="append", default=[], metavar="KEY=VALUE",
                   help="model parameter, repeatable (e.g. depth=3)")
    g.add_argument("--eval-every", type=int, default=100, help="SSIM/LPIPS period in iterations")
    g.add_argument("--no-lpips", action="store_true", help="do not compute LPIPS")
    g.add_argument("--lpips-weights", help="path of torchvision's alexnet-owt-7be5be79.pth (offline LPIPS)")
    g.add_argument("--out", help="results directory for the runs and the journal (default: results/tune-<suite>)")
    g.add_argument("--devices", help="comma-separated devices, one worker each (default: cuda:0 if any, else cpu)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = p.add_argument_group("the study")
    s.add_argument("--search", default="mt_ratio", help=f"comma-separated names from {', '.join(SPACE)}, each "
                   "optionally =low:high (defaults: mt_ratio 0.05:1, xi 0:1, lam 0:4, alpha 1:50 log, lr 1e-5:1e-2 log)")
    s.add_argument("--objective", default="psnr-at-iters", choices=list(OBJECTIVES),
                   help="final PSNR | PSNR at --budget-seconds | train-seconds to --target-db (a miss counts as "
                        f"{PENALTY_FACTOR:g}× a full run)")
    s.add_argument("--budget-seconds", type=float, help="train-seconds budget of psnr-at-seconds")
    s.add_argument("--target-db", type=float, default=30.0, help="PSNR target of time-to-psnr")
    s.add_argument("--n-trials", type=int, default=20, help="total finished trials wanted (a resumed study counts "
                   "the ones it has)")
    s.add_argument("--pruner", default="median", choices=PRUNERS, help="stops clearly worse trials early")
    s.add_argument("--pruner-startup", type=int, default=5, help="trials before the pruner may prune")
    s.add_argument("--storage", help="an Optuna RDB URL or a journal file (default: <out>/study.journal)")
    s.add_argument("--study-name", help="default: tune-<strategy>-<objective>")
    s.add_argument("--sampler-seed", type=int, help="seed of the TPE sampler (reproducible proposals)")
    s.add_argument("--dask", metavar="ADDRESS", help="run the trials on a Dask cluster (tcp://host:8786, or local[:N]), "
                   "one trial per task, through the shared storage (see docs/dask.md)")
    return p


def parse_args(argv: list[str], prog: str = "nint-bench tune") -> argparse.Namespace:
    """The options, with the small study's settings as defaults when neither --suite nor --strategy is given."""
    p = parser(prog)
    args = p.parse_args(argv)
    if args.suite is None and args.strategy is None:
        p.set_defaults(**DEMO)
        args = p.parse_args(argv)
        print(f"no --suite or --strategy: a small study ({args.strategy}, SIREN 3×64, on {args.suite}/{args.images} at "
              f"{args.max_size} px, {args.iters} iterations, {args.n_trials} trials, under two minutes on a CPU) "
              f"into {args.out}; see --help for a real one", file=sys.stderr)
    args.suite = args.suite or DEFAULT_SUITE
    args.strategy = args.strategy or DEFAULT_STRATEGY
    return args


# --- set-up --------------------------------------------------------------------------------------------------
def parse_search(text: str, strategy_defaults: dict[str, Any]) -> dict[str, tuple[str, float, float, bool]]:
    """'mt_ratio=0.1:0.5,xi' -> {name: (kind, low, high, log)}, checked against SPACE and the strategy."""
    space = {}
    for item in csv_list(text):
        name, _, rng = item.partition("=")
        name = name.strip()
        if name not in SPACE:
            raise BenchError(f"--search: cannot search {name!r}; choose from {', '.join(SPACE)}")
        if name not in RUN_SETTINGS and name not in strategy_defaults:
            raise BenchError(f"--search {name}: the strategy has no parameter {name!r}; search mt_ratio or lr, "
                             "or use a strategy that takes it (e.g. --strategy nint)")
        kind, low, high, log = SPACE[name]
        if rng:
            try:
                low, high = (float(v) for v in rng.split(":"))
            except ValueError:
                raise BenchError(f"--search {item!r}: write a range as name=low:high, e.g. mt_ratio=0.05:0.5") from None
            if kind == "int":
                low, high = int(low), int(high)
            if not low < high:
                raise BenchError(f"--search {item!r}: low must be below high, e.g. {name}=0.1:0.9")
            if log and low <= 0:
                raise BenchError(f"--search {item!r}: {name} is searched on a log scale, so low must be > 0")
        space[name] = (kind, low, high, log)
    if not space:
        raise BenchError(f"--search {text!r} names nothing to search; e.g. --search mt_ratio,xi")
    return space


def suggest(trial, space: dict[str, tuple[str, float, float, bool]]) -> dict[str, Any]:
    out = {}
    for name, (kind, low, high, log) in space.items():
        if kind == "int":
            out[name] = trial.suggest_int(name, int(low), int(high), log=log)
        elif log:
            out[name] = trial.suggest_float(name, low, high, log=True)
        else:
            out[name] = round(trial.suggest_float(name, low, high, step=FLOAT_STEP), 6)  # no 0.30000000000000004
    return out


@dataclasses.dataclass
class Plan:
    """Everything a worker needs: the base jobs (one per image × seed) and the search."""

    jobs: list
    strategy: str
    fixed: dict[str, Any]  # strategy parameters given in --strategy
    space: dict[str, tuple[str, float, float, bool]]
    objective: str
    budget_seconds: float | None
    target_db: float
    out: str
    lpips_mode: str
    lpips_weights: str | None
    settings: dict[str, Any]  # what a resumed study must share with the first command

    def trial_jobs(self, values: dict[str, Any]) -> list:
        """The jobs of one parameter set: the base jobs with the searched values put in."""
        from strategies import resolve

        from .runner import Job

        strategy_values = {k: v for k, v in values.items() if k not in RUN_SETTINGS}
        _, params = resolve(self.strategy, {**self.fixed, **strategy_values})
        run_values = {k: v for k, v in values.items() if k in RUN_SETTINGS}
        return [Job(dataclasses.replace(j.cfg, params=params, **run_values), j.ref, j.convert_rgb) for j in self.jobs]


def make_plan(args: argparse.Namespace) -> Plan:
    from strategies import resolve

    from .models import build_model, model_spec
    from .runner import build_jobs, parse_strategies

    if args.objective == "psnr-at-seconds" and not (args.budget_seconds and args.budget_seconds > 0):
        raise BenchError("--objective psnr-at-seconds needs a positive --budget-seconds, e.g. --budget-seconds 20")
    if args.n_trials < 1:
        raise BenchError(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.pruner_startup < 0:
        raise BenchError(f"--pruner-startup must be >= 0, got {args.pruner_startup}")
    selected = parse_strategies(args.strategy)
    if len(selected) != 1:
        raise BenchError(f"--strategy {args.strategy!r} must name exactly one strategy variant, e.g. nint or 'nint[lam=2]'")
    name, fixed = selected[0]
    space = parse_search(args.search, resolve(name)[1])
    seeds = parse_seeds(args.seeds)
    model_params = parse_model_params(args.model_param)
    build_model(args.model, model_params)  # unknown model or parameter: one line, before any image is read
    refs = select_images(args.suite, args.data_dir, args.images, args.max_images)
    suite = Path(args.suite).name if Path(args.suite).exists() else args.suite
    lr = args.lr if args.lr is not None else model_spec(args.model).lr
    import datasets

    max_pixels = datasets.MAX_PIXELS if args.max_pixels is None else args.max_pixels
    jobs = build_jobs(refs, [(name, fixed)], seeds, convert_rgb=args.convert_rgb, max_pixels=max_pixels, suite=suite,
                      mt_ratio=args.mt_ratio, ratio_schedule=args.ratio_schedule, interval=args.interval,
                      model=args.model, model_params=model_params, iters=args.iters, lr=lr,
                      lr_schedule=args.lr_schedule, eval_every=args.eval_every, lpips=not args.no_lpips,
                      max_size=args.max_size)
    out = args.out or f"results/tune-{suite}"
    settings = {"suite": suite, "images": [r.id for r in refs], "strategy": args.strategy, "seeds": seeds,
                "iters": args.iters, "max_size": args.max_size, "model": args.model, "model_params": model_params,
                "mt_ratio": None if "mt_ratio" in space else args.mt_ratio, "lr": None if "lr" in space else lr,
                "ratio_schedule": args.ratio_schedule, "interval": args.interval, "lr_schedule": args.lr_schedule,
                "objective": args.objective, "budget_seconds": args.budget_seconds, "target_db": args.target_db,
                "search": {k: list(v) for k, v in space.items()}}
    return Plan(jobs, name, fixed, space, args.objective, args.budget_seconds, args.target_db, out,
                "off" if args.no_lpips else "auto", args.lpips_weights, settings)


# --- storage and study ---------------------------------------------------------------------------------------
def make_pruner(name: str, startup: int = 5):
    import optuna

    from .fit import CALLBACK_EVERY

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=CALLBACK_EVERY)
    return optuna.pruners.NopPruner()


def pruning_callback(trial, step_offset: int, sign: float = 1.0) -> Callable[[int, float], None]:
    """fit's callback: report sign × PSNR at step_offset + iteration and stop the run if the pruner says so."""
    from .fit import RunStopped

    def callback(iteration: int, psnr: float) -> None:
        trial.report(sign * psnr, step_offset + iteration)
        if trial.should_prune():
            raise RunStopped(f"pruned at iteration {iteration} (PSNR {psnr:.2f} dB)")

    return callback


def run_value(metrics, objective: str, iters: int, budget_seconds: float | None = None, target_db: float = 30.0) -> float:
    """One run's contribution to its trial's value (penalties: see the module docstring)."""
    from .analysis import first_reaching

    metrics = metrics.sort_values("iteration")
    if objective == "time-to-psnr":
        seconds = first_reaching(metrics, target_db)["train_seconds"].iloc[0]
        if math.isfinite(seconds):
            return float(seconds)
        last = metrics.iloc[-1]
        pace = float(last["train_seconds"]) / max(int(last["iteration"]), 1)
        return PENALTY_FACTOR * pace * iters
    if objective == "psnr-at-seconds":
        value = metrics.loc[metrics["train_seconds"] <= budget_seconds, "psnr"].iloc[-1]
    else:
        value = metrics["psnr"].iloc[-1]
    return float(value) if math.isfinite(value) else 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. EPERM: it exists
    return True


def recover_killed_trials(study) -> list[int]:
    """Fail the RUNNING trials whose worker process (on this host) is gone and queue their parameters again.

    A trial records its worker first thing; one without that record and older than UNCLAIMED_SECONDS was
    killed before its objective began (any host)."""
    import datetime as dt

    from optuna.trial import TrialState

    host, retried, now = socket.gethostname(), [], dt.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if worker is None:
            if t.datetime_start is None or (now - t.datetime_start).total_seconds() < UNCLAIMED_SECONDS:
                continue  # maybe a worker that is starting this trial right now
        else:
            pid, _, worker_host = str(worker).partition("@")
            if worker_host != host or not pid.isdigit() or _alive(int(pid)):
                continue  # another machine's, or still running
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):
            continue  # another process recovered it first
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        retried.append(t.number)
    return retried


def finished_count(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def load_study(plan: Plan, storage, name: str, pruner: str, startup: int, sampler_seed: int | None = None,
               worker: int = 0):
    """Create or attach to the study; a study created with other settings is refused."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its "Using an existing study" line: we say our own
    try:
        study = retry_start_race(lambda: optuna.create_study(
            storage=storage, study_name=name, direction=OBJECTIVES[plan.objective], load_if_exists=True,
            pruner=make_pruner(pruner, startup)))
    finally:
        optuna.logging.set_verbosity(verbosity)
    if study.direction.name.lower() != OBJECTIVES[plan.objective]:
        raise BenchError(f"study {name!r} {study.direction.name.lower()}s, but --objective {plan.objective} "
                         "needs the other direction; use another --study-name")
    known, mine = study.user_attrs.get("settings"), json.loads(json.dumps(plan.settings))  # as stored: lists, not tuples
    if known is None:
        study.set_user_attr("settings", mine)
        study.set_user_attr("results_dir", str(Path(plan.out).resolve()))
    elif known != mine:
        diff = sorted(k for k in set(known) | set(mine) if known.get(k) != mine.get(k))
        raise BenchError(f"study {name!r} was started with other settings ({', '.join(diff)} differ); rerun with the "
                         "same options to resume, or pass a new --study-name (or --out) for a new study")
    if sampler_seed is not None:  # offset by the trials so far, so a resumed study does not repeat its proposals
        sampler_seed += len(study.trials) + 7919 * worker
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    return study


# --- the objective -------------------------------------------------------------------------------------------
def objective_fn(plan: Plan, device: str, study, interrupted: list[int] | None = None) -> Callable:
    """The Optuna objective: fit (or read back) every run of the trial's parameters, return the mean value.
    On SIGINT it queues the trial's parameters again, stops the study, records the trial's number in
    `interrupted` and raises TrialInterrupted, which Optuna stores as the trial's failure."""
    import optuna

    from .runner import execute
    from .store import FINISHED, Store

    sign = -1.0 if OBJECTIVES[plan.objective] == "minimize" else 1.0
    store = Store(plan.out)

    def objective(trial) -> float:
        values = None
        try:
            trial.set_user_attr("worker", f"{os.getpid()}@{socket.gethostname()}")
            values = suggest(trial, plan.space)
            jobs = plan.trial_jobs(values)
            run_ids = [j.cfg.run_id for j in jobs]
            trial.set_user_attr("run_ids", run_ids)
            trial.set_user_attr("device", device)
            study.set_user_attr(f"trial_{trial.number}", run_ids)
            scores = []
            for k, job in enumerate(jobs):
                cfg = job.cfg
                callback = pruning_callback(trial, k * cfg.iters, sign)
                status = _stored_status(store, cfg.run_id)
                if status in FINISHED:
                    metrics = store.metrics({cfg.run_id})  # finished earlier (a retried or repeated trial)
                    if not _replay(metrics, callback):
                        raise optuna.TrialPruned()
                else:
                    row = execute(job, plan.out, device, plan.lpips_mode, plan.lpips_weights, callback=callback)
                    status = row["status"]
                    if status == "pruned":
                        raise optuna.TrialPruned()
                    if status == "failed":
                        error = row["error"].split(" | ")[0]
                        raise RunFailed(f"run {cfg.run_id} ({cfg.image}, seed {cfg.seed}) failed: {error}")
                    metrics = store.metrics({cfg.run_id})
                if status == "diverged":
                    print(f"trial {trial.number}: run {cfg.run_id} on {cfg.image} diverged; counted with a penalty",
                          file=sys.stderr)
                if plan.objective == "psnr-at-seconds" and metrics["train_seconds"].max() < plan.budget_seconds:
                    print(f"trial {trial.number}: run {cfg.run_id} trained only {metrics['train_seconds'].max():.1f} s "
                          f"< --budget-seconds {plan.budget_seconds:g}; its final PSNR counts (raise --iters)",
                          file=sys.stderr)
                scores.append(run_value(metrics, plan.objective, cfg.iters, plan.budget_seconds, plan.target_db))
            return sum(scores) / len(scores)
        except KeyboardInterrupt:
            if values is not None:
                study.enqueue_trial(values, user_attrs={"retry_of": trial.number})  # rerun picks it up again
            study.stop()
            if interrupted is not None:
                interrupted.append(trial.number)
            raise TrialInterrupted(f"trial {trial.number} interrupted") from None

    return objective


def _stored_status(store, run_id: str) -> str | None:
    """The stored status of one run (reads its one-row file, not the whole store), or None."""
    import pandas as pd

    row = store.root / "runs" / f"{run_id}.parquet"
    return str(pd.read_parquet(row, columns=["status"])["status"].iloc[0]) if row.is_file() else None


def _replay(metrics, callback) -> bool:
    """Report a stored run's PSNR to the pruner as fit's callback would have; False if it prunes."""
    from .fit import CALLBACK_EVERY, RunStopped

    psnr = metrics.set_index("iteration")["psnr"]
    last = int(psnr.index.max())
    for t in range(CALLBACK_EVERY, last, CALLBACK_EVERY):
        try:
            callback(t, float(psnr.get(t, float("nan"))))
        except RunStopped:
            return False
    return True


def _warm_up() -> None:
    """The first optimiser step of a process imports torch._dynamo (seconds) inside fit's timed region:
    take it here, so a worker's first trial is timed like the others."""
    import torch

    p = torch.zeros(1, requires_grad=True)
    p.grad = torch.zeros(1)
    torch.optim.Adam([p]).step()


class _QuietInterruption(logging.Filter):
    """Drops Optuna's "Trial N failed …" records (one with a traceback) of the interrupted trials: tune says it
    in one line of its own."""

    def __init__(self, interrupted: list[int]):
        super().__init__()
        self.interrupted = interrupted

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(f"Trial {n} failed ") for n in self.interrupted)


class StudyProgress:
    """A progress bar of the study's finished trials (resumed ones included) with the best value so far;
    an Optuna callback, so it moves once per trial."""

    def __init__(self, study, total: int, unit: str):
        from tqdm.auto import tqdm

        self.unit = unit
        self.bar = tqdm(total=total, initial=finished_count(study), desc=f"study {study.study_name}", unit="trial")
        self._show_best(study)

    def _show_best(self, study) -> None:
        from optuna.trial import TrialState

        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self.bar.set_postfix_str(f"best {study.best_value:.4g} {self.unit} (trial {study.best_trial.number})")

    def __call__(self, study, trial) -> None:
        self.bar.n = min(finished_count(study), self.bar.total)
        self._show_best(study)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def worker(args: argparse.Namespace, plan: Plan, device: str, index: int = 0, study=None,
           progress: bool = False) -> list[int]:
    """One worker: attach to the study (in a new process) and run trials on `device` until it has --n-trials.
    Returns the numbers of the trials a SIGINT interrupted (marked FAIL, parameters queued again)."""
    import optuna
    from optuna.trial import TrialState

    if study is None:
        storage = open_storage(args.storage or str(Path(plan.out) / "study.journal"))
        study = load_study(plan, storage, study_name(args), args.pruner, args.pruner_startup, args.sampler_seed, index)
    missing = args.n_trials - finished_count(study)
    if missing <= 0:
        return []
    _warm_up()
    enough = optuna.study.MaxTrialsCallback(args.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    interrupted: list[int] = []
    quiet, log = _QuietInterruption(interrupted), logging.getLogger("optuna.study._optimize")
    log.addFilter(quiet)
    bar = StudyProgress(study, args.n_trials, "s" if plan.objective == "time-to-psnr" else "dB") if progress else None
    try:
        study.optimize(objective_fn(plan, device, study, interrupted), n_trials=missing,
                       catch=(RunFailed, TrialInterrupted), callbacks=[enough, *([bar] if bar else [])])
    except KeyboardInterrupt:  # between trials, inside Optuna's own bookkeeping
        interrupted += release_own_trials(study)
    finally:
        log.removeFilter(quiet)
        if bar is not None:
            bar.close()
    return interrupted


def release_own_trials(study) -> list[int]:
    """Fail this process's RUNNING trials and queue their parameters again (a SIGINT outside the objective)."""
    from optuna.trial import TrialState

    me, released = f"{os.getpid()}@{socket.gethostname()}", []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == me:
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):
                continue
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            released.append(t.number)
    return released


def _worker_process(args: argparse.Namespace, plan: Plan, device: str, index: int) -> None:
    """A worker in a process of its own: exits 130 when interrupted, without a traceback."""
    try:
        interrupted = worker(args, plan, device, index)
    except KeyboardInterrupt:
        sys.exit(130)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if interrupted:
        sys.exit(130)


def interrupted_line(trials: list[int]) -> str:
    which = f"trial(s) {', '.join(map(str, sorted(trials)))} marked failed, their parameters queued again; " \
        if trials else ""
    return f"interrupted: {which}finished trials and runs are stored; rerun the same command to resume"


def study_name(args: argparse.Namespace) -> str:
    return args.study_name or f"tune-{args.strategy}-{args.objective}"


def _devices(text: str | None) -> list[str]:
    """--devices, checked; one GPU (or the CPU) when it is not given."""
    import torch

    return check_devices(csv_list(text)) or (["cuda:0"] if torch.cuda.is_available() else ["cpu"])


def main(argv: list[str], prog: str = "nint-bench tune") -> int:
    """The tune command; SIGINT at any point: one line (interrupted_line), status 130."""
    args = parse_args(argv, prog)
    plan = make_plan(args)  # every input error surfaces here, once, before any worker starts
    devices = _devices(args.devices)
    try:
        return _run(args, plan, devices, prog)
    except KeyboardInterrupt:
        print(interrupted_line([]), file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, plan: Plan, devices: list[str], prog: str = "nint-bench tune") -> int:
    import optuna

    storage_spec = args.storage or str(Path(plan.out) / "study.journal")
    name = study_name(args)
    study = load_study(plan, open_storage(storage_spec), name, args.pruner, args.pruner_startup, args.sampler_seed)
    retried = recover_killed_trials(study)
    if retried:
        print(f"trial(s) {', '.join(map(str, retried))} were left running by a killed process: marked failed, "
              "their parameters queued again", file=sys.stderr)
    done = finished_count(study)
    if 0 < done < args.n_trials:
        print(f"resuming study {name!r} in {storage_spec}: {done} of {args.n_trials} trials finished", file=sys.stderr)
    if done >= args.n_trials:
        print(f"study {name!r} already has {done} finished trials (--n-trials {args.n_trials}); nothing to run",
              file=sys.stderr)
    elif args.dask:
        from .dask_runner import tune_study

        tune_study(args.dask, args, plan, storage_spec, name, args.n_trials - done)
    elif len(devices) == 1:
        interrupted = worker(args, plan, devices[0], study=study, progress=not args.no_progress)
        if interrupted:
            print(interrupted_line(interrupted), file=sys.stderr)
            return 130
    else:
        import multiprocessing
        import signal

        ctx = multiprocessing.get_context("spawn")  # CUDA needs fresh processes
        procs = [ctx.Process(target=_worker_process, args=(args, plan, dev, i), name=f"tune-{dev}")
                 for i, dev in enumerate(devices)]
        for proc in procs:
            proc.start()
        try:
            for proc in procs:
                proc.join()
        except KeyboardInterrupt:  # pass it on (a terminal's Ctrl-C reaches them already), wait for their cleanup
            for proc in procs:
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGINT)
            for proc in procs:
                proc.join()
            print(interrupted_line([]), file=sys.stderr)
            return 130
        if any(p.exitcode == 130 for p in procs):
            print(interrupted_line([]), file=sys.stderr)
            return 130
        bad = [p.name for p in procs if p.exitcode != 0]
        if bad:
            print(f"worker(s) {', '.join(bad)} stopped with an error (see above); rerun the same command to resume",
                  file=sys.stderr)
    return report_best(optuna.load_study(study_name=name, storage=open_storage(storage_spec)), storage_spec, plan, prog)


def report_best(study, storage_spec: str, plan: Plan, prog: str = "nint-bench tune") -> int:
    from optuna.trial import TrialState

    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    print(f"study {study.study_name!r}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if not counts["complete"]:
        print("no complete trial yet; rerun the same command to go on")
        return 1
    best = study.best_trial
    unit = "s" if plan.objective == "time-to-psnr" else "dB"
    print(f"best trial #{best.number}: {plan.objective} = {best.value:.4g} {unit}")
    print("best params: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in best.params.items()))
    print(f"its runs in {plan.out}: {', '.join(best.user_attrs.get('run_ids', []))}")
    print(f"browse: optuna-dashboard {storage_spec}")
    print(f"report: {prog.removesuffix(' tune')} report --results {plan.out} --study {storage_spec}")
    return 0
