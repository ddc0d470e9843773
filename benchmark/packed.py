"""--pack K: up to K runs of one strategy on images of one size train as one model with stacked weights.

One fit of a sampling strategy is small matrix products (20 % of the pixels × 256 × 256) that leave most of a
GPU idle, and a second process on the same GPU mostly queues behind the first. A pack batches the matrix
products of its members instead: their weights are stacked along a leading member axis
(`torch.func.stack_module_state`) and every forward is a `vmap` of the model over that axis, so one kernel does
the work of K.

What stays each member's own, exactly as in its unpacked fit (`benchmark.fit.fit`): its initial weights
(`torch.manual_seed(seed)` then the model's constructor), its generator, its strategy object (selection state,
caches), its targets, its loss and its metric rows. Its Adam is the slice of one Adam over the stacked
parameters: Adam is elementwise, so that is K independent Adams. The loss that is back-propagated is the sum
of the members' own losses, so each member's gradient is its own loss's gradient.

Each member's strategy sees a `MemberTask`: an ordinary `Task` whose `forward_full` / `forward_scoring` read
the member's slice of one no-grad forward of every member over every pixel (computed at most once per step,
on the first request), and whose NTK scores come from one `vmap` of the VJP and JVP over the members that
refresh at this step (which each strategy's `step_kind` tells before it selects).

A packed run has no train-seconds of its own: its time is priced from the exclusive timing profile of its
configuration (`benchmark.profiles`), step kind by step kind.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call, jvp, stack_module_state, vjp, vmap

from datasets import to_float, to_uint8
from strategies import resolve

from .config import RunConfig
from .errors import BenchError
from .fit import DIVERGENCE_CHECK_EVERY, FitResult, matmul_precision, wait_for_device
from .metrics import psnr, ssim
from .models import build_model
from .ntk import pixel_chunks
from .profiles import priced_seconds, profile_for
from .task import Task, coordinate_grid

# Strategy classes a pack runs (their subclasses and aliases too: nint-released, ntk/ntk-only, residual-only, ...).
PACKABLE = ("Standard", "Uniform", "INT", "NINT", "EGRA", "Expansive")
# Fields a pack's members may differ in; every other field of their configs is one value for the pack.
MEMBER_FIELDS = ("image", "image_sha256", "seed", "params", "suite")


def packable(cfg: RunConfig) -> bool:
    """Can this run train as a pack member? A covered strategy, eager fp32/tf32 numerics, a constant ratio (one
    batch size per step kind, so a timing profile prices every step). Other runs train unpacked."""
    cls, _ = resolve(cfg.strategy, cfg.params)
    covered = any(base.__name__ in PACKABLE and base.__module__.startswith("strategies.") for base in cls.__mro__)
    return (covered and not cfg.compile and not cfg.graph_steps and not cfg.bf16_scoring
            and cfg.ratio_schedule == "constant")


def pack_key(cfg: RunConfig, height: int, width: int) -> str:
    """Runs with one key may share a pack: one strategy, one image size, every other setting equal."""
    shared = {k: v for k, v in cfg.to_dict().items() if k not in MEMBER_FIELDS}
    return repr(sorted(shared.items(), key=lambda kv: kv[0])) + f"@{height}x{width}"


@dataclass
class MemberTask(Task):
    """One member's view of the pack: its own targets and generator; full forwards and NTK scores from the pack."""

    pack: Any = None
    member: int = 0

    @torch.no_grad()
    def forward_full(self) -> torch.Tensor:
        return self.pack.full_prediction()[self.member]

    @torch.no_grad()
    def forward_scoring(self) -> torch.Tensor:
        return self.forward_full()

    def precomputed_ntk(self, variant: str):
        return self.pack.ntk_of(self.member, variant)


