"""Paired comparisons of two strategies over the same images: the statistics behind every Δ of the report.

A comparison pairs the runs of two strategies on (image, seed), takes one difference per pair (a difference
for quality, a log-ratio for time and iterations), averages the seeds of an image, and treats the images as
the independent units: the strategy-to-strategy difference is measured on the same images, so image
difficulty, which both runs share, cancels out.

- Mean Δ with a 95% interval over images: Student's t interval (`scipy.stats.t.interval`) by default, or
  `scipy.stats.bootstrap(method="BCa")` on request, which falls back to the t interval (and says so) when
  it cannot be computed (fewer than 3 images' spread, all differences equal, or a degenerate jackknife).
  With fewer than 3 paired images no interval is given: two values say nothing about spread.
- Ratios (time, iterations) are geometric means of the per-image ratios; their interval is the interval of
  the mean log-ratio, exponentiated.
- Wins: images on which the strategy is better (ties are no win).
- p: two-sided Wilcoxon signed-rank test (`scipy.stats.wilcoxon`) of the per-image differences, Holm-corrected
  across the strategies of one table column (`holm`: scipy has Bonferroni–Holm only inside statsmodels,
  which is no dependency here; the step-down rule is a few lines).
- Targets never reached: `censored_median` is the median over all runs with "not reached" counted as later
  than every run that reached; when the median falls on such a run it is printed as "> T".
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
MIN_INTERVAL_N = 3  # fewer paired images: no interval
INTERVALS = ("t", "bca")


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of one strategy with a reference over n images."""

    mean: float  # mean difference, or geometric mean ratio (kind "ratio")
    lo: float  # interval bounds (NaN when n < MIN_INTERVAL_N)
    hi: float
    n: int  # paired images
    wins: int  # images where the strategy is better
    p: float  # Wilcoxon signed-rank p (NaN when it cannot be computed)
    kind: str = "diff"  # diff | ratio
    interval: str = "t"  # how [lo, hi] was computed: t | bca | "t (BCa not computable)" | none
    p_holm: float = math.nan  # p after Holm's correction across the rows of the table column
    digits: int = 2

    def with_holm(self, p_holm: float) -> "Comparison":
        return Comparison(self.mean, self.lo, self.hi, self.n, self.wins, self.p, self.kind, self.interval,
                          p_holm, self.digits)

    def number(self, value: float) -> str:
        if self.kind == "ratio":
            return f"{value:.2f}×"
        return f"{value:+.{self.digits}f}".replace("-", "−")

    def __str__(self) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "—"
        ci = f" [{self.number(self.lo)}, {self.number(self.hi)}]" if math.isfinite(self.lo) else f" (n = {self.n})"
        p = self.p_holm if math.isfinite(self.p_holm) else self.p
        ptext = f", p = {p:.2g}" if math.isfinite(p) else ""
        return f"{self.number(self.mean)}{ci}, {self.wins}/{self.n} better{ptext}"


def mean_interval(units: np.ndarray, interval: str = "t", level: float = LEVEL, seed: int = 0,
                  resamples: int = 2000) -> tuple[float, float, str]:
    """(lo, hi, method) of the mean of `units`; NaNs and method "none" below MIN_INTERVAL_N values."""
    units = np.asarray(units, dtype=float)
    n = units.size
    if n < MIN_INTERVAL_N:
        return math.nan, math.nan, "none"
    mean = float(units.mean())
    constant = np.ptp(units) <= 1e-12 * max(1.0, abs(mean))  # every image gave the same difference
    if interval == "bca":
        if not constant:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # scipy warns (and returns NaN) when BCa degenerates
                    res = stats.bootstrap((units,), np.mean, confidence_level=level, n_resamples=resamples,
                                          method="BCa", rng=np.random.default_rng(seed))
                lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
                if math.isfinite(lo) and math.isfinite(hi):
                    return lo, hi, "bca"
            except (Warning, ValueError):
                pass
        method = "t (BCa not computable)"
    else:
        method = "t"
    if constant:
        return mean, mean, method
    sem = float(stats.sem(units))
    lo, hi = stats.t.interval(level, n - 1, loc=mean, scale=sem)
    return float(lo), float(hi), method


