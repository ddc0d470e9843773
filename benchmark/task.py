"""The fitting task a strategy sees: image, coordinate grid, model, schedules and a seeded generator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import schedules


def coordinate_grid(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H·W, 2) coordinates in [-1, 1]², (row, col) order, row-major: pixel index = row·W + col."""
    ys = torch.linspace(-1.0, 1.0, height, device=device)
    xs = torch.linspace(-1.0, 1.0, width, device=device)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2)


@dataclass
class Task:
    """What every strategy may use. Built once per run by the fit loop."""

    model: nn.Module
    coords: torch.Tensor  # (N, 2)
    targets: torch.Tensor  # (N, 3) in [0, 1]
    image_uint8: np.ndarray  # (H, W, 3) the original 8-bit image, for edge detectors
    height: int
    width: int
    iters: int
    mt_ratio: float
    ratio_schedule: str
    interval: str
    generator: torch.Generator
    chunk_size: int = 0  # 0: one pass over all pixels; else chunks of this many pixels
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None  # e.g. the compiled model; default: model
    # --bf16-scoring: an approximate forward that strategies rank pixels by (None: rank by `predict`)
    score_predict: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.predict is None:
            self.predict = self.model
        self._ratio = schedules.ratio_schedule(self.ratio_schedule)
        self._profile = schedules.interval_profile(self.interval)

    @property
    def n_pixels(self) -> int:
        return self.height * self.width

    @property
    def device(self) -> torch.device:
        return self.coords.device

    def ratio(self, step: int) -> float:
        return self._ratio(step, self.iters, self.mt_ratio)

    def budget(self, step: int) -> int:
        return schedules.budget(self.ratio(step), self.n_pixels)

    def recompute(self, step: int) -> bool:
        """Does the interval profile ask for a fresh selection at this step?"""
        return self._profile(step, self.iters)

    def chunks(self):
        n = self.n_pixels
        size = self.chunk_size if self.chunk_size > 0 else n
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))

    def training_pairs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The (coordinates, targets) a strategy's `Batch` trains on: its own off-grid pairs, every pixel, or the
        pixels at its indices."""
        if batch.coords is not None:
            return batch.coords, batch.targets
        if batch.indices is None:
            return self.coords, self.targets
        return self.coords[batch.indices], self.targets[batch.indices]

    @torch.no_grad()
    def forward_full(self) -> torch.Tensor:
        """Prediction for every pixel under the current parameters, without autograd, chunked."""
        return self._every_pixel(self.predict)

    @property
    def exact_scoring(self) -> bool:
        """Is the scoring forward the model's own (so its prediction may also serve the metrics)?"""
        return self.score_predict is None

    @torch.no_grad()
    def forward_scoring(self) -> torch.Tensor:
        """The prediction of every pixel that a strategy ranks pixels by: `forward_full`, or under
        --bf16-scoring a cheaper approximate one, which is never used for metrics."""
        if self.exact_scoring:
            return self.forward_full()
        return self._every_pixel(self.score_predict)

    def _every_pixel(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`forward` over the coordinate grid, chunk by chunk, concatenated."""
        outs = [forward(self.coords[c]) for c in self.chunks()]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def precomputed_ntk(self, variant: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This step's NTK (score, prediction) when something already computed it (see benchmark/packed.py)."""
        return None

    def random_keys(self) -> torch.Tensor:
        """Uniform keys for every pixel: top-k of them is a uniform draw without replacement."""
        return torch.rand(self.n_pixels, generator=self.generator, device=self.device)

    def randperm(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator, device=self.device)
