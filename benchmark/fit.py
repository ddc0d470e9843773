"""The fit loop: one strategy fits one image. Training is timed; evaluation is not.

Row t of the result describes the model after t updates (t = 0 … T): its PSNR (every `psnr_every`, by default
every t), SSIM/LPIPS (every `eval_every`), both also at T, the cumulative train-seconds of those t updates, and
the loss and sampled fraction of update t. Train-seconds cover selection (scoring forwards, NTK VJP/JVP),
forward, backward and the optimiser step; on a GPU they are read from CUDA events around each step, so no step
waits on the host. Each evaluation ends by waiting for the GPU: otherwise the host, idle while the GPU
evaluates, would queue the next step in advance, and a step whose kernels take less time than the host needs
to queue them would be timed faster after an evaluated row than after a plain one. When a strategy already ran
a no-grad forward of every pixel under the current parameters, that forward is reused for the PSNR instead of
running another one.
"""
from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from datasets import to_float, to_uint8
from strategies import resolve
from strategies.base import Batch, Strategy

from .config import COMPILE_MODES, RunConfig
from .errors import BenchError
from .metrics import psnr, ssim
from .models import build_model
from .step_graphs import StepGraphs
from .task import Task, coordinate_grid

DIVERGENCE_CHECK_EVERY = 100  # iterations between the (host-syncing) finiteness checks of the loss
CALLBACK_EVERY = 100  # iterations between calls of `callback(iteration, psnr)`
RECOMPILE_LIMIT = 256  # compiled graphs kept per function in one process (torch's default: 8)


class RunStopped(Exception):
    """Raised by a callback to end a run early (e.g. an Optuna pruner); the run is stored as "pruned"."""


