"""The strategy interface: at each step, which pixels (and optional loss weights) the optimiser sees."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from benchmark import schedules
from benchmark.errors import Range
from benchmark.task import Task


@dataclass
class Batch:
    """One step's training data.

    indices: pixel indices into the flattened image, or None for every pixel.
    weights: optional per-sample loss weights (same length as the batch).
    coords/targets: override the grid lookup (e.g. Soft Mining's coordinates that need an input gradient).
    full_pred: a no-grad prediction of *every* pixel under the parameters of this step (before the update),
        when the strategy computed one anyway; the fit loop reuses it for evaluation instead of another forward.
        A prediction is valid for the step that made it: under `--compile cudagraphs` it lives in a CUDA graph's
        output buffer, which the next replay overwrites, so a strategy that keeps one for later stores a clone.
    """

    indices: torch.Tensor | None
    weights: torch.Tensor | None = None
    coords: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    full_pred: torch.Tensor | None = None

    def size(self, n_pixels: int) -> int:
        if self.coords is not None:
            return int(self.coords.shape[0])
        return n_pixels if self.indices is None else int(self.indices.numel())


class Strategy:
    """Base class. Subclasses implement `choose`; the base applies the interval profile.

    `defaults` lists every tunable parameter with its default; unknown parameters are refused by the registry.
    `ranges` declares the allowed values of every numeric one (benchmark.errors.Range): the registry refuses
    NaN, ±inf and out-of-range values before a run starts; `validate(params)`, if a strategy defines it, checks
    what involves several parameters at once.
    On a step where the interval profile asks for no recompute, the previous batch is reused as is
    (same pixels, no full forward), as in INT and NINT.

    Every strategy that uses the profile also takes an optional `interval` parameter (not in `defaults`, so
    run ids and labels of runs without it are unchanged): it replaces the run's global profile for this
    strategy only, e.g. `int[interval=incremental]` next to dense peers, as in EVOS's Table 1.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    ranges: ClassVar[dict[str, Range]] = {}
    # Parameters added after results were published, with the value that reproduces those results: accepted,
    # but left out of the parameters (so of the run id and the label) at that value.
    optional: ClassVar[dict[str, Any]] = {}
    uses_profile: ClassVar[bool] = True  # False: the strategy ignores the interval profile

    def __init__(self, task: Task, **params: Any):
        self.task = task
        self.params = {**self.defaults, **params}
        self._last: Batch | None = None
        own = self.params.get("interval")
        self._profile = schedules.interval_profile(own) if own is not None else None

    def recompute(self, step: int) -> bool:
        """The interval profile's answer at `step`: this strategy's own `interval` if given, else the run's."""
        if self._profile is not None:
            return self._profile(step, self.task.iters)
        return self.task.recompute(step)

    # --- the step -------------------------------------------------------------------------------------------
    def select(self, step: int) -> Batch:
        if self._recompute_here(step):
            self._last = self.choose(step)
            return self._last
        return Batch(self._last.indices, self._last.weights, self._last.coords, self._last.targets)

    def choose(self, step: int) -> Batch:
        raise NotImplementedError

    def step_kind(self, step: int) -> str:
        """What `select(step)` will cost, asked before it runs (state unchanged): "reuse" (the previous batch,
        no selection work) or "select" here; strategies with costlier steps name them ("scoring", "ntk", "full").
        Timing profiles (benchmark/profiles.py) price each kind once and sum a run's steps by kind."""
        return "select" if self._recompute_here(step) else "reuse"

    def provides_full_pred(self, step: int) -> bool:
        """Will `select(step)` return `full_pred`? Lets the fit loop skip its own evaluation forward."""
        return False

    def loss(self, pred: torch.Tensor, target: torch.Tensor, batch: Batch, step: int) -> torch.Tensor:
        """Mean squared error over the batch (pixels × channels), weighted per sample if the batch says so."""
        err = (pred - target).pow(2)
        if batch.weights is None:
            return err.mean()
        return (err.mean(dim=1) * batch.weights).mean()

    def after_backward(self, batch: Batch, step: int) -> None:
        """Hook between backward and the optimiser step (gradients are available)."""

    # --- helpers --------------------------------------------------------------------------------------------
    def _recompute_here(self, step: int) -> bool:
        return not self.uses_profile or self._last is None or self.recompute(step)