def wilcoxon_p(units: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of the per-image differences; NaN when all are zero or none exist."""
    units = np.asarray(units, dtype=float)
    if units.size == 0 or not np.any(units != 0):
        return math.nan
    try:
        return float(stats.wilcoxon(units).pvalue)
    except ValueError:
        return math.nan


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaNs stay NaN and do not count as tests)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def paired_units(mine: pd.Series, reference: pd.Series, kind: str = "diff") -> pd.Series:
    """Per-image differences (or log-ratios) of two Series indexed by (image, seed): pairs where both values
    are finite (and positive for ratios), seeds averaged per image."""
    both = pd.concat({"a": mine.astype(float), "b": reference.astype(float)}, axis=1, join="inner")
    both = both[np.isfinite(both["a"]) & np.isfinite(both["b"])]
    if kind == "ratio":
        both = both[(both["a"] > 0) & (both["b"] > 0)]
        d = np.log(both["a"]) - np.log(both["b"])
    else:
        d = both["a"] - both["b"]
    if d.empty:
        return pd.Series(dtype=float)
    return d.groupby(level=0).mean()


def compare(mine: pd.Series, reference: pd.Series, kind: str = "diff", higher_is_better: bool = True,
            interval: str = "t", level: float = LEVEL, seed: int = 0, digits: int = 2) -> Comparison:
    """The paired comparison of `mine` with `reference` (both indexed by (image, seed))."""
    units = paired_units(mine, reference, kind).to_numpy()
    n = units.size
    if n == 0:
        return Comparison(math.nan, math.nan, math.nan, 0, 0, math.nan, kind, "none", digits=digits)
    mean = float(units.mean())
    lo, hi, method = mean_interval(units, interval, level, seed)
    wins = int(np.sum(units > 0) if higher_is_better else np.sum(units < 0))
    p = wilcoxon_p(units)
    if kind == "ratio":
        mean, lo, hi = math.exp(mean), math.exp(lo), math.exp(hi)
    return Comparison(mean, lo, hi, n, wins, p, kind, method, digits=digits)


def with_holm(column: Sequence[Comparison | None]) -> list[Comparison | None]:
    """The comparisons of one table column with their Holm-adjusted p-values filled in."""
    adjusted = holm([c.p if c is not None else math.nan for c in column])
    return [c.with_holm(a) if c is not None else None for c, a in zip(column, adjusted)]


@dataclass(frozen=True)
class CensoredMedian:
    """Median over runs of a time or iteration count to a target, "not reached" counted as later than any
    reached value; `bound` is the smallest budget of the runs that did not reach (the median exceeds it when
    `censored`)."""

    value: float
    censored: bool
    bound: float
    reached: int
    n: int
    digits: int = 2

    def __str__(self) -> str:
        if self.n == 0:
            return "—"
        if self.censored:
            return f">{self.bound:.{self.digits}f}"
        return f"{self.value:.{self.digits}f}"


def censored_median(values: Sequence[float], budgets: Sequence[float], digits: int = 2) -> CensoredMedian:
    """`values`: per run, the time (or iteration) of reaching the target, NaN if never; `budgets`: per run, how
    far it went (its train-seconds or iterations), which a run that never reached exceeds."""
    v = np.asarray(values, dtype=float)
    b = np.asarray(budgets, dtype=float)
    reached = np.isfinite(v)
    if v.size == 0:
        return CensoredMedian(math.nan, False, math.nan, 0, 0, digits)
    ordered = np.where(reached, v, math.inf)
    med = float(np.median(ordered))
    bound = float(np.min(b[~reached])) if (~reached).any() else math.nan
    censored = not math.isfinite(med)
    return CensoredMedian(med, censored, bound, int(reached.sum()), int(v.size), digits)