class StepTimer:
    """Per-step training time: CUDA events on a GPU (read once at the end), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: list[tuple] = []
        self.cpu: list[float] = []
        self._t0 = 0.0

    def start(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.events.append((ev, None))
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.events[-1] = (self.events[-1][0], ev)
        else:
            self.cpu.append(time.perf_counter() - self._t0)

    def seconds(self) -> np.ndarray:
        if self.cuda:
            torch.cuda.synchronize()
            return np.array([a.elapsed_time(b) / 1000.0 for a, b in self.events])
        return np.array(self.cpu)


@dataclass
class FitResult:
    metrics: pd.DataFrame
    status: str  # ok | diverged | pruned
    diverged_at: int | None
    train_seconds: float
    height: int
    width: int
    peak_memory_mb: float | None = None  # peak CUDA memory allocated during the run (None off CUDA)
    step_kinds: list[str] | None = None  # the strategy's `step_kind` of each update (timing profiles price them)


def fit(cfg: RunConfig, image: np.ndarray, device: torch.device | str = "cpu", lpips_metric=None,
        callback: Callable[[int, float], None] | None = None,
        on_select: Callable[[int, Batch], None] | None = None, warm_up: bool = True) -> FitResult:
    """Fit `image` ((H, W, 3) uint8/uint16, already resized) with `cfg`; returns per-iteration metrics.

    `callback(t, psnr_t)` is called every CALLBACK_EVERY iterations (outside the timed region, with a host
    sync); it may raise RunStopped to end the run, which then returns with status "pruned".
    `on_select(t, batch)` sees the batch that update t trained on, after the step and outside the timed region
    (e.g. the report's selection maps). `warm_up=False` skips the untimed scratch steps before the loop (only
    to measure what they remove: benchmark/bench_warmup.py)."""
    device = torch.device(device)
    height, width = image.shape[:2]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(cfg.seed)  # model initialisation
    model = build_model(cfg.model, cfg.model_params).to(device)
    targets = torch.from_numpy(to_float(image)).to(device).reshape(-1, 3)
    target_img = targets.view(height, width, 3)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed)
    # A constant ratio keeps every batch size fixed, so the compiled graphs can be specialised to their shapes.
    predict = compiled(model, cfg.compile, static_shapes=cfg.ratio_schedule == "constant") if cfg.compile else model
    score = None
    if cfg.bf16_scoring:
        score = compiled(model.forward_bf16, cfg.compile, static_shapes=True) if cfg.compile else model.forward_bf16
    task = Task(model, coordinate_grid(height, width, device), targets, to_uint8(image), height, width,
                cfg.iters, cfg.mt_ratio, cfg.ratio_schedule, cfg.interval, generator, cfg.chunk_size, predict, score)
    cls, params = resolve(cfg.strategy, cfg.params)
    strategy = cls(task, **params)
    if cfg.graph_steps and device.type != "cuda":
        raise BenchError(f"--graph-steps needs a CUDA GPU, got device {device}; drop --graph-steps on this machine")
    # --compile also fuses Adam's update into one kernel on a GPU (same update rule, rounding may differ)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=bool(cfg.compile) and device.type == "cuda",
                                 capturable=cfg.graph_steps)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.iters, eta_min=1e-6)
                 if cfg.lr_schedule == "cosine" else None)

    T, n = cfg.iters, task.n_pixels
    nan = float("nan")
    psnr_hist = torch.full((T + 1,), nan, device=device)
    ssim_hist = torch.full((T + 1,), nan, device=device)
    lpips_hist = torch.full((T + 1,), nan, device=device)
    loss_hist = torch.full((T + 1,), nan, device=device)
    fraction = np.full(T + 1, nan)
    can_ssim = min(height, width) >= 7  # skimage's 7×7 window; smaller images record SSIM as null
    can_lpips = min(height, width) >= 32  # AlexNet's pooling needs a few dozen pixels; else null

    def ssim_due(t: int) -> bool:
        return t % cfg.eval_every == 0 or t == T

    def due(t: int) -> bool:
        """Is row t evaluated? The same rows for every strategy, so time-to-PSNR has one resolution for all."""
        return t % cfg.psnr_every == 0 or ssim_due(t)

    def evaluate(t: int, pred: torch.Tensor) -> None:
        psnr_hist[t] = psnr(pred, targets)
        if ssim_due(t):
            img = pred.view(height, width, 3)
            if can_ssim:
                ssim_hist[t] = ssim(img, target_img)
            if lpips_metric is not None and can_lpips:
                lpips_hist[t] = lpips_metric(img, target_img, cfg.lpips_norm)
        wait_for_device(device)  # the next step starts with an empty queue (module docstring)

    # The first Adam step of a process imports part of torch's compiler stack (seconds on a CPU): do one
    # throw-away step on a dummy tensor so that one-off cost never lands in a run's train-seconds.
    dummy = torch.zeros(1, device=device, requires_grad=True)
    dummy.sum().backward()
    torch.optim.Adam([dummy]).step()
    timer = StepTimer(device)
    status, diverged_at, done = "ok", None, T
    kinds: list[str] = []

    with matmul_precision(cfg.tf32):
        if warm_up:
            # under --graph-steps StepGraphs warms up and captures the optimizer's step itself
            warm_up_outside_timing(task, lambda scratch: cls(scratch, **params),
                                   None if cfg.graph_steps else optimizer)
        graphs = None
        if cfg.graph_steps:
            graphs = StepGraphs(task, optimizer)
            # a scratch selection of step 0 gives the batch size to capture; the fit's own stream is untouched
            graphs.prepare(strategy, cls(scratch_copy(task), **params).select(0), 0)
        for t in range(T):
            promised = strategy.provides_full_pred(t)
            if not promised and due(t):
                evaluate(t, task.forward_full())
            kinds.append(strategy.step_kind(t))
            timer.start()
            batch, pred, loss = train_step(strategy, optimizer, t, graphs)
            if scheduler is not None:
                scheduler.step()
            timer.stop()
            if on_select is not None:
                on_select(t, batch)
            loss_hist[t + 1] = loss.detach()
            fraction[t + 1] = batch.size(n) / n
            if promised:
                full = batch.full_pred
                if full is None and batch.indices is None and batch.coords is None:
                    full = pred.detach()
                if full is None:
                    raise RuntimeError(f"strategy {cfg.strategy!r} promised a full prediction at step {t} but gave none")
                if due(t):
                    evaluate(t, full)
            if callback is not None and (t + 1) % CALLBACK_EVERY == 0 and t + 1 < T:
                evaluate(t + 1, task.forward_full())  # the model after t + 1 updates (untimed)
                try:
                    callback(t + 1, float(psnr_hist[t + 1]))
                except RunStopped:
                    status, done = "pruned", t + 1
                    break
            if (t + 1) % DIVERGENCE_CHECK_EVERY == 0 or t + 1 == T:
                finite = torch.isfinite(loss_hist[1 : t + 2])
                if not bool(finite.all()):
                    diverged_at = int((~finite).nonzero()[0, 0]) + 1
                    status, done = "diverged", t + 1
                    break
        if status == "ok":
            with torch.no_grad():
                evaluate(T, task.forward_full())

    step_seconds = timer.seconds()
    cumulative = np.concatenate([[0.0], np.cumsum(step_seconds)])
    rows = done + 1
    metrics = pd.DataFrame({
        "run_id": cfg.run_id,
        "suite": cfg.suite,
        "image": cfg.image,
        "strategy": cfg.label,
        "seed": cfg.seed,
        "iteration": np.arange(rows),
        "train_seconds": cumulative[:rows],
        "loss": loss_hist[:rows].cpu().numpy().astype(np.float64),
        "psnr": psnr_hist[:rows].cpu().numpy().astype(np.float64),
        "ssim": ssim_hist[:rows].cpu().numpy().astype(np.float64),
        "lpips": lpips_hist[:rows].cpu().numpy().astype(np.float64),
        "sampled_fraction": fraction[:rows],
    })
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return FitResult(metrics, status, diverged_at, float(cumulative[rows - 1]), height, width, peak, kinds[:done])


@contextmanager
def matmul_precision(tf32: bool):
    """fp32 matrix products in TF32 (--tf32) or in full fp32 inside the block; the previous setting after it."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def wait_for_device(device: torch.device) -> None:
    """Block the host until the GPU has run everything queued (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled(model: Callable[[torch.Tensor], torch.Tensor], mode: bool | str, static_shapes: bool):
    """torch.compile'd model (see RunConfig.compile for the modes). With "cudagraphs" the compiled forward and
    backward are replayed as CUDA graphs (on a GPU); the optimizer and the strategy's selection stay eager
    between them, and a full prediction is read before the next forward replays over it. `static_shapes`: one
    graph per batch size (faster kernels; every registered strategy keeps one size under a constant ratio, a
    new strategy whose size varies anyway would recompile), else torch's automatic dynamic shapes (a size that
    changes gets one graph for all sizes)."""
    # Every run of a grid compiles the same forward: each batch size or image size adds a graph to its cache,
    # and past torch's default of 8 a run would fall back to eager without a word (slower, and timed so).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(model, mode=COMPILE_MODES.get(mode) if isinstance(mode, str) else None,
                         dynamic=False if static_shapes else None)


def train_step(strategy: Strategy, optimizer: torch.optim.Optimizer, t: int, graphs: StepGraphs | None = None):
    """One timed update: the strategy's selection, forward, loss, backward, its hook, the optimizer step (all
    after the selection replayed as one CUDA graph when `graphs` holds one for this step).
    Returns (batch, prediction of the batch, loss)."""
    task = strategy.task
    batch = strategy.select(t)
    replayed = graphs.run(strategy, batch, t) if graphs is not None else None
    if replayed is not None:
        return batch, *replayed
    x, y = task.training_pairs(batch)
    pred = task.predict(x)
    loss = strategy.loss(pred, y, batch, t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    strategy.after_backward(batch, t)
    optimizer.step()
    return batch, pred, loss


def scratch_copy(task: Task) -> Task:
    """The task with a generator of its own, so untimed preparation never draws from the fit's random stream."""
    generator = torch.Generator(device=task.device)
    generator.manual_seed(0)
    return dataclasses.replace(task, generator=generator)


