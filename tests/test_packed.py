"""--pack: packed members train exactly as their unpacked runs do (CPU), keep their run ids, and are timed from
exclusive step profiles."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import strategies
from benchmark.errors import BenchError
from benchmark.fit import fit
from benchmark.packed import check_pack, fit_packed, packable
from conftest import tiny_image
from test_core import config

COVERED = ["standard", "uniform", "int", "nint", "nint-released", "ntk-only", "egra", "expansive"]


def members(name: str, k: int = 3, iters: int = 6, params: list[dict] | None = None, **kw):
    """k runs of one strategy on k different images of one size, with different seeds (and parameters)."""
    images = [tiny_image(10, 12, seed=s) for s in range(k)]
    cfgs = []
    for s in range(k):
        _, full = strategies.resolve(name, (params or [{}] * k)[s])
        cfgs.append(dataclasses.replace(config(strategy=name, iters=iters, **kw), image=f"im{s}", seed=s + 3,
                                        params=full))
    return cfgs, images


def assert_same_rows(packed, unpacked, label):
    for column in ("psnr", "loss", "ssim", "sampled_fraction"):
        np.testing.assert_allclose(packed[column], unpacked[column], rtol=0, atol=1e-6, err_msg=f"{label} {column}")
    assert list(packed["run_id"].unique()) == list(unpacked["run_id"].unique())


@pytest.mark.parametrize("name", COVERED)
def test_a_pack_of_three_trains_each_member_as_its_unpacked_run(name):
    cfgs, images = members(name)
    pack = fit_packed(cfgs, images)
    for cfg, img, result in zip(cfgs, images, pack.results):
        alone = fit(cfg, img)
        assert_same_rows(result.metrics, alone.metrics, name)
        assert result.step_kinds == alone.step_kinds  # the kinds the profile prices are the exclusive ones
        assert result.status == alone.status == "ok"


def test_members_may_differ_in_strategy_parameters_and_refresh_at_their_own_steps():
    cfgs, images = members("nint", params=[{"alpha": 2}, {"alpha": 3, "xi": 0.5}, {"score": "primal"}], iters=7)
    pack = fit_packed(cfgs, images)
    assert [kinds.count("ntk") for kinds in pack.step_kinds] == [4, 3, 1]  # u = 1, 2, 4, 6 / 1, 3, 6 / 1
    for cfg, img, result in zip(cfgs, images, pack.results):
        assert_same_rows(result.metrics, fit(cfg, img).metrics, cfg.label)


def test_stacked_adam_is_k_independent_adams():
    """Adam is elementwise: one Adam over (K, ...) parameters updates each slice as that member's own Adam."""
    torch.manual_seed(0)
    shapes = [(4, 3), (3,)]
    stacked = [torch.randn(3, *s, requires_grad=True) for s in shapes]
    separate = [[p[k].detach().clone().requires_grad_() for p in stacked] for k in range(3)]
    big = torch.optim.Adam(stacked, lr=1e-2)
    small = [torch.optim.Adam(ps, lr=1e-2) for ps in separate]
    for _ in range(5):
        grads = [torch.randn(3, *s) for s in shapes]
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        for k, ps in enumerate(separate):
            for p, g in zip(ps, grads):
                p.grad = g[k].clone()
        big.step()
        for opt in small:
            opt.step()
    for k, ps in enumerate(separate):
        for p, q in zip(stacked, ps):
            assert torch.equal(p[k], q)


def test_what_cannot_be_packed_is_refused_with_one_line():
    assert packable(config(strategy="nint")) and packable(config(strategy="residual-only"))
    assert not packable(config(strategy="soft-mining")) and not packable(config(strategy="evos"))
    assert not packable(config(strategy="uniform", ratio_schedule="linear"))
    assert not packable(config(strategy="uniform", compile=True))
    cfgs, images = members("uniform", k=2)
    with pytest.raises(BenchError, match="^a pack holds images of one size"):
        check_pack(cfgs, [images[0], tiny_image(8, 8)])
    with pytest.raises(BenchError, match="^a pack's runs may differ only in image, seed and strategy parameters"):
        check_pack([cfgs[0], dataclasses.replace(cfgs[1], lr=1e-3)], images)
    with pytest.raises(BenchError, match=r"^soft-mining with these flags cannot train in a pack"):
        check_pack([config(strategy="soft-mining")] * 2, images)


