"""Shared fixtures: tiny images and tiny tasks so every test runs on a CPU in seconds."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark.models import build_model  # noqa: E402
from benchmark.task import Task, coordinate_grid  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"


def tiny_image(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    """A smooth random RGB uint8 image (gradients + noise), so errors and edges are not degenerate."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], axis=-1)
    img = np.clip(base + 0.2 * rng.random((h, w, 3)), 0, 1)
    return (img * 255).astype(np.uint8)


def make_task(img: np.ndarray | None = None, *, depth: int = 2, width: int = 16, ratio: float = 0.25,
              iters: int = 50, schedule: str = "constant", interval: str = "dense", seed: int = 0,
              dtype=torch.float32, chunk_size: int = 0, device: str = "cpu") -> Task:
    img = tiny_image() if img is None else img
    h, w = img.shape[:2]
    torch.manual_seed(seed)
    model = build_model("siren", {"depth": depth, "width": width}).to(device, dtype)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    targets = torch.from_numpy(img.astype(np.float64) / 255.0).to(device, dtype).reshape(-1, 3)
    return Task(model, coordinate_grid(h, w, device).to(dtype), targets, img, h, w, iters, ratio, schedule,
                interval, gen, chunk_size)


@pytest.fixture
def task() -> Task:
    return make_task()
