"""Named protocols from the papers (algorithms.md §5). Explicit CLI flags override a preset's settings."""
from __future__ import annotations

from typing import Any

from .errors import BenchError

PRESETS: dict[str, dict[str, Any]] = {
    "nint": {
        "doc": "NINT release defaults: SIREN 5×256, Adam 1e-4 constant, r=0.2 constant, dense, 5000 it",
        "settings": {"strategies": "nint", "mt_ratio": 0.2, "ratio_schedule": "constant", "interval": "dense",
                     "lr": 1e-4, "lr_schedule": "constant", "iters": 5000},
    },
}


def get(name: str) -> dict[str, Any]:
    try:
        return PRESETS[name]
    except KeyError:
        raise BenchError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
