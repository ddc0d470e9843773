"""bench_pricing: a profile's mean step cost prices a run's time, its median would not when steps are skewed;
the strategies it checks really take one kind of step; it runs on a real (tiny) store."""
from __future__ import annotations

import json

import numpy as np
import pytest

import run_benchmark
from benchmark import bench_pricing
from benchmark.fit import fit
from test_core import config

TINY = ["--suite", "builtin", "--images", "astronaut", "--max-size", "16", "--model-param", "depth=2",
        "--model-param", "width=8", "--no-progress", "--no-lpips"]


def test_mean_pricing_is_exact_for_a_stationary_skewed_step_and_the_median_is_short():
    # every 10th step is four times slower: the mean prices the sum, the median (1 of 1.3 ms) misses 23 %
    steps = np.tile([0.001] * 9 + [0.004], 100)
    psnr = np.concatenate([np.linspace(10, 29, 600), np.full(401, 31.0)])
    out = bench_pricing.price_run(steps, psnr, 30.0, 200)
    assert out["reached"] and out["iteration"] == 600
    assert out["mean_error"] == pytest.approx(0.0, abs=0.01)
    assert out["median_error"] == pytest.approx(1 / 1.3 - 1, abs=0.01)
    never = bench_pricing.price_run(steps, np.full(1001, 20.0), 30.0, 200)
    assert not never["reached"] and never["iteration"] == 1000


@pytest.mark.parametrize("name", bench_pricing.SINGLE_KIND)
def test_the_checked_strategies_take_one_kind_of_step(name):
    from conftest import tiny_image

    kinds = fit(config(strategy=name, iters=12), tiny_image()).step_kinds
    assert len(kinds) == 12 and len(set(kinds)) == 1


def test_it_reads_a_store_and_writes_its_json(tmp_path, capsys):
    store = tmp_path / "store"
    argv = TINY + ["--strategies", "uniform,standard,int", "--iters", "12", "--out", str(store)]
    assert run_benchmark.main(argv) == 0
    assert bench_pricing.main(["--results", str(store), "--steps", "6", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "pricing-store.json").read_text())
    assert sorted(r["strategy"] for r in report["summary"]) == ["standard", "uniform"]  # int has two kinds
    assert all(r["measured_s"] > 0 and r["mean_error"] is not None for r in report["runs"])
    assert "uniform" in capsys.readouterr().out
    assert bench_pricing.main(["--results", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: --results")
