"""Timing profiles: the exclusive cost of each kind of step, measured once per configuration, priced into the
train-seconds of runs that had no device of their own (packed members).

A strategy names the kind of every step before it takes it (`Strategy.step_kind`: "full", "select", "reuse",
"scoring", "ntk"). Within one configuration (GPU, image size, model, strategy and its parameters, ratio, flags)
a kind costs about the same every time it occurs, so one exclusive fit of PROFILE_STEPS steps gives the mean
milliseconds of each kind, and a packed run's time is the sum of its own sequence of kinds at those costs. The
mean, not the median: a run's time is a sum of steps, and step times are skewed to the slow side, so pricing at
the median came out 2.7–5.2 % short on average on an H200 (`python -m benchmark.bench_pricing`).

    <out>/profiles/<key>.json   {"key", "fields", "steps", "kinds": {kind: {"ms", "count"}}, ...}

written atomically, read by every later pack of that configuration (delete it to measure again).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig
from .errors import BenchError
from .fit import fit
from .store import atomic_write_text

PROFILE_STEPS = 200  # steps of the exclusive fit that prices each kind
SKIP_FIRST = 3  # a kind's first steps run on cold caches: left out when the kind has later samples
# What a step costs does not depend on which image, which seed, how long the run or how it is evaluated.
UNPRICED_FIELDS = ("image", "image_sha256", "seed", "suite", "iters", "eval_every", "psnr_every", "lpips")


def gpu_name(device: torch.device | str) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def profile_fields(cfg: RunConfig, height: int, width: int, device: torch.device | str) -> dict[str, Any]:
    fields = {k: v for k, v in cfg.to_dict().items() if k not in UNPRICED_FIELDS}
    return {**fields, "height": height, "width": width, "gpu_name": gpu_name(device), "torch": torch.__version__}


def profile_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def profile_path(root: str | Path, key: str) -> Path:
    return Path(root) / "profiles" / f"{key}.json"


def kind_costs(step_seconds: np.ndarray, kinds: list[str]) -> dict[str, dict[str, float]]:
    """Mean milliseconds of each kind over the steps of that kind (its first SKIP_FIRST left out when more
    follow): the mean times the count is the expected sum."""
    by_kind: dict[str, list[float]] = {}
    for seconds, kind in zip(step_seconds, kinds):
        by_kind.setdefault(kind, []).append(1000.0 * float(seconds))
    out = {}
    for kind, samples in by_kind.items():
        kept = samples[SKIP_FIRST:] if len(samples) > SKIP_FIRST else samples
        out[kind] = {"ms": statistics.fmean(kept), "count": len(samples)}
    return out


def measure_profile(cfg: RunConfig, image: np.ndarray, device: torch.device | str,
                    steps: int = PROFILE_STEPS) -> dict[str, Any]:
    """One exclusive fit of `steps` steps of `cfg` on `image`; the mean cost of each kind of its steps."""
    height, width = image.shape[:2]
    result = fit(dataclasses.replace(cfg, iters=steps, lpips=False), image, device)
    step_seconds = np.diff(result.metrics["train_seconds"].to_numpy())
    fields = profile_fields(cfg, height, width, device)
    return {"key": profile_key(fields), "fields": fields, "steps": steps, "image": cfg.image,
            "kinds": kind_costs(step_seconds, result.step_kinds or []),
            "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def profile_for(root: str | Path, cfg: RunConfig, image: np.ndarray, device: torch.device | str,
                kinds: set[str] | None = None) -> dict[str, Any]:
    """The stored profile of cfg's configuration, measured now (exclusively, on `image`) if absent or if it
    lacks one of `kinds`; a run's kinds that a short profile fit never took are priced by a full-length one."""
    height, width = image.shape[:2]
    path = profile_path(root, profile_key(profile_fields(cfg, height, width, device)))
    if path.exists():
        try:
            profile = json.loads(path.read_text())
        except (OSError, ValueError):
            raise BenchError(f"timing profile {path} is unreadable; delete it and rerun to measure it again") from None
        if not kinds or kinds <= set(profile["kinds"]):
            return profile
    profile = measure_profile(cfg, image, device, min(PROFILE_STEPS, cfg.iters))
    if kinds and not kinds <= set(profile["kinds"]) and cfg.iters > PROFILE_STEPS:
        profile = measure_profile(cfg, image, device, cfg.iters)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(profile, indent=1, sort_keys=True) + "\n", path)
    return profile


def step_ms(profile: dict[str, Any]) -> dict[str, float]:
    return {kind: cost["ms"] for kind, cost in profile["kinds"].items()}


def priced_seconds(kinds: list[str], profile: dict[str, Any]) -> np.ndarray:
    """Cumulative train-seconds after 0, 1, …, len(kinds) steps of these kinds at the profile's costs."""
    costs = step_ms(profile)
    missing = sorted(set(kinds) - set(costs))
    if missing:
        raise BenchError(f"timing profile {profile['key']} has no cost for step kind(s) {', '.join(missing)}; "
                         f"delete {profile['key']}.json under the results' profiles/ folder and rerun")
    return np.concatenate([[0.0], np.cumsum([costs[k] / 1000.0 for k in kinds])])
