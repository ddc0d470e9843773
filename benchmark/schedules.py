"""Ratio schedulers r(t) and interval profiles (when a strategy recomputes its selection).

Iterations are 0-based (t = 0 … T-1), as in INT and NINT. Formulas follow the INT and NINT releases.
"""
from __future__ import annotations

import math
from typing import Callable

from .errors import BenchError

RatioFn = Callable[[int, int, float], float]


def _constant(t: int, T: int, r0: float) -> float:
    return r0


def _linear(t: int, T: int, r0: float) -> float:
    return r0 + (t / T) * (1.0 - r0)


def _step(t: int, T: int, r0: float, stages: int = 10) -> float:
    stage = math.floor(t / (T / stages))
    return min(r0 + stage * (1.0 - r0) / stages, 1.0)


def _cosine(t: int, T: int, r0: float) -> float:
    return 1.0 - 0.5 * (1.0 - r0) * (1.0 + math.cos(math.pi * t / T))


def _reverse_cosine(t: int, T: int, r0: float, floor: float = 0.2) -> float:
    return r0 - 0.5 * (r0 - floor) * (1.0 - math.cos(math.pi * t / T))


RATIO_SCHEDULES: dict[str, RatioFn] = {
    "constant": _constant,
    "linear": _linear,
    "step": _step,
    "cosine": _cosine,
    "reverse-cosine": _reverse_cosine,
}


def _dense(t: int, T: int) -> bool:
    return True


def _dense2(t: int, T: int, k: int = 2) -> bool:
    return t % k == 0


def _dense5(t: int, T: int) -> bool:
    return t % 5 == 0


def incremental_interval(t: int, T: int) -> int:
    """INT's interval at step t: 1 in the dense start-up phase, then 10, 20, … 50 (as INT's release)."""
    start = int(0.25 * T)
    span = max((T - start) // 5, 1)
    if t < start or t // span == 0:
        return 1
    return 10 * (max(1, t - start) // span + 1)


def _incremental(t: int, T: int) -> bool:
    k = incremental_interval(t, T)
    return k == 1 or t % k == 0


def reverse_incremental_interval(t: int, T: int) -> int:
    """INT/EVOS's mirror: intervals 90, 80, … 10 in windows of T/10, dense in the last 10%."""
    span = max(T // 10, 1)
    m = 10 - t // span - 1
    return 1 if m <= 0 else 10 * m


def _reverse_incremental(t: int, T: int) -> bool:
    k = reverse_incremental_interval(t, T)
    return k == 1 or t % k == 0


def decremental_interval(t: int, T: int) -> int:
    """The NINT release's mirror of incremental: intervals 40, 30, 20, 10, then dense for the last 40% of T."""
    head = int(0.75 * T)
    if t >= head:
        return 1
    span = max(head // 5, 1)
    m = 5 - t // span - 1
    return 1 if m <= 0 else 10 * m


def _decremental(t: int, T: int) -> bool:
    k = decremental_interval(t, T)
    return k == 1 or t % k == 0


INTERVAL_PROFILES: dict[str, Callable[[int, int], bool]] = {
    "dense": _dense,
    "dense2": _dense2,
    "dense5": _dense5,
    "incremental": _incremental,
    "reverse-incremental": _reverse_incremental,
    "decremental": _decremental,
}


def ratio_schedule(name: str) -> RatioFn:
    try:
        return RATIO_SCHEDULES[name]
    except KeyError:
        raise BenchError(f"unknown ratio schedule {name!r}; choose one of {', '.join(RATIO_SCHEDULES)}") from None


def interval_profile(name: str) -> Callable[[int, int], bool]:
    try:
        return INTERVAL_PROFILES[name]
    except KeyError:
        raise BenchError(f"unknown interval profile {name!r}; choose one of {', '.join(INTERVAL_PROFILES)}") from None


def budget(ratio: float, n_pixels: int) -> int:
    """Pixels trained on: ⌊r·N⌋ as in all three reference codebases; r close to 1 means every pixel.
    At least one pixel, so a tiny image (⌊r·N⌋ = 0) still trains instead of taking the mean of nothing."""
    if math.isclose(ratio, 1.0):
        return n_pixels
    return max(1, min(n_pixels, int(ratio * n_pixels)))