class Pack:
    """The stacked parameters of K models of one architecture, and the batched computations over them."""

    def __init__(self, models: list[torch.nn.Module], coords: torch.Tensor, targets: torch.Tensor, chunk_size: int):
        self.k = len(models)
        params, buffers = stack_module_state(models)
        self.params: dict[str, torch.Tensor] = params  # (K, ...) leaves that require grad
        self.buffers: dict[str, torch.Tensor] = buffers
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only; its tensors are the stacked ones
        self.coords = coords  # (N, D), shared by every member (one image size)
        self.targets = targets  # (K, N, C)
        self.chunk_size = chunk_size
        self._full: torch.Tensor | None = None
        self._ntk: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.member_x = vmap(self._one, in_dims=(0, 0, 0))  # (K, n, D) -> (K, n, C)
        self.shared_x = vmap(self._one, in_dims=(0, 0, None))  # (n, D) -> (K, n, C)

    def _one(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    @property
    def n_pixels(self) -> int:
        return int(self.coords.shape[0])

    def detached(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.params.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training forward (with autograd) of member k on x[k]."""
        return self.member_x(self.params, self.buffers, x)

    def member_forward(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """One member's forward on its own coordinates (its slice of the stacked parameters)."""
        return self._one({n: p[k] for n, p in self.params.items()}, {n: b[k] for n, b in self.buffers.items()}, x)

    def updated(self) -> None:
        """The parameters changed: forget this step's full prediction and NTK scores."""
        self._full = None
        self._ntk = {}

    @torch.no_grad()
    def full_prediction(self) -> torch.Tensor:
        """(K, N, C): every member's prediction of every pixel under the current parameters, computed once."""
        if self._full is None:
            size = self.chunk_size or self.n_pixels
            params = self.detached()
            outs = [self.shared_x(params, self.buffers, self.coords[s:s + size]) for s in range(0, self.n_pixels, size)]
            self._full = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return self._full

    def prepare_ntk(self, members: list[int]) -> None:
        """NTK scores (K·g and primal, both as Σ_c of squares) and predictions of `members`, in one vmap."""
        todo = [k for k in members if k not in self._ntk]
        if not todo:
            return
        index = torch.tensor(todo, device=self.coords.device)
        params = {n: p.detach()[index] for n, p in self.params.items()}
        buffers = {n: b[index] for n, b in self.buffers.items()}
        targets = self.targets[index]

        def pull_back(p, b, x, y):
            pred, pull = vjp(lambda q: self._one(q, b, x), p)
            (v,) = pull(pred - y)
            return pred, v

        def push_forward(p, b, v, x):
            return jvp(lambda q: self._one(q, b, x), (p,), (v,))

        slices = list(pixel_chunks(_Sized(self.n_pixels, self.chunk_size)))
        preds, v = [], None
        for c in slices:  # Jᵀg sums over pixels: chunks accumulate
            pred, part = vmap(pull_back, in_dims=(0, 0, None, 0))(params, buffers, self.coords[c], targets[:, c])
            v = part if v is None else {n: v[n] + part[n] for n in v}
            preds.append(pred)
        kg, primal = [], []
        for c in slices:  # J(Jᵀg) is per pixel: chunks concatenate
            out, tangent = vmap(push_forward, in_dims=(0, 0, 0, None))(params, buffers, v, self.coords[c])
            if out.is_complex():
                out, tangent = out.real, tangent.real
            primal.append(out.pow(2).sum(dim=-1))
            kg.append(tangent.pow(2).sum(dim=-1))
        pred, kg, primal = (torch.cat(parts, dim=1) for parts in (preds, kg, primal))
        for i, k in enumerate(todo):
            self._ntk[k] = (kg[i], primal[i], pred[i])

    def ntk_of(self, k: int, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Member k's (score, prediction) of this step; computed for k alone if no refresh announced it."""
        self.prepare_ntk([k])
        kg, primal, pred = self._ntk[k]
        return (kg if variant == "kg" else primal), pred


@dataclass
class _Sized:
    """What `pixel_chunks` reads of a task."""

    n_pixels: int
    chunk_size: int


@dataclass
class PackResult:
    results: list[FitResult]
    step_kinds: list[list[str]]  # per member, the kind of each of its updates
    pack_seconds: np.ndarray  # wall time of each packed step (all members together), for benchmarks


def check_pack(cfgs: list[RunConfig], images: list[np.ndarray]) -> None:
    if not cfgs or len(cfgs) != len(images):
        raise BenchError(f"a pack needs one image per run, got {len(cfgs)} runs and {len(images)} images")
    sizes = {img.shape[:2] for img in images}
    if len(sizes) > 1:
        raise BenchError(f"a pack holds images of one size, got {sorted(sizes)}; pack each size on its own")
    keys = {pack_key(c, *images[0].shape[:2]) for c in cfgs}
    if len(keys) > 1:
        raise BenchError("a pack's runs may differ only in image, seed and strategy parameters; these differ in "
                         "more (strategy, model, ratio, iterations or flags)")
    for cfg in cfgs:
        if not packable(cfg):
            raise BenchError(f"{cfg.label} with these flags cannot train in a pack (covered: eager numerics, a "
                             "constant ratio, strategies standard, uniform, int, nint (all variants), egra, expansive)")


def fit_packed(cfgs: list[RunConfig], images: list[np.ndarray], device: torch.device | str = "cpu",
               lpips_metric=None, profile: dict[str, Any] | None = None) -> PackResult:
    """Fit image k with cfgs[k], all in one pack; the metrics of each member are those its unpacked fit would
    record (up to the rounding of batched matrix products). `profile` (benchmark.profiles) prices the members'
    steps; without it their train_seconds are NaN until `price` is applied."""
    check_pack(cfgs, images)
    device = torch.device(device)
    cfg0 = cfgs[0]
    K = len(cfgs)
    height, width = images[0].shape[:2]
    n = height * width
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    models = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)  # each member's initialisation is its unpacked run's
        models.append(build_model(cfg.model, cfg.model_params).to(device))
    targets = torch.stack([torch.from_numpy(to_float(img)).to(device).reshape(-1, 3) for img in images])
    coords = coordinate_grid(height, width, device)
    pack = Pack(models, coords, targets, cfg0.chunk_size)
    del models
    tasks, strategies = [], []
    for k, (cfg, img) in enumerate(zip(cfgs, images)):
        generator = torch.Generator(device=device)
        generator.manual_seed(cfg.seed)
        task = MemberTask(None, coords, targets[k], to_uint8(img), height, width, cfg.iters, cfg.mt_ratio,
                          cfg.ratio_schedule, cfg.interval, generator, cfg.chunk_size,
                          predict=lambda x, k=k: pack.member_forward(k, x), pack=pack, member=k)
        cls, params = resolve(cfg.strategy, cfg.params)
        tasks.append(task)
        strategies.append(cls(task, **params))
    optimizer = torch.optim.Adam(pack.params.values(), lr=cfg0.lr)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg0.iters, eta_min=1e-6)
                 if cfg0.lr_schedule == "cosine" else None)

    T = cfg0.iters
    nan = float("nan")
    hist = {m: torch.full((K, T + 1), nan, device=device) for m in ("psnr", "ssim", "lpips", "loss")}
    fraction = np.full((K, T + 1), nan)
    can_ssim = min(height, width) >= 7
    can_lpips = min(height, width) >= 32
    active = [True] * K
    status, diverged_at, done = ["ok"] * K, [None] * K, [T] * K
    kinds: list[list[str]] = [[] for _ in range(K)]
    last_idx: list[torch.Tensor | None] = [None] * K

    def ssim_due(t: int) -> bool:
        return t % cfg0.eval_every == 0 or t == T

    def due(t: int) -> bool:
        return t % cfg0.psnr_every == 0 or ssim_due(t)

    def evaluate(k: int, t: int, pred: torch.Tensor) -> None:
        hist["psnr"][k, t] = psnr(pred, targets[k])
        if ssim_due(t):
            img, target_img = pred.view(height, width, 3), targets[k].view(height, width, 3)
            if can_ssim:
                hist["ssim"][k, t] = ssim(img, target_img)
            if lpips_metric is not None and can_lpips:
                hist["lpips"][k, t] = lpips_metric(img, target_img)

    dummy = torch.zeros(1, device=device, requires_grad=True)  # as in fit: the first Adam step's imports
    dummy.sum().backward()
    torch.optim.Adam([dummy]).step()
    pack_seconds = []
    with matmul_precision(cfg0.tf32):
        for t in range(T):
            live = [k for k in range(K) if active[k]]
            if not live:
                break
            promised = {k: strategies[k].provides_full_pred(t) for k in live}
            if due(t):
                for k in live:
                    if not promised[k]:
                        evaluate(k, t, tasks[k].forward_full())
            wait_for_device(device)  # the step starts with an empty queue, as in fit
            started = time.perf_counter()
            step_kinds = {k: strategies[k].step_kind(t) for k in live}
            pack.prepare_ntk([k for k in live if step_kinds[k] == "ntk"])
            batches = {k: strategies[k].select(t) for k in live}
            sizes = {k: batches[k].size(n) for k in live}
            n_max = max(sizes.values())
            index = torch.zeros((K, n_max), dtype=torch.long, device=device)  # finished members train on pixel 0
            for k in live:
                if batches[k].coords is not None:
                    raise BenchError(f"{cfgs[k].label} trains on coordinates of its own; it cannot be packed")
                idx = batches[k].indices
                index[k, : sizes[k]] = torch.arange(n, device=device) if idx is None else idx
            pred = pack.forward(coords[index])
            losses = {}
            for k in live:
                _, y = tasks[k].training_pairs(batches[k])
                losses[k] = strategies[k].loss(pred[k, : sizes[k]], y, batches[k], t)
            optimizer.zero_grad(set_to_none=True)
            torch.stack(list(losses.values())).sum().backward()
            for k in live:
                strategies[k].after_backward(batches[k], t)
            optimizer.step()
            pack.updated()
            if scheduler is not None:
                scheduler.step()
            wait_for_device(device)
            pack_seconds.append(time.perf_counter() - started)
            for k in live:
                kinds[k].append(step_kinds[k])
                hist["loss"][k, t + 1] = losses[k].detach()
                fraction[k, t + 1] = sizes[k] / n
                if promised[k] and due(t):
                    full = batches[k].full_pred
                    if full is None and batches[k].indices is None:
                        full = pred[k].detach()
                    if full is None:
                        raise RuntimeError(f"strategy {cfgs[k].label!r} promised a full prediction at step {t} "
                                           "but gave none")
                    evaluate(k, t, full)
                if (t + 1) % DIVERGENCE_CHECK_EVERY == 0 or t + 1 == T:
                    finite = torch.isfinite(hist["loss"][k, 1 : t + 2])
                    if not bool(finite.all()):
                        diverged_at[k] = int((~finite).nonzero()[0, 0]) + 1
                        status[k], done[k], active[k] = "diverged", t + 1, False
        with torch.no_grad():
            full = pack.full_prediction()
            for k in range(K):
                if status[k] == "ok":
                    evaluate(k, T, full[k])

    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    results = []
    cpu = {m: h.cpu().numpy().astype(np.float64) for m, h in hist.items()}
    for k, cfg in enumerate(cfgs):
        rows = done[k] + 1
        cumulative = np.full(rows, nan)
        cumulative[0] = 0.0
        metrics = pd.DataFrame({
            "run_id": cfg.run_id, "suite": cfg.suite, "image": cfg.image, "strategy": cfg.label, "seed": cfg.seed,
            "iteration": np.arange(rows), "train_seconds": cumulative,
            "loss": cpu["loss"][k, :rows], "psnr": cpu["psnr"][k, :rows], "ssim": cpu["ssim"][k, :rows],
            "lpips": cpu["lpips"][k, :rows], "sampled_fraction": fraction[k, :rows],
        })
        results.append(FitResult(metrics, status[k], diverged_at[k], float(cumulative[-1]), height, width, peak,
                                 kinds[k][: rows - 1]))
        if profile is not None:
            price(results[-1], profile)
    return PackResult(results, kinds, np.array(pack_seconds))