def test_profile_time_is_the_sum_of_the_kinds_costs(tmp_path):
    from benchmark.packed import price
    from benchmark.profiles import kind_costs, priced_seconds, profile_for, profile_path

    costs = kind_costs(np.array([0.5, 0.003, 0.002, 0.004, 0.010, 0.002, 0.002]),
                       ["ntk", "scoring", "scoring", "scoring", "ntk", "scoring", "scoring"])
    assert costs == {"ntk": {"ms": 250.0 + 5.0, "count": 2}, "scoring": {"ms": 2.0, "count": 5}}
    profile = {"key": "k", "kinds": {"ntk": {"ms": 40.0}, "scoring": {"ms": 8.0}, "reuse": {"ms": 3.0}}}
    kinds = ["ntk", "scoring", "scoring", "reuse", "ntk"]
    np.testing.assert_allclose(priced_seconds(kinds, profile), [0, 0.040, 0.048, 0.056, 0.059, 0.099])
    with pytest.raises(BenchError, match="^timing profile k has no cost for step kind\\(s\\) full;"):
        priced_seconds(["full"], profile)

    cfgs, images = members("int", k=2, iters=6, interval="dense2")
    measured = profile_for(tmp_path, cfgs[0], images[0], "cpu")
    assert set(measured["kinds"]) == {"scoring", "reuse"} and measured["steps"] == 6
    path = profile_path(tmp_path, measured["key"])
    assert path.exists() and profile_for(tmp_path, cfgs[1], images[1], "cpu") == measured  # one per configuration
    result = fit_packed(cfgs, images, "cpu", profile=measured).results[0]
    ms = {k: v["ms"] for k, v in measured["kinds"].items()}
    assert result.step_kinds == ["scoring", "reuse"] * 3
    assert result.train_seconds == pytest.approx(3 * (ms["scoring"] + ms["reuse"]) / 1000.0, rel=1e-12)
    np.testing.assert_allclose(np.diff(result.metrics["train_seconds"]), [ms[k] / 1000.0 for k in result.step_kinds])
    price(result, measured)  # pricing again gives the same


def test_run_benchmark_pack_stores_ordinary_runs_with_the_unpacked_run_ids(tmp_path):
    from benchmark.store import load
    from run_benchmark import main

    common = ["--suite", "builtin", "--max-size", "12", "--iters", "4", "--model-param", "depth=2",
              "--model-param", "width=8", "--no-lpips", "--no-progress", "--seeds", "0,1"]
    assert main([*common, "--strategies", "uniform,soft-mining", "--max-images", "1", "--out",
                 str(tmp_path / "a"), "--pack", "4"]) == 0
    assert main([*common, "--strategies", "uniform", "--max-images", "1", "--out", str(tmp_path / "b")]) == 0
    packed, packed_metrics = load(tmp_path / "a")
    alone, alone_metrics = load(tmp_path / "b")
    assert set(alone["run_id"]) <= set(packed["run_id"]) and len(packed) == 4 and len(alone) == 2
    uniform, soft = packed[packed["strategy"] == "uniform"], packed[packed["strategy"] == "soft-mining"]
    assert set(uniform["execution_mode"]) == {"packed-2"} and set(uniform["timing"]) == {"profile"}
    assert set(soft["execution_mode"]) == {"exclusive"} and set(soft["timing"]) == {"measured"}
    assert set(alone["timing"]) == {"measured"}
    assert list((tmp_path / "a" / "profiles").glob("*.json"))
    for run_id in alone["run_id"]:
        a = packed_metrics[packed_metrics["run_id"] == run_id].reset_index(drop=True)
        b = alone_metrics[alone_metrics["run_id"] == run_id].reset_index(drop=True)
        np.testing.assert_allclose(a["psnr"], b["psnr"], atol=1e-6)
    assert main([*common, "--strategies", "uniform", "--out", str(tmp_path / "a"), "--pack", "0"]) == 2


def test_members_with_other_parameters_are_priced_by_their_own_profiles(tmp_path):
    import datasets
    from benchmark.packed import execute_pack
    from benchmark.runner import Job
    from benchmark.store import Store

    cfgs, images = members("uniform", k=2, iters=3, params=[{}, {"interval": "dense2"}])
    jobs = [Job(c, datasets.ImageRef(c.image, loader=lambda img=img: img)) for c, img in zip(cfgs, images)]
    rows = execute_pack(jobs, str(tmp_path), "cpu", "off")
    assert [r["status"] for r in rows] == ["ok", "ok"] and {r["execution_mode"] for r in rows} == {"packed-2"}
    profiles = [json.loads(p.read_text()) for p in (tmp_path / "profiles").glob("*.json")]
    assert sorted(sorted(p["kinds"]) for p in profiles) == [["reuse", "select"], ["select"]]
    assert Store(tmp_path).finished_ids() == {c.run_id for c in cfgs}
