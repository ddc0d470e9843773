"""Strategy registry. Every module in this folder is imported, so a new strategy is one file:

    from strategies import register_strategy
    from strategies.base import Strategy, Batch

    @register_strategy("my-strategy")
    class MyStrategy(Strategy):
        defaults = {"knob": 1.0}
        def choose(self, step):
            return Batch(indices=self.task.randperm(self.task.n_pixels)[: self.task.budget(step)])
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from benchmark.errors import BenchError, check_declared, check_param_types, check_ranges
from benchmark.schedules import interval_profile

STRATEGIES: dict[str, type] = {}
_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {}


def register_strategy(name: str, *, aliases: dict[str, dict[str, Any]] | None = None):
    """Class decorator: register under `name`; `aliases` maps other names to fixed parameter overrides."""

    def wrap(cls):
        check_declared(f"strategy {name!r}", {**cls.defaults, **cls.optional}, cls.ranges)
        for key in [name, *(aliases or {})]:
            if key in STRATEGIES or key in _ALIASES:
                raise ValueError(f"strategy {key!r} is registered twice")
        cls.name = name
        STRATEGIES[name] = cls
        for alias, overrides in (aliases or {}).items():
            _ALIASES[alias] = (name, dict(overrides))
        return cls

    return wrap


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def list_strategies() -> list[str]:
    """Every registered name, aliases included, sorted."""
    return sorted([*STRATEGIES, *_ALIASES])


def resolve(name: str, params: dict[str, Any] | None = None) -> tuple[type, dict[str, Any]]:
    """(class, full parameter dict) for a name; unknown names or parameters raise a one-line BenchError."""
    params = dict(params or {})
    if name in _ALIASES:
        base, fixed = _ALIASES[name]
        cls = STRATEGIES[base]
        params = {**fixed, **params}
    elif name in STRATEGIES:
        cls = STRATEGIES[name]
    else:
        raise BenchError(f"unknown strategy {name!r}; choose from: {', '.join(list_strategies())}")
    if params.get("interval", "") is None:
        del params["interval"]  # None means the run's profile, same as not given
    if "interval" in params:
        if not getattr(cls, "uses_profile", True):
            raise BenchError(f"strategy {name!r} ignores the interval profile, so it takes no 'interval' parameter")
        interval_profile(params["interval"])
    optional = getattr(cls, "optional", {})
    for key, value in optional.items():  # at the value that reproduces stored runs: as if not given (same run id)
        if key in params and params[key] == value and not isinstance(params[key], bool):
            del params[key]
    unknown = set(params) - set(cls.defaults) - {"interval"} - set(optional)
    if unknown:
        raise BenchError(
            f"strategy {name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
            f"it takes: {', '.join(sorted([*cls.defaults, *optional, *(['interval'] if cls.uses_profile else [])])) or 'none'}"
        )
    check_param_types(f"strategy {name!r}", params, {**optional, **cls.defaults}, name + "[{key}={value}]")
    full = {**cls.defaults, **params}
    check_ranges(f"strategy {name!r}", full, cls.ranges, name + "[{key}={value}]", {**optional, **cls.defaults})
    if hasattr(cls, "validate"):
        try:
            cls.validate(full)
        except (TypeError, ValueError) as exc:
            raise BenchError(f"strategy {name!r}: a parameter has the wrong type or value ({exc}); "
                             f"write numbers as numbers, e.g. {name}[xi=0.5]") from None
    return cls, full


def describe(name: str) -> str:
    cls, params = resolve(name)
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


_load_all()
