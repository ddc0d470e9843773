"""How much memory is available, and a lower bound of what a run needs: a run that cannot fit is refused in
one line before it starts, instead of ending in a CUDA out-of-memory error or the kernel's OOM killer.

The estimate counts only the largest tensors, so it is a lower bound and refuses only runs that cannot fit:
  device: the model's weights, gradients and Adam's two moments (4 × the weights' bytes); the training
          batch's activations, kept for the backward (batch × width × depth × 4 bytes); the no-grad forward of a
          full-image evaluation (a chunk or every pixel × width × 2 layers alive × 4 bytes); coordinates and
          targets (5 floats per pixel); four metric histories of T + 1 floats.
  host:   the metrics table of T + 1 rows (12 columns) and the loop's per-step arrays, 8 bytes each.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .errors import BenchError

HOST_BYTES_PER_ITERATION = 8 * (12 + 3)  # metrics table columns + sampled fraction, step times, cumulative
DEVICE_BYTES_PER_ITERATION = 4 * 4  # psnr, ssim, lpips and loss histories (float32)


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} PB"


def available_host_bytes() -> int | None:
    """Memory the kernel can still hand out (MemAvailable), else free physical pages; None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_device_bytes() -> tuple[int | None, str]:
    """(bytes, where) for the largest device a run may land on: a GPU when CUDA is available, else the host.
    A GPU's free memory needs a CUDA context on it, so it is read only where this process has one already;
    otherwise its total memory stands in (an upper bound: the refusal stays on the safe side), and this
    process leaves no context on a GPU that the runs' workers will use."""
    import torch

    if torch.cuda.is_available():
        sizes = []
        for i in range(torch.cuda.device_count()):
            try:
                sizes.append(torch.cuda.mem_get_info(i)[0] if torch.cuda.is_initialized()
                             else torch.cuda.get_device_properties(i).total_memory)
            except RuntimeError:
                continue
        if sizes:
            return max(sizes), "on the largest GPU"
    return available_host_bytes(), "on this machine"


def run_bytes(cfg: Any, n_pixels: int, weight_bytes: int, width: int, depth: int) -> tuple[int, int]:
    """(device, host) lower bounds in bytes of one run of `cfg` on an image of `n_pixels`."""
    batch = max(1, math.floor(cfg.mt_ratio * n_pixels))
    chunk = min(cfg.chunk_size or n_pixels, n_pixels)
    history = cfg.iters + 1
    device = (4 * weight_bytes + 4 * max(batch * width * depth, chunk * width * 2) + 20 * n_pixels
              + DEVICE_BYTES_PER_ITERATION * history)
    return device, HOST_BYTES_PER_ITERATION * history


def check_run_fits(cfg: Any, n_pixels: int, weight_bytes: int, width: int, depth: int,
                   device_have: tuple[int | None, str], host_have: int | None) -> None:
    """One-line BenchError when a run cannot fit; the message names the setting to lower."""
    device_need, host_need = run_bytes(cfg, n_pixels, weight_bytes, width, depth)
    if host_have is not None and host_need > host_have:
        raise BenchError(f"--iters {cfg.iters} needs at least {format_bytes(host_need)} of host memory for its "
                         f"per-iteration metrics, more than the {format_bytes(host_have)} available; lower --iters")
    have, where = device_have
    if have is not None and device_need > have:
        raise BenchError(f"a run of {cfg.model} (width {width}, depth {depth}) on {cfg.image} ({n_pixels} pixels, "
                         f"--iters {cfg.iters}) needs at least {format_bytes(device_need)}, more than the "
                         f"{format_bytes(have)} available {where}; lower --max-size, the model's width or depth, "
                         "--mt-ratio or --chunk-size")
