"""The fit loop's eager warm-up and its on_select hook, LPIPS's input mapping and its run ids, Soft Mining's
units, and bench_warmup on the CPU."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import strategies
from benchmark.config import RunConfig
from benchmark.fit import fit
from benchmark.metrics import Lpips, lpips_input
from conftest import tiny_image

SMALL = {"depth": 2, "width": 16}


def config(**kw):
    base = dict(image="t", image_sha256="x", strategy="uniform", params=strategies.resolve(kw.get("strategy", "uniform"))[1],
                model_params=SMALL, iters=6, eval_every=3, lpips=False, suite="test")
    return RunConfig(**{**base, **kw})


@pytest.mark.parametrize("strategy", ["uniform", "nint", "soft-mining"])
def test_warm_up_changes_nothing_the_fit_computes(strategy):
    """The scratch steps restore the parameters, leave the optimizer and the generator alone and restore the
    global random state: the same losses and PSNRs as without them."""
    img = tiny_image()
    cfg = config(strategy=strategy, params=strategies.resolve(strategy)[1])
    torch.manual_seed(123)
    warm = fit(cfg, img).metrics
    after_warm = torch.rand(1)
    torch.manual_seed(123)
    cold = fit(cfg, img, warm_up=False).metrics
    after_cold = torch.rand(1)
    pd.testing.assert_frame_equal(warm[["loss", "psnr", "sampled_fraction"]], cold[["loss", "psnr", "sampled_fraction"]])
    assert torch.equal(after_warm, after_cold)


def test_warm_up_runs_the_strategy_before_the_timed_loop(monkeypatch):
    import benchmark.fit as fit_module

    calls = []
    original = fit_module.warm_up_outside_timing
    monkeypatch.setattr(fit_module, "warm_up_outside_timing", lambda *a: calls.append(1) or original(*a))
    fit(config(), tiny_image())
    fit(config(), tiny_image(), warm_up=False)
    assert calls == [1]  # eager runs warm up too; warm_up=False (bench_warmup's cold rows) does not


def test_on_select_sees_every_trained_batch():
    seen = []
    fit(config(iters=4), tiny_image(), on_select=lambda t, batch: seen.append((t, batch.size(192))))
    assert seen == [(t, int(0.2 * 192)) for t in range(4)]


def test_lpips_minmax_normalises_each_image():
    img = torch.tensor([[[0.2, 0.4, 0.6]]]).expand(2, 2, 3).clone()
    out = lpips_input(img)
    assert out.min() == -1.0 and out.max() == 1.0 and out[0, 0, 1] == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(lpips_input(torch.full((2, 2, 3), 0.5)), torch.full((2, 2, 3), -1.0))  # constant: no NaN
    metric = Lpips(None, random_backbone=True)
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.random((32, 32, 3))).float()
    b = (a * 0.5 + 0.2).clamp(0, 1)  # the same image, contrast-reduced: min-max maps it back onto a
    assert float(metric(b, a, "minmax")) < 1e-4 < float(metric(b, a, "fixed"))


def test_lpips_norm_keeps_stored_run_ids():
    """A committed store's runs (LPIPS on, computed with the fixed mapping) keep their ids as `fixed`; minmax
    runs are new runs; with LPIPS off the mapping is irrelevant."""
    from benchmark.store import load

    runs, _ = load("results/kodim03-table-a-h100-tf32")
    row = runs.iloc[0]
    stored = json.loads(row["config"])
    assert stored["lpips"] is True and "lpips_norm" not in stored
    assert RunConfig(**{**stored, "lpips_norm": "fixed"}).run_id == row["run_id"]
    assert RunConfig(**stored).run_id != row["run_id"]  # the default, minmax, computes another LPIPS
    off = {**stored, "lpips": False}
    assert RunConfig(**off, lpips_norm="minmax").run_id == RunConfig(**off, lpips_norm="fixed").run_id


def test_soft_mining_error_scale_reproduces_the_reference_units():
    """Soft Mining on [0, 1] targets with error_scale=2 computes the reference's [−1, 1] weights and Langevin
    drift exactly; with the suite's units (error_scale=1, the stored runs' default) the drift is 2^−ρ of it."""
    from conftest import make_task
    from strategies.base import Batch
    from strategies.soft_mining import EPS16, EPS32

    task = make_task(ratio=0.2, iters=2000)
    rng = torch.Generator().manual_seed(1)
    coords0 = torch.rand((40, 2), generator=rng) * 2 - 1
    target = torch.rand((40, 3), generator=rng)
    W = torch.randn((2, 3), generator=rng)
    step = 999  # ρ = min(1000/1000, 0.6) = 0.6

    def drift(scale):
        cls, params = strategies.resolve("soft-mining", {"error_scale": scale})
        s = cls(task, **params)
        coords = coords0.clone().requires_grad_(True)
        batch = Batch(indices=None, coords=coords, targets=target)
        pred = torch.sin(coords @ W) * 0.5 + 0.5
        s.loss(pred, target, batch, step).backward()
        s.after_backward(batch, step)
        return s.grad

    # the reference, written out on [−1, 1] targets
    coords = coords0.clone().requires_grad_(True)
    pred_ref, target_ref = (torch.sin(coords @ W) * 0.5 + 0.5) * 2 - 1, target * 2 - 1
    l1 = (pred_ref - target_ref).abs().mean(dim=1).detach()
    wgt = l1.clamp_min(EPS16).reciprocal().pow(0.6)
    wgt = wgt.clamp(min=0.2).minimum(wgt.mean() + wgt.std())
    weighted = wgt * (pred_ref - target_ref).pow(2).mean(dim=1)
    weighted.mean().backward()
    reference = coords.grad / (weighted.detach() * wgt + EPS32)[:, None]
    torch.testing.assert_close(drift(2.0), reference, rtol=1e-4, atol=1e-7)
    ours = drift(1.0)
    assert not torch.allclose(ours, reference, rtol=1e-2)
    unclamped = (wgt > 0.2) & (wgt < wgt.mean() + wgt.std())  # where no clamp binds, exactly 2^−ρ
    ratio = (ours.norm(dim=1) / reference.norm(dim=1))[unclamped]
    assert unclamped.sum() > 5 and torch.allclose(ratio, torch.full_like(ratio, 2 ** -0.6), rtol=1e-3)
    assert strategies.resolve("soft-mining", {"error_scale": 1.0})[1] == strategies.resolve("soft-mining")[1]


def test_bench_warmup_on_the_cpu(tmp_path, capsys):
    import cv2

    from benchmark import bench_warmup

    path = tmp_path / "tiny.png"
    cv2.imwrite(str(path), tiny_image()[..., ::-1])
    row = bench_warmup.measure(str(path), 0, "uniform", 5, True, "cpu")
    assert row["step0_ms"] > 0 and row["median_ms"] > 0 and math.isclose(
        row["step0_over_median"], row["step0_ms"] / row["median_ms"])
    assert (row["height"], row["width"]) == (12, 16)
    # NINT's step 0 is an NTK refresh: it is also compared with the later refreshes (steps 9 and 19 here)
    row = bench_warmup.measure(str(path), 0, "nint", 21, True, "cpu")
    assert row["step0_kind"] == "ntk" and row["same_kind_steps"] == 2
    assert math.isclose(row["step0_over_same_kind"], row["step0_ms"] / row["same_kind_median_ms"])


def test_evos_names_its_fitness_steps_for_timing_profiles():
    """EVOS's fitness steps train on every pixel: step_kind tells them apart before select runs, so a timing
    profile prices them apart from the plain steps."""
    from benchmark.fit import fit

    seen = []
    result = fit(config(strategy="evos", iters=12, params={"fitness_start": 4, "fitness_end": 4}), tiny_image(),
                 on_select=lambda t, batch: seen.append(batch.indices is None))
    assert result.step_kinds == ["fitness" if t % 4 == 0 else "select" for t in range(12)]  # t + 1 = 1, 5, 9
    assert seen == [k == "fitness" for k in result.step_kinds]  # the fitness steps are the full-batch ones


def test_warm_up_steps_the_fits_own_optimizer_then_empties_its_state():
    """The first step of an Adam instance has a one-off host cost, so the warm-up steps the fit's own optimizer;
    afterwards its state is empty and the parameters are as before, so the timed loop starts unchanged."""
    from benchmark.fit import warm_up_outside_timing
    from conftest import make_task

    task = make_task()
    cls, params = strategies.resolve("uniform")
    optimizer = torch.optim.Adam(task.model.parameters(), lr=1e-4)
    stepped = []
    optimizer.register_step_post_hook(lambda opt, args, kwargs: stepped.append(len(opt.state)))
    before = [p.detach().clone() for p in task.model.parameters()]
    warm_up_outside_timing(task, lambda scratch: cls(scratch, **params), optimizer)
    assert stepped and stepped[0] == len(before)  # the fit's optimizer took the scratch steps, with state
    assert len(optimizer.state) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, task.model.parameters()))
