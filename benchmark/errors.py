"""User-facing errors: one line that says what is wrong and how to fix it; the parameter checks that raise them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class BenchError(Exception):
    """Bad input or environment. The CLI prints ``error: <message>`` and exits with status 2, no traceback."""


def check_param_types(owner: str, given: dict, defaults: dict, template: str) -> None:
    """A parameter whose default is a number (or true/false) must be given as one: names the first that is not.
    `template` shows the right form, e.g. "nint[{key}={value}]" (filled in with the default)."""
    for key, value in given.items():
        default = defaults.get(key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                example = template.format(key=key, value=str(default).lower())
                raise BenchError(f"{owner}: {key} must be true or false, got {value!r}; e.g. {example}")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                example = template.format(key=key, value=default)
                raise BenchError(f"{owner}: {key} must be a number, got {value!r}; e.g. {example}")


INT64_LIMIT = 2**62  # whole-number parameters stay far inside torch's int64 (sizes, draws, index arithmetic)


@dataclass(frozen=True)
class Range:
    """The values a numeric parameter may take: finite, above `low` and below `high` (strictly where open),
    whole when `integer` (3.0 counts as whole), None too when `optional` (a default of None means "derived").

    Declared next to a strategy's or model's defaults and checked by `check_ranges`, so NaN, ±inf and
    out-of-range values are refused before anything runs, in one line that names the parameter."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.integer and (value != int(value) or abs(value) >= INT64_LIMIT):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, name: str) -> str:
        if self.low is not None and self.high is not None:
            text = (f"{name} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            text = f"{name} {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            text = f"{name} {'<' if self.high_open else '<='} {self.high:g}"
        else:
            text = f"{name} finite"
        notes = [n for n, on in (("a whole number", self.integer), ("or none", self.optional)) if on]
        return text + (f" ({', '.join(notes)})" if notes else "")


def at_least(low: float, integer: bool = False) -> Range:
    return Range(low=low, integer=integer)


def above(low: float) -> Range:
    return Range(low=low, low_open=True)


def check_ranges(owner: str, params: dict, ranges: dict[str, Range], template: str, defaults: dict) -> None:
    """Every parameter with a declared range must lie in it: names the first that does not, with its default
    as the example (`template` as in check_param_types)."""
    for key, rng in ranges.items():
        if key in params and not rng.admits(params[key]):
            default = defaults.get(key)
            example = template.format(key=key, value="none" if default is None else default)
            raise BenchError(f"{owner} needs {rng.describe(key)}, got {key}={params[key]!r}; e.g. {example}")


def check_declared(owner: str, defaults: dict, ranges: dict[str, Range]) -> None:
    """At registration: every numeric (or None) default has a declared range, and every range a default.
    A programming error (ValueError), so a new parameter cannot skip the up-front checks."""
    numeric = {k for k, v in defaults.items()
               if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    missing, extra = sorted(numeric - set(ranges)), sorted(set(ranges) - set(defaults))
    if missing or extra:
        raise ValueError(f"{owner}: numeric parameter(s) without a range: {missing}; ranges without a "
                         f"parameter: {extra}")
