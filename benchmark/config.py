"""One run's complete configuration, validated eagerly; its hash is the run id used for resume."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import schedules
from .errors import BenchError
from .models import model_spec

LR_SCHEDULES = ("constant", "cosine")
COMPILE_MODES = {"max-autotune": "max-autotune-no-cudagraphs", "cudagraphs": "max-autotune",  # ours -> torch's
                 "reduce-overhead": "reduce-overhead"}
# Fields that do not change what is computed, so they stay out of the run id.
NON_SEMANTIC = {"chunk_size", "suite"}
SEED_LIMIT = 2**63  # torch's generators take seeds below 2**64, the store's int64 column below 2**63
# Fields added after results were published: left out of the run id at their default, so those run ids stay.
OMITTED_AT_DEFAULT = {"psnr_every": 1, "bf16_scoring": False, "graph_steps": False}
LPIPS_NORMS = ("minmax", "fixed")
# LPIPS's input mapping before `lpips_norm` existed: runs that computed it so keep their ids without the field.
LPIPS_NORM_BEFORE = "fixed"


def semantic_config(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run's config that the run id hashes: what changes what is computed, with the fields
    added after results were published left out at their old behaviour (a config stored before a field existed
    and one holding its old value read alike)."""
    semantic = {k: v for k, v in config.items()
                if k not in NON_SEMANTIC and not (k in OMITTED_AT_DEFAULT and v == OMITTED_AT_DEFAULT[k])}
    if not semantic.get("lpips", True) or semantic.get("lpips_norm") == LPIPS_NORM_BEFORE:
        semantic.pop("lpips_norm", None)
    return semantic


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one fit of one image by one strategy. Frozen: never changed once built."""

    image: str  # image id (file stem)
    image_sha256: str  # content hash of the decoded RGB pixels, so a changed image is a new run
    strategy: str
    params: dict[str, Any] = field(default_factory=dict)  # strategy parameters, defaults filled in
    suite: str = "custom"
    mt_ratio: float = 0.2
    ratio_schedule: str = "constant"
    interval: str = "dense"
    model: str = "siren"
    model_params: dict[str, Any] = field(default_factory=dict)
    iters: int = 5000
    lr: float = 1e-4
    lr_schedule: str = "constant"
    seed: int = 0
    eval_every: int = 100  # SSIM/LPIPS period
    # PSNR period. Every iteration by default; a longer one skips the full-image forward that the PSNR of a
    # strategy without its own full forward costs (quality-vs-iteration grids). Rows in between store null.
    psnr_every: int = 1
    lpips: bool = False  # whether LPIPS is computed (backbone available and not disabled)
    # How LPIPS maps images to its [-1, 1] input: "minmax" normalises each image by its own minimum and maximum
    # (the NINT release), "fixed" maps [0, 1] linearly. Out of the run id when LPIPS is off, or "fixed".
    lpips_norm: str = "minmax"
    max_size: int = 0  # 0: native resolution; else the longest side is downscaled to this
    chunk_size: int = 0  # evaluation/scoring chunk in pixels; 0 = one pass
    # torch.compile the model: False, True (inductor's default mode: fused elementwise kernels), "max-autotune"
    # (also benchmarks GEMM kernels, some with the sine fused in; minutes of one-off autotuning), "cudagraphs"
    # (max-autotune, its forward and backward replayed as CUDA graphs: fewer kernel launches) or "reduce-overhead"
    # (those CUDA graphs without the autotuning: seconds to compile). Rounding may differ slightly. A bool or a
    # string so that run ids of existing results (false/true) stay as they were.
    compile: bool | str = False
    tf32: bool = False  # allow TF32 matrix products on the GPU (changes numerics: opt-in)
    # INT and NINT rank pixels by a forward with bf16 matrix products (SIREN only; changes which pixels are
    # picked: opt-in). Metrics always come from a float32 forward.
    bf16_scoring: bool = False
    # Replay each step after its selection as one CUDA graph (benchmark/step_graphs.py): a GPU, a constant ratio
    # and a constant lr; Adam is then built capturable.
    graph_steps: bool = False

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def run_id(self) -> str:
        blob = json.dumps(semantic_config(self.to_dict()), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Canonical name: strategy[k=v,...] with the non-default parameters, sorted."""
        from strategies import resolve

        cls, defaults = resolve(self.strategy)
        diff = {k: v for k, v in sorted(self.params.items()) if defaults.get(k) != v}
        return self.strategy + ("[" + ",".join(f"{k}={v}" for k, v in diff.items()) + "]" if diff else "")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{name} must be a whole number >= 1, got {value!r}")