def warm_up_outside_timing(task: Task, make_strategy: Callable[[Task], Strategy],
                           optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-4) -> None:
    """Pay a run's one-off costs before the timed loop, so its train-seconds hold only its steps: in eager mode
    the first use of cuBLAS, of torch.func's JVP and of each kernel in a fresh process (0.04–0.24 s on a GPU);
    under torch.compile the compilation (seconds; minutes of autotuning with max-autotune). A scratch copy of
    the strategy, with its own generator, takes the steps 0 and 1 (and T-1 when the
    budget changes over the run, so that the graph for varying batch sizes is built too) with the evaluation
    forward after each; then the parameters are restored and the global random state too. Every path those
    steps take (no-grad full forward, training batch, Soft Mining's coordinate gradient, ...) has run once, and
    the fit itself starts from the same state as without the warm-up: same parameters, empty optimizer state,
    untouched generator. The steps use the fit's own `optimizer` when given: the first step of an Adam
    instance has a one-off host cost (tens of ms on a GPU; with a throw-away Adam step 0 stayed at 3-11x the
    median step), paid once per instance, so only the fit's own instance can take it outside the timing.
    Its state is emptied afterwards, so its first timed step initialises it as it would have anyway."""
    saved = [p.detach().clone() for p in task.model.parameters()]
    devices = [task.device] if task.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        scratch = scratch_copy(task)
        strategy = make_strategy(scratch)
        own = optimizer is not None
        if not own:
            optimizer = torch.optim.Adam(task.model.parameters(), lr=lr)
        steps = [0, 1] if task.iters > 1 else [0]
        if task.budget(task.iters - 1) != task.budget(0):
            steps.append(task.iters - 1)
        for t in steps:
            train_step(strategy, optimizer, t)
            scratch.forward_full()
    with torch.no_grad():
        for p, value in zip(task.model.parameters(), saved):
            p.copy_(value)
            p.grad = None
    if own:
        optimizer.state.clear()  # Adam's moments and step count start from nothing, as without the warm-up
    wait_for_device(task.device)


def ms_per_iter(result: FitResult) -> float:
    steps = len(result.metrics) - 1
    return 1000.0 * result.train_seconds / steps if steps else math.nan
