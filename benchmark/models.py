"""INR models, registered by name. Each takes coordinates (n, 2) in [-1, 1] and returns RGB (n, 3).

A model factory declares its default learning rate, so presets can follow the papers' per-architecture lrs, and
the allowed values of its numeric parameters (`ranges`), checked with the parameters' types before it is built.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .errors import BenchError, Range, above, at_least, check_declared, check_param_types, check_ranges
from .memory import available_host_bytes, format_bytes


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    defaults: dict[str, Any]
    lr: float
    doc: str
    ranges: dict[str, Range]


MODELS: dict[str, ModelSpec] = {}


# Layers beyond this are no INR (the papers use 2-8), and building a deeper model to measure it takes minutes.
MAX_DEPTH = 1000
DEPTH = Range(1, MAX_DEPTH, integer=True)
WIDTH = at_least(1, integer=True)


def register_model(name: str, lr: float, ranges: dict[str, Range], **defaults: Any):
    """Register a model factory under ``name`` with its default keyword arguments, learning rate and the
    ranges of its numeric parameters (every numeric default needs one)."""

    def wrap(fn: Callable[..., nn.Module]):
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        check_declared(f"model {name!r}", defaults, ranges)
        MODELS[name] = ModelSpec(name, fn, dict(defaults), lr, (fn.__doc__ or "").strip().splitlines()[0],
                                 dict(ranges))
        return fn

    return wrap


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise BenchError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}") from None


def build_model(name: str, params: dict[str, Any] | None = None) -> nn.Module:
    spec, full = resolve_model(name, params)
    check_model_memory(name, spec, full)
    return spec.build(**full)


def weight_bytes(name: str, params: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """(bytes of the weights, full parameters) of a model, checked like build_model, without building it."""
    spec, full = resolve_model(name, params)
    return meta_bytes(spec, full), full


def resolve_model(name: str, params: dict[str, Any] | None = None) -> tuple[ModelSpec, dict[str, Any]]:
    """(spec, full keyword arguments) with every parameter checked: names, types, ranges (one-line errors).
    Whole numbers given as floats (depth=3.0) are passed on as ints."""
    spec = model_spec(name)
    params = dict(params or {})
    unknown = set(params) - set(spec.defaults)
    if unknown:
        raise BenchError(
            f"model {name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(sorted(spec.defaults)) or 'none'}"
        )
    check_param_types(f"model {name!r}", params, spec.defaults, "--model-param {key}={value}")
    full = {**spec.defaults, **params}
    check_ranges(f"model {name!r}", full, spec.ranges, "--model-param {key}={value}", spec.defaults)
    return spec, {k: int(v) if spec.ranges.get(k, Range()).integer and v is not None else v for k, v in full.items()}


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def meta_bytes(spec: ModelSpec, params: dict[str, Any]) -> int:
    """Bytes of the model's weights, from a build on torch's meta device (shapes only: no memory, no draws
    from the random generators, so the real build that follows initialises exactly as without it)."""
    with torch.device("meta"):
        return model_bytes(spec.build(**params))


def check_model_memory(name: str, spec: ModelSpec, params: dict[str, Any]) -> None:
    """Refuse a model in one line if its weights alone exceed the memory available here, where it is built,
    instead of meeting the OOM killer."""
    need = meta_bytes(spec, params)
    have = available_host_bytes()
    if have is not None and need > have:
        given = ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if spec.defaults.get(k) != v)
        raise BenchError(f"model {name!r} ({given or 'defaults'}) holds {format_bytes(need)} of weights, more than "
                         f"the {format_bytes(have)} of memory available; lower its width or depth (--model-param)")


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

    def forward_bf16(self, coords: torch.Tensor) -> torch.Tensor:
        """An approximate forward for ranking pixels (--bf16-scoring): the hidden layers' matrix products in
        bfloat16, the first and the output layer in float32. bf16 has 8 significant bits: in the first layer
        the coordinates of neighbouring pixels (2/767 apart on a Kodak image) would round to one value, and a
        bf16 output would be coarser (2⁻⁹ near 0.5) than the residuals that INT and NINT rank late in a fit."""
        h = self.body[0](coords)
        with torch.autocast(coords.device.type, dtype=torch.bfloat16):
            h = self.body[1:](h)
        return self.head(h.float())


@register_model("siren", lr=1e-4, ranges={"depth": DEPTH, "width": WIDTH, "w0": above(0.0), "w0_initial": above(0.0)},
                depth=5, width=256, w0=30.0, w0_initial=30.0, bias_init="uniform")
def _siren(**kw: Any) -> nn.Module:
    """SIREN as in NINT/INT (5 sine layers × 256 + linear, w0 30, weights and biases uniform)."""
    return Siren(**kw)


def count_parameters(model: nn.Module) -> int:
    """Real degrees of freedom of the trainable parameters (a complex entry counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters() if p.requires_grad)


