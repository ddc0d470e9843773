"""INR models, registered by name. Each takes coordinates (n, 2) in [-1, 1] and returns RGB (n, 3).

A model factory declares its default learning rate, so presets can follow the papers' per-architecture lrs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .errors import BenchError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    defaults: dict[str, Any]
    lr: float
    doc: str


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, lr: float, **defaults: Any):
    """Register a model factory under ``name`` with its default keyword arguments and learning rate."""

    def wrap(fn: Callable[..., nn.Module]):
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = ModelSpec(name, fn, dict(defaults), lr, (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return wrap


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise BenchError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}") from None


def build_model(name: str, params: dict[str, Any] | None = None) -> nn.Module:
    spec = model_spec(name)
    params = dict(params or {})
    unknown = set(params) - set(spec.defaults)
    if unknown:
        raise BenchError(
            f"model {name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(sorted(spec.defaults)) or 'none'}"
        )
    return spec.build(**{**spec.defaults, **params})


class SineLayer(nn.Module):
    """sin(w0 · (W x + b)) with SIREN's initialisation (weights and biases, as in the INT/NINT code)."""

    def __init__(self, d_in: int, d_out: int, w0: float, first: bool, bias_init: str = "uniform"):
        super().__init__()
        self.w0 = w0
        self.linear = nn.Linear(d_in, d_out)
        bound = 1.0 / d_in if first else math.sqrt(6.0 / d_in) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)
            if bias_init == "uniform":
                self.linear.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * self.linear(x))


class Siren(nn.Module):
    """SIREN: `depth` sine layers of `width` units and a linear output layer."""

    def __init__(self, depth: int = 5, width: int = 256, w0: float = 30.0, w0_initial: float = 30.0,
                 bias_init: str = "uniform", in_features: int = 2, out_features: int = 3):
        super().__init__()
        if depth < 1 or width < 1:
            raise BenchError(f"SIREN needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        if bias_init not in ("uniform", "default"):
            raise BenchError(f"SIREN bias_init must be 'uniform' (INT/NINT) or 'default' (EVOS), got {bias_init!r}")
        layers = [SineLayer(in_features, width, w0_initial, True, bias_init)]
        layers += [SineLayer(width, width, w0, False, bias_init) for _ in range(depth - 1)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_features)
        bound = math.sqrt(6.0 / width) / w0
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)
            if bias_init == "uniform":
                self.head.bias.uniform_(-bound, bound)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(coords))


@register_model("siren", lr=1e-4, depth=5, width=256, w0=30.0, w0_initial=30.0, bias_init="uniform")
def _siren(**kw: Any) -> nn.Module:
    """SIREN as in NINT/INT (5 sine layers × 256 + linear, w0 30, weights and biases uniform)."""
    return Siren(**kw)


def count_parameters(model: nn.Module) -> int:
    """Real degrees of freedom of the trainable parameters (a complex entry counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters() if p.requires_grad)