def price(result: FitResult, profile: dict[str, Any]) -> None:
    """Give a packed member the train-seconds of its steps at the exclusive costs of their kinds."""
    cumulative = priced_seconds(result.step_kinds, profile)
    result.metrics["train_seconds"] = cumulative
    result.train_seconds = float(cumulative[-1])


def plan_packs(jobs: list, k: int) -> tuple[list[list], list]:
    """Split jobs into packs of at most k runs that may share one model, and the jobs that run unpacked
    (not packable, or alone in their group). Jobs keep their order within each pack."""
    import datasets

    groups: dict[str, list] = {}
    single = []
    sizes: dict[tuple, tuple[int, int]] = {}
    for job in jobs:
        if k < 2 or not packable(job.cfg):
            single.append(job)
            continue
        where = (job.ref.id, job.ref.path, job.convert_rgb, job.cfg.max_size)
        if where not in sizes:
            sizes[where] = datasets.resize_longest(job.ref.read(job.convert_rgb), job.cfg.max_size).shape[:2]
        height, width = sizes[where]
        groups.setdefault(pack_key(job.cfg, height, width), []).append(job)
    packs = []
    for members in groups.values():
        for start in range(0, len(members), k):
            part = members[start:start + k]
            (packs.append(part) if len(part) > 1 else single.extend(part))
    return packs, single