# --- other architectures, as in the EVOS and INT code; parameter counts are for the defaults, 2 inputs and 3 outputs ---------
def _relu_mlp(d_in: int, depth: int, width: int, d_out: int) -> nn.Sequential:
    """`depth` ReLU layers of `width` units and a linear output, PyTorch's default initialisation."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, d_out))


class FourierFeatureMLP(nn.Module):
    """Random Fourier features [sin 2πxB, cos 2πxB], B ~ N(0, σ²) fixed (a buffer, not trained), + ReLU MLP."""

    def __init__(self, depth: int = 2, width: int = 256, n_freqs: int = 128, sigma: float = 10.0,
                 in_features: int = 2, out_features: int = 3):
        super().__init__()
        self.register_buffer("B", torch.randn(in_features, n_freqs) * sigma)
        self.mlp = _relu_mlp(2 * n_freqs, depth, width, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        proj = 2.0 * math.pi * coords @ self.B
        return self.mlp(torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1))


@register_model("ffn", lr=1e-3, ranges={"depth": DEPTH, "width": WIDTH, "n_freqs": at_least(1, integer=True),
                                       "sigma": above(0.0)}, depth=2, width=256, n_freqs=128, sigma=10.0)
def _ffn(**kw: Any) -> nn.Module:
    """FFN (INT): 128 random Fourier features, σ 10, + 2 ReLU layers × 256 + linear (132,355 params)."""
    return FourierFeatureMLP(**kw)


class GaborLayer(nn.Module):
    """WIRE's complex Gabor wavelet exp(i·ω₀·z − |s₀·z|²) after a (real or complex) linear map.
    ω₀ and s₀ are plain floats, so they are neither trained nor in the NTK's parameter dict."""

    def __init__(self, d_in: int, d_out: int, omega0: float, s0: float, complex_weights: bool):
        super().__init__()
        self.omega0, self.s0 = omega0, s0
        self.linear = nn.Linear(d_in, d_out, dtype=torch.cfloat if complex_weights else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        sq = z.real.square() + z.imag.square() if z.is_complex() else z.square()  # |z|², smooth at 0
        return torch.exp(1j * self.omega0 * z - (self.s0 * self.s0) * sq)


class Wire(nn.Module):
    """WIRE: `depth` Gabor layers of int(width/√2) units (the first one real, the rest complex) and a complex
    linear output whose real part is the colour."""

    def __init__(self, depth: int = 4, width: int = 256, omega0: float = 30.0, s0: float = 30.0,
                 in_features: int = 2, out_features: int = 3):
        super().__init__()
        hidden = int(width / math.sqrt(2))
        layers = [GaborLayer(in_features, hidden, omega0, s0, complex_weights=False)]
        layers += [GaborLayer(hidden, hidden, omega0, s0, complex_weights=True) for _ in range(depth - 1)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, out_features, dtype=torch.cfloat)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(coords)).real


# width 2 is the narrowest with a hidden unit (int(width/√2)); without the Gaussian window (s0 = 0) the complex
# layers' exp(iω₀z) grows with Im z from layer to layer until it overflows
@register_model("wire", lr=5e-3, ranges={"depth": DEPTH, "width": at_least(2, integer=True), "omega0": above(0.0),
                                        "s0": above(0.0)}, depth=4, width=256, omega0=30.0, s0=30.0)
def _wire(**kw: Any) -> nn.Module:
    """WIRE (EVOS variant): 4 complex Gabor layers × 181, ω₀ = s₀ = 30 (199,287 real degrees of freedom)."""
    return Wire(**kw)


