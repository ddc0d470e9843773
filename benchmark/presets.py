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
    "nint-table-a": {
        "doc": "NINT Table A: every sampler at r=0.2 constant, dense, SIREN 5×256, Adam 1e-4, 5000 it",
        "settings": {"strategies": "standard,uniform,egra,int,evos,expansive,soft-mining,nint", "mt_ratio": 0.2,
                     "ratio_schedule": "constant", "interval": "dense", "lr": 1e-4, "lr_schedule": "constant",
                     "iters": 5000},
    },
    # EVOS runs INT with the incremental profile next to peers that select every step: `interval` is a
    # per-strategy override (Strategy base), so the global profile stays dense.
    "evos-table1": {
        "doc": "EVOS Table 1 (exp 001): DIV2K-16, SIREN 4×256 (default biases), r=0.5 constant, Adam 1e-4, 5000 it",
        "settings": {"suite": "div2k16", "model": "siren", "model_params": {"depth": 4, "bias_init": "default"},
                     "strategies": "standard,uniform,egra,expansive,soft-mining,int[interval=incremental],evos,"
                                   "evos-nocfs",
                     "mt_ratio": 0.5, "ratio_schedule": "constant", "interval": "dense", "lr": 1e-4,
                     "lr_schedule": "constant", "iters": 5000, "eval_every": 500},
    },
    "evos-table1-step": {
        "doc": "EVOS Table 1 (exp 002): as evos-table1 with the step ratio from 0.2; no full batch, no soft mining",
        "settings": {"suite": "div2k16", "model": "siren", "model_params": {"depth": 4, "bias_init": "default"},
                     "strategies": "uniform,egra,expansive,int[interval=incremental],evos,evos-nocfs",
                     "mt_ratio": 0.2, "ratio_schedule": "step", "interval": "dense", "lr": 1e-4,
                     "lr_schedule": "constant", "iters": 5000, "eval_every": 500},
    },
    "int-table1": {
        "doc": "INT Table 1 (default row): Kodak, SIREN 5×256, step ratio from 0.2 + incremental, Adam 1e-3 cosine",
        "settings": {"suite": "kodak", "strategies": "standard,int", "mt_ratio": 0.2, "ratio_schedule": "step",
                     "interval": "incremental", "lr": 1e-3, "lr_schedule": "cosine", "iters": 5000},
    },
    # A list of model_params is a grid of model variants (run_benchmark.py runs each and reports each).
    "nint-netsize": {
        "doc": "NINT Table C: standard vs nint on SIREN depth {3,4,5} × width {64,128,256}, r=0.2, 3000 it",
        "settings": {"strategies": "standard,nint", "model": "siren",
                     "model_params": [{"depth": d, "width": w} for d in (3, 4, 5) for w in (64, 128, 256)],
                     "mt_ratio": 0.2, "ratio_schedule": "constant", "interval": "dense", "lr": 1e-4,
                     "lr_schedule": "constant", "iters": 3000},
    },
    # No "lr": each model trains with its registered lr (EVOS's per-architecture values; INT's for FFN/MLP).
    "nint-arch": {
        "doc": "NINT Table D: standard vs nint on 7 architectures, each with its own lr, r=0.2 constant, 5000 it",
        "settings": {"strategies": "standard,nint", "model": "siren,ffn,wire,gauss,finer,pemlp,relu-mlp",
                     "mt_ratio": 0.2, "ratio_schedule": "constant", "interval": "dense",
                     "lr_schedule": "constant", "iters": 5000},
    },
    # One factor at a time around the defaults (xi 0.7, alpha 10, lam 1), not a full factorial grid.
    "nint-ablation": {
        "doc": "NINT hybrid ablation: xi, alpha, lam, top_k, decay, score one at a time + ntk/residual/random-only",
        "settings": {"strategies": "nint,nint[xi=0.3|0.5|0.6|0.8|0.9],nint[alpha=1|5|20|50],"
                                   "nint[lam=0|0.5|2],nint[top_k=false],nint[decay=released],nint[score=primal],"
                                   "ntk-only,residual-only,random-only",
                     "mt_ratio": 0.2, "ratio_schedule": "constant", "interval": "dense", "lr": 1e-4,
                     "lr_schedule": "constant", "iters": 5000},
    },
}


def get(name: str) -> dict[str, Any]:
    try:
        return PRESETS[name]
    except KeyError:
        raise BenchError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
