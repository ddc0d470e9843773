"""benchmark.paired: paired differences and ratios with their intervals, wins and p-values, Holm's correction
and the censoring-aware median, against scipy computed directly on the same numbers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark import paired


def series(values, images=None, seeds=None):
    images = images or [f"img{i:02d}" for i in range(len(values))]  # sorted as given
    seeds = seeds or [0] * len(values)
    return pd.Series(values, index=pd.MultiIndex.from_arrays([images, seeds], names=["image", "seed"]), dtype=float)


def test_paired_difference_matches_scipy():
    base = np.array([30.0, 25.0, 33.0, 28.0, 31.0])
    diff = np.array([0.5, 1.5, -0.2, 0.9, 0.3])
    c = paired.compare(series(base + diff), series(base))
    assert c.mean == pytest.approx(diff.mean()) and c.n == 5 and c.wins == 4 and c.interval == "t"
    lo, hi = stats.t.interval(0.95, 4, loc=diff.mean(), scale=stats.sem(diff))
    assert (c.lo, c.hi) == pytest.approx((lo, hi))
    assert c.p == pytest.approx(stats.wilcoxon(diff).pvalue)
    # the image difficulty (base) cancels: the same differences on other images give the same comparison
    other = paired.compare(series(base * 0.5 + diff), series(base * 0.5))
    assert (other.mean, other.lo, other.hi, other.p) == pytest.approx((c.mean, c.lo, c.hi, c.p))


def test_seeds_are_averaged_per_image_and_unpaired_runs_dropped():
    mine = series([31.0, 33.0, 27.0, 29.0], ["a", "a", "b", "b"], [0, 1, 0, 1])
    base = series([30.0, 30.0, 28.0, 99.0], ["a", "a", "b", "c"], [0, 1, 0, 0])  # b seed 1 and c are unpaired
    units = paired.paired_units(mine, base)
    assert units.to_dict() == {"a": pytest.approx(2.0), "b": pytest.approx(-1.0)}
    c = paired.compare(mine, base)
    assert c.n == 2 and c.wins == 1 and math.isnan(c.lo) and c.interval == "none"
    assert str(c) == "+0.50 (n = 2), 1/2 better, p = 1"  # no interval below 3 images


def test_ratios_are_geometric_means_with_the_interval_of_the_log_ratio():
    base = np.array([10.0, 20.0, 40.0, 5.0])
    ratio = np.array([0.5, 0.8, 0.6, 0.7])
    c = paired.compare(series(base * ratio), series(base), kind="ratio", higher_is_better=False)
    logs = np.log(ratio)
    assert c.mean == pytest.approx(stats.gmean(ratio)) and c.wins == 4
    lo, hi = stats.t.interval(0.95, 3, loc=logs.mean(), scale=stats.sem(logs))
    assert (c.lo, c.hi) == pytest.approx((math.exp(lo), math.exp(hi)))
    assert c.p == pytest.approx(stats.wilcoxon(logs).pvalue)
    assert str(c).startswith(f"{stats.gmean(ratio):.2f}× [")


def test_bca_interval_and_its_fallback():
    rng = np.random.default_rng(3)
    diff = rng.normal(1.0, 0.5, size=12)
    base = rng.normal(30.0, 3.0, size=12)
    c = paired.compare(series(base + diff), series(base), interval="bca", seed=7)
    ref = stats.bootstrap((diff,), np.mean, method="BCa", n_resamples=2000, rng=np.random.default_rng(7))
    assert c.interval == "bca"
    assert (c.lo, c.hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-6)
    same = paired.compare(series(base + 1.0), series(base), interval="bca")  # all differences equal: no BCa
    assert same.interval == "t (BCa not computable)" and same.lo == same.hi == pytest.approx(1.0)
    assert same.p == pytest.approx(2 / 2**12)  # every one of the 12 images better: the exact signed-rank p
    zero = paired.compare(series(base), series(base))
    assert math.isnan(zero.p) and zero.wins == 0


def test_holm_step_down():
    p = [0.01, 0.04, 0.03, math.nan, 0.5]
    # sorted: 0.01 (×4) 0.03 (×3) 0.04 (×2) 0.5 (×1), each at least the one before
    assert paired.holm(p)[:3] == pytest.approx([0.04, 0.09, 0.09])
    assert math.isnan(paired.holm(p)[3]) and paired.holm(p)[4] == pytest.approx(0.5)
    assert paired.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_censored_median():
    reached = paired.censored_median([100.0, 200.0, math.nan], [1000, 1000, 1000], digits=0)
    assert (reached.value, reached.censored, reached.reached, reached.n) == (200.0, False, 2, 3) and str(reached) == "200"
    censored = paired.censored_median([100.0, math.nan, math.nan], [1000, 800, 900], digits=0)
    assert censored.censored and str(censored) == ">800"  # the median run never reached it within 800
    even = paired.censored_median([100.0, math.nan], [500, 500], digits=0)
    assert even.censored and str(even) == ">500"  # half the runs never reached: the median is not known
    assert str(paired.censored_median([], [])) == "—"