class GaussLayer(nn.Module):
    """exp(−(s·z)²) after a linear map (PyTorch's default initialisation)."""

    def __init__(self, d_in: int, d_out: int, scale: float):
        super().__init__()
        self.scale = scale
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(self.scale * self.linear(x)).square())


class Gauss(nn.Module):
    """`depth` Gaussian-activation layers of `width` units and a linear output."""

    def __init__(self, depth: int = 4, width: int = 256, scale: float = 30.0, in_features: int = 2,
                 out_features: int = 3):
        super().__init__()
        layers = [GaussLayer(in_features if i == 0 else width, width, scale) for i in range(depth)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(coords))


@register_model("gauss", lr=5e-3, ranges={"depth": DEPTH, "width": WIDTH, "scale": above(0.0)},
                depth=4, width=256, scale=30.0)
def _gauss(**kw: Any) -> nn.Module:
    """GAUSS (EVOS): 4 layers exp(−(30·z)²) × 256 + linear (198,915 params)."""
    return Gauss(**kw)


class FinerLayer(SineLayer):
    """sin(w0·(|z| + 1)·z): the scale is detached, so backward (training) and forward-mode (the NTK's JVP)
    both hold it constant, as FINER's no-grad scale does in training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return torch.sin(self.w0 * (z.abs() + 1.0).detach() * z)


class Finer(nn.Module):
    """FINER: SIREN's layout and weight initialisation (EVOS: biases keep PyTorch's default)."""

    def __init__(self, depth: int = 4, width: int = 256, w0: float = 30.0, w0_initial: float = 30.0,
                 first_bias_scale: float | None = None, in_features: int = 2, out_features: int = 3):
        super().__init__()
        layers = [FinerLayer(in_features, width, w0_initial, True, "default")]
        layers += [FinerLayer(width, width, w0, False, "default") for _ in range(depth - 1)]
        if first_bias_scale is not None:
            with torch.no_grad():
                layers[0].linear.bias.uniform_(-first_bias_scale, first_bias_scale)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_features)
        bound = math.sqrt(6.0 / width) / w0
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(coords))


@register_model("finer", lr=5e-4, ranges={"depth": DEPTH, "width": WIDTH, "w0": above(0.0), "w0_initial": above(0.0),
                                         "first_bias_scale": Range(low=0.0, optional=True)},
                depth=4, width=256, w0=30.0, w0_initial=30.0, first_bias_scale=None)
def _finer(**kw: Any) -> nn.Module:
    """FINER (EVOS): 4 layers sin(30·(|z|+1)·z) × 256 + linear, SIREN weight init (198,915 params)."""
    return Finer(**kw)


class PositionalEncodingMLP(nn.Module):
    """NeRF-style encoding [x, sin(2^k x), cos(2^k x)] for k < n_freqs (no π, input included) + ReLU MLP."""

    def __init__(self, depth: int = 4, width: int = 256, n_freqs: int = 10, in_features: int = 2,
                 out_features: int = 3):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs, dtype=torch.float32), persistent=False)
        self.mlp = _relu_mlp(in_features * (2 * n_freqs + 1), depth, width, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        parts = [coords]
        for f in self.freqs:
            parts += [torch.sin(f * coords), torch.cos(f * coords)]
        return self.mlp(torch.cat(parts, dim=-1))


# 2^k overflows float32 past k = 127; 64 octaves are far beyond any image's resolution already
@register_model("pemlp", lr=1e-3, ranges={"depth": DEPTH, "width": WIDTH, "n_freqs": Range(0, 64, integer=True)},
                depth=4, width=256, n_freqs=10)
def _pemlp(**kw: Any) -> nn.Module:
    """PE-MLP (EVOS): 10-frequency positional encoding (42 dims) + 4 ReLU layers × 256 + linear (209,155)."""
    return PositionalEncodingMLP(**kw)


@register_model("relu-mlp", lr=1e-3, ranges={"depth": DEPTH, "width": WIDTH}, depth=4, width=256)
def _relu(depth: int, width: int) -> nn.Module:
    """ReLU MLP (INT): 4 ReLU layers × 256 + linear (198,915 params)."""
    return _relu_mlp(2, depth, width, 3)