def validate(cfg: RunConfig) -> None:
    r = cfg.mt_ratio
    if not isinstance(r, (int, float)) or isinstance(r, bool) or not math.isfinite(r) or not 0.0 < r <= 1.0:
        raise BenchError(f"mt_ratio must be in (0, 1], got {r!r}; e.g. --mt-ratio 0.2 samples 20% of the pixels")
    _positive_int("iters", cfg.iters)
    _positive_int("eval_every", cfg.eval_every)
    _positive_int("psnr_every", cfg.psnr_every)
    if not isinstance(cfg.lr, (int, float)) or not math.isfinite(cfg.lr) or cfg.lr <= 0:
        raise BenchError(f"lr must be a positive number, got {cfg.lr!r}; e.g. --lr 1e-4")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise BenchError(f"unknown lr schedule {cfg.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise BenchError(f"seed must be a whole number >= 0, got {cfg.seed!r}")
    if cfg.seed >= SEED_LIMIT:
        raise BenchError(f"seed must be below 2**63 = {SEED_LIMIT} (the store keeps seeds as 64-bit integers), "
                         f"got {cfg.seed}")
    for name in ("max_size", "chunk_size"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BenchError(f"{name} must be a whole number >= 0 (0 means off), got {value!r}")
    if not (isinstance(cfg.compile, bool) or cfg.compile in COMPILE_MODES):
        raise BenchError(f"compile must be false, true, {', '.join(repr(m) for m in COMPILE_MODES)}, got "
                         f"{cfg.compile!r}; e.g. --compile or --compile max-autotune")
    if cfg.lpips_norm not in LPIPS_NORMS:
        raise BenchError(f"lpips_norm must be one of {', '.join(LPIPS_NORMS)}, got {cfg.lpips_norm!r}; e.g. "
                         "--lpips-norm minmax")
    if not isinstance(cfg.bf16_scoring, bool):
        raise BenchError(f"bf16_scoring must be true or false, got {cfg.bf16_scoring!r}")
    if cfg.bf16_scoring and cfg.model != "siren":
        raise BenchError(f"--bf16-scoring is implemented for the siren model only, got model {cfg.model!r}; "
                         "drop --bf16-scoring for this model")
    if not isinstance(cfg.graph_steps, bool):
        raise BenchError(f"graph_steps must be true or false, got {cfg.graph_steps!r}")
    if cfg.graph_steps and (cfg.ratio_schedule != "constant" or cfg.lr_schedule != "constant"):
        raise BenchError("--graph-steps needs a constant ratio and a constant lr (a captured step keeps its batch "
                         f"size and lr), got --ratio-schedule {cfg.ratio_schedule} --lr-schedule {cfg.lr_schedule}")
    if cfg.graph_steps and cfg.compile in ("cudagraphs", "reduce-overhead"):
        raise BenchError(f"--graph-steps cannot be combined with --compile {cfg.compile} (torch's own CUDA graphs "
                         "break the step's capture); use --graph-steps with --compile or --compile max-autotune")
    schedules.ratio_schedule(cfg.ratio_schedule)
    schedules.interval_profile(cfg.interval)
    model_spec(cfg.model)
    from strategies import resolve

    resolve(cfg.strategy, cfg.params)


def config_fields() -> list[str]:
    return [f.name for f in fields(RunConfig)]