def execute_pack(jobs: list, root: str, device: str, lpips_mode: str = "auto",
                 lpips_weights: str | None = None) -> list[dict[str, Any]]:
    """Run the jobs as one pack and store one ordinary run per member (its own run id, metrics and row), with
    execution_mode packed-K and timing "profile". The profile is measured before the pack, exclusively, if the
    results directory has none for this configuration. A failure fails every member of the pack."""
    import datasets

    from .fit import ms_per_iter
    from .runner import _lpips_for, _run_row, describe_failure
    from .store import Store

    store = Store(root)
    started = time.time()
    mode = f"packed-{len(jobs)}"
    cfgs = [job.cfg for job in jobs]
    try:
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        images = [datasets.resize_longest(job.ref.read(job.convert_rgb), job.cfg.max_size) for job in jobs]
        check_pack(cfgs, images)
        # one profile per distinct strategy parameters (they are part of its key), measured before the pack
        firsts = {json.dumps(c.params, sort_keys=True, default=str): i for i, c in reversed(list(enumerate(cfgs)))}
        for i in firsts.values():
            profile_for(root, cfgs[i], images[i], device)
        lpips = _lpips_for(device, lpips_mode, lpips_weights) if cfgs[0].lpips else None
        packed = fit_packed(cfgs, images, device, lpips)
        rows = []
        for cfg, result in zip(cfgs, packed.results):
            i = firsts[json.dumps(cfg.params, sort_keys=True, default=str)]
            price(result, profile_for(root, cfgs[i], images[i], device, set(result.step_kinds)))
            last = result.metrics.iloc[-1]
            evaluated = result.metrics.dropna(subset=["ssim"])
            ok = result.status == "ok"
            row = _run_row(
                cfg, device, mode, started, status=result.status, height=result.height, width=result.width,
                train_seconds=result.train_seconds, ms_per_iter=ms_per_iter(result), timing="profile",
                final_psnr=float(last["psnr"]) if ok else None,
                final_ssim=float(evaluated["ssim"].iloc[-1]) if ok and len(evaluated) else None,
                final_lpips=float(last["lpips"]) if ok and last["lpips"] == last["lpips"] else None,
                diverged_at=result.diverged_at,
                error=(f"loss became NaN/Inf at iteration {result.diverged_at}" if result.status == "diverged"
                       else None),
            )
            store.write_run(result.metrics, row)
            rows.append(row)
        return rows
    except BenchError as exc:
        if "no space left" in str(exc):
            raise
        error = describe_failure(exc)
    except Exception as exc:  # noqa: BLE001 - record the failure of every member, let the suite go on
        import traceback

        error = describe_failure(exc) + " | " + traceback.format_exc(limit=-3).replace("\n", " ")
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    rows = [_run_row(cfg, device, mode, started, status="failed", error=error) for cfg in cfgs]
    for row in rows:
        store.write_failure(row)
    return rows
