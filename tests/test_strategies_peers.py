"""Peer strategies (EGRA, expansive, soft mining, EVOS), the per-strategy interval override, the presets, and
the count / range / uniqueness / determinism contract for every registered strategy."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

import strategies
from benchmark import presets, schedules
from benchmark.config import RunConfig
from benchmark.errors import BenchError
from benchmark.fit import fit, train_step
from conftest import make_task, tiny_image
from strategies.evos import laplacian

NEW = ["egra", "expansive", "soft-mining", "evos", "evos-nocfs"]


def build(task, name, **params):
    cls, full = strategies.resolve(name, params)
    return cls(task, **full)


def train(task, s, steps, lr=1e-3):
    """The fit loop's step, without timing or metrics: returns each step's batch."""
    opt = torch.optim.Adam(task.model.parameters(), lr=lr)
    batches = []
    for t in range(steps):
        b, _, _ = train_step(s, opt, t)
        batches.append(b)
    return batches


def expected_size(name, s, task, step):
    n = task.n_pixels
    if name == "standard":
        return n
    if name == "soft-mining":
        return math.ceil(task.mt_ratio * n)
    if name == "expansive":
        return s.anchors.numel() + s.n_sources(step)
    if name.startswith("evos"):
        return n if step == 0 else sum(s.counts(step))
    return task.budget(step)


# --- every registered strategy --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", strategies.list_strategies())
def test_count_range_uniqueness_and_determinism(name):
    runs = []
    for _ in range(2):
        task = make_task(tiny_image(12, 16), ratio=0.25, iters=20, seed=7)
        s = build(task, name)
        batches = train(task, s, 4)
        n = task.n_pixels
        picked = []
        for t, b in enumerate(batches):
            assert b.size(n) == expected_size(name, s, task, t), (name, t)
            idx = torch.arange(n) if b.indices is None else b.indices
            assert idx.dtype == torch.long and int(idx.min()) >= 0 and int(idx.max()) < n
            if name != "soft-mining":  # soft mining's points may coincide (duplicates allowed)
                assert idx.unique().numel() == idx.numel()
            picked.append(idx.clone())
        runs.append(picked)
    for a, b in zip(*runs):
        assert torch.equal(a, b), name  # same seed, same pixels


def test_new_strategies_are_listed_with_a_description():
    for name in NEW + ["random-only", "residual-only", "ntk-only"]:
        assert name in strategies.list_strategies() and strategies.describe(name)


@pytest.mark.parametrize("name", NEW)
def test_fit_five_iterations_gives_finite_psnr(name):
    _, params = strategies.resolve(name)
    cfg = RunConfig(image="tiny", image_sha256="x", strategy=name, params=params, iters=5, eval_every=5,
                    model_params={"depth": 2, "width": 16})
    m = fit(cfg, tiny_image()).metrics
    assert np.isfinite(m["psnr"]).all() and np.isfinite(m["loss"].iloc[1:]).all()


# --- EGRA -----------------------------------------------------------------------------------------------------
def stripes(h=32, w=32, period=8):
    img = np.zeros((h, w, 3), np.uint8)
    for r in range(0, h, period):
        img[r:r + period // 2] = 255
    return img


def test_egra_weights_and_edge_preference():
    img = stripes()
    task = make_task(img, ratio=0.1)
    s = build(task, "egra")
    edges = cv2.Canny(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 30, 40).reshape(-1) > 0
    assert torch.equal(s.edge_idx, torch.from_numpy(np.flatnonzero(edges)))
    w = s.weights()
    assert float(w.max() / w.min()) == pytest.approx((0.0025 + 0.9975 * 0.0064) / (0.9975 * 0.0064), rel=1e-5)
    # horizontal edges: a shift of 6-9 along the row mostly lands on the same edge row (about half of the
    # edge pixels get the ≈1.39× weight in a draw, since shifts collide), so edge rows are drawn more often
    counts = torch.zeros(task.n_pixels)
    for t in range(300):
        counts[s.choose(t).indices] += 1
    edge = torch.from_numpy(edges)
    assert 1.08 < counts[edge].mean() / counts[~edge].mean() < 1.39


def test_egra_draws_without_replacement_and_refuses_bad_weights():
    task = make_task(ratio=0.9)
    idx = build(task, "egra").select(0).indices
    assert idx.numel() == task.budget(0) == idx.unique().numel()
    with pytest.raises(BenchError, match="p"):
        strategies.resolve("egra", {"p": 1.5})


# --- expansive -----------------------------------------------------------------------------------------------
def test_expansive_anchors_cover_a_n_and_are_fixed():
    rng = np.random.default_rng(0)
    img = (rng.random((32, 40, 3)) * 255).astype(np.uint8)  # noise: the dilated Canny map exceeds a
    task = make_task(img, ratio=0.4)
    s = build(task, "expansive")
    n = task.n_pixels
    assert s.a == pytest.approx(0.2) and s.anchors.numel() == int(0.2 * n)
    b0, b1 = s.select(0), s.select(1)
    k = s.anchors.numel()
    assert torch.equal(b0.indices[:k], s.anchors) and torch.equal(b1.indices[:k], s.anchors)
    assert b0.indices.numel() == k + int((0.4 - 0.2) * n)
    assert not torch.equal(b0.indices[k:], b1.indices[k:])  # fresh sources every step


def test_expansive_no_top_up_and_guard_below_a():
    flat = np.full((20, 20, 3), 128, np.uint8)  # no edges: no anchors, so the batch is short of the budget
    task = make_task(flat, ratio=0.4)
    s = build(task, "expansive")
    assert s.anchors.numel() == 0 and s.select(0).indices.numel() == int(0.2 * 400) < task.budget(0)
    # reverse-cosine from 0.9 ends near 0.2 < a = 0.45: no sources (the reference's slice took almost all)
    task = make_task(tiny_image(20, 20), ratio=0.9, schedule="reverse-cosine", iters=10)
    s = build(task, "expansive")
    assert task.ratio(9) < s.a and s.n_sources(9) == 0
    assert s.select(9).indices.numel() == s.anchors.numel()


# --- soft mining ----------------------------------------------------------------------------------------------
def test_soft_mining_weights_follow_the_formula():
    task = make_task(ratio=0.25)
    s = build(task, "soft-mining")
    g = torch.Generator().manual_seed(1)
    target = torch.rand(48, 3, generator=g)
    pred = target + 0.2 * torch.randn(48, 3, generator=g)
    pred[:3] = target[:3]  # L1 = 0: floor 2⁻¹⁰
    for step, rho in [(0, 1 / 1000), (299, 0.3), (4000, 0.6)]:
        l1 = (pred - target).abs().mean(1).clamp_min(2.0 ** -10)
        w = (1.0 / l1) ** rho
        expected = torch.clamp(w, min=0.2).minimum(w.mean() + w.std())
        got = s.weights(pred, target, step)
        assert torch.allclose(got, expected, rtol=1e-5)
        loss = s.loss(pred, target, None, step)
        assert float(loss) == pytest.approx(float((expected * (pred - target).pow(2).mean(1)).mean()), rel=1e-5)
    assert float(got.max()) == pytest.approx(float(w.mean() + w.std()), rel=1e-5)  # the upper clamp bites


@pytest.mark.parametrize("correction,power", [("reference", 2), ("single", 1)])
def test_soft_mining_gradient_correction(correction, power):
    task = make_task(ratio=0.25)
    s = build(task, "soft-mining", correction=correction)
    b = s.select(0)
    loss = s.loss(task.model(b.coords), b.targets, b, 0)
    loss.backward()
    s.after_backward(b, 0)
    ell = (task.model(b.coords) - b.targets).pow(2).mean(1).detach()
    expected = b.coords.grad / (s._w ** power * ell + torch.finfo(torch.float32).eps)[:, None]
    assert torch.allclose(s.grad, expected, rtol=1e-4)


def test_soft_mining_points_are_on_grid_with_w_y_plus_x():
    task = make_task(tiny_image(12, 16), ratio=0.25)
    s = build(task, "soft-mining")
    batches = train(task, s, 3)
    assert s.pos.min() >= 0 and s.pos.max() <= 1
    for b in batches:
        assert b.coords.requires_grad and b.coords.is_leaf and b.coords.shape == (48, 2)
        assert torch.equal(b.coords.detach(), task.coords[b.indices])
        assert torch.equal(b.targets, task.targets[b.indices])
    idx = s.select(3).indices  # moves the points, then rounds them
    rc = torch.round(s.pos * torch.tensor([11.0, 15.0])).long()
    assert torch.equal(idx, rc[:, 0] * 16 + rc[:, 1])


def test_soft_mining_off_grid_interpolates_the_target():
    task = make_task(tiny_image(12, 16), ratio=0.25)
    s = build(task, "soft-mining", off_grid=True)
    img = task.targets.view(12, 16, 3)
    # at pixel centres the target is the pixel; half-way between two pixels, their mean; a quarter of the
    # way in both directions, the bilinear mix of four
    pos = torch.tensor([[3 / 11, 5 / 15], [3 / 11, 5.5 / 15], [3.25 / 11, 5.25 / 15]])
    got = s.interpolated_targets(pos * 2 - 1)
    assert torch.allclose(got[0], img[3, 5], atol=1e-6)
    assert torch.allclose(got[1], (img[3, 5] + img[3, 6]) / 2, atol=1e-6)
    mix = 0.5625 * img[3, 5] + 0.1875 * img[3, 6] + 0.1875 * img[4, 5] + 0.0625 * img[4, 6]
    assert torch.allclose(got[2], mix, atol=1e-6)
    batches = train(task, s, 3)
    assert all(b.coords.requires_grad and b.coords.shape == (48, 2) for b in batches)
    assert torch.equal(batches[-1].coords.detach(), s.pos * 2 - 1)  # the points move only at the next select
    b = s.select(3)
    assert torch.equal(b.coords.detach(), s.pos * 2 - 1)
    assert not torch.isin(b.coords.detach()[:, 0], task.coords[:, 0].unique()).all()  # off the pixel rows
    with pytest.raises(BenchError, match="off_grid must be true or false"):
        strategies.resolve("soft-mining", {"off_grid": "yes"})


def test_soft_mining_sobel_pdf_normalisation():
    from strategies.soft_mining import sobel_pdf

    img = tiny_image(12, 16)
    col = sobel_pdf(img, "cpu", "column").view(12, 16)
    glob = sobel_pdf(img, "cpu", "global").view(12, 16)
    assert torch.allclose(col.amax(dim=0), torch.ones(16), atol=1e-5)  # per-column maximum (reference)
    assert float(glob.max()) == pytest.approx(1.0, abs=1e-5) and float(glob.amax(dim=0).min()) < 0.99
    assert float(col.min()) >= 1e-5


def test_soft_mining_ignores_profile_and_refuses_interval():
    assert not strategies.STRATEGIES["soft-mining"].uses_profile
    with pytest.raises(BenchError, match="ignores the interval profile"):
        strategies.resolve("soft-mining", {"interval": "dense"})


# --- EVOS -----------------------------------------------------------------------------------------------------
def test_evos_fitness_steps_translate_the_1_based_rule():
    s = build(make_task(iters=5000), "evos")
    assert s.is_fitness(0)  # no ranking yet
    s.ranking = torch.arange(192)
    steps = [t for t in range(5000) if s.is_fitness(t)]
    assert len(steps) == 72
    assert steps[:5] == [0, 99, 196, 291, 384] and steps[-3:] == [4896, 4900, 4950]
    assert s.provides_full_pred(99) and not s.provides_full_pred(100)


def test_evos_crossover_split_follows_the_error_ratio():
    task = make_task(tiny_image(12, 16), ratio=0.25)
    s = build(task, "evos")
    n = task.n_pixels
    e = torch.linspace(0.001, 0.01, n)
    e[:24] = torch.linspace(1.0, 2.0, 24)  # top-24 by E: pixels 0-23
    lap = torch.linspace(0.001, 0.01, n).flip(0) * 1e5
    lap[100:124] = torch.linspace(3.0, 5.0, 24) * 1e5  # top-24 by L: pixels 100-123 (disjoint)
    lap[0] = 6e5  # ... but pixel 0 is in both tops
    pred = task.targets + (e / 4).sqrt()[:, None]  # E = 4·mean_c(pred − y)² in the reference's units
    s.crossover(pred, lap.view(12, 16), 0)
    E, L = e, 1e-5 * lap
    assert torch.allclose(4 * (pred - task.targets).pow(2).mean(1), E, rtol=1e-4)
    size = n - int((1 - 0.25 + 0.125) * n)
    assert size == 24
    chosen = set(s.ranking[-size:].tolist())
    top_e = set(torch.topk(E, size).indices.tolist())
    top_l = set(torch.topk(L, size).indices.tolist())
    both = top_e & top_l
    rest = size - len(both)
    n_e = min(int(rest * float(E.mean()) / float(E.mean() + L.mean())), len(top_e - top_l))
    assert both == {0} and 0 < n_e < rest
    assert both <= chosen and len(chosen & (top_e - top_l)) == n_e and len(chosen & (top_l - top_e)) == rest - n_e
    assert sorted(s.ranking.tolist()) == list(range(n))  # a permutation: every pixel ranked once
    # from each map's remainder, its largest values: E's are pixels 1-23 ascending, L's 101-123
    assert top_e - top_l == set(range(1, 24)) and top_l - top_e == set(range(101, 124))
    assert chosen == {0} | set(range(24 - n_e, 24)) | set(range(124 - (rest - n_e), 124))


def test_evos_counts_are_exact_and_guard_negative():
    task = make_task(tiny_image(12, 16), ratio=0.25)
    s = build(task, "evos")
    assert s.counts(1) == (int((0.25 - 0.125) * 192), int(0.125 * 192))
    # reverse-cosine from 0.9 ends near 0.2 < m = 0.45: take exactly 0 from the ranking (not "all but k")
    task = make_task(tiny_image(12, 16), ratio=0.9, schedule="reverse-cosine", iters=10)
    s = build(task, "evos")
    assert task.ratio(9) < s.m and s.counts(9) == (0, int(0.45 * 192))
    train(task, s, 1)
    assert s.select(9).indices.numel() == int(0.45 * 192)


def test_evos_losses_and_laplacian():
    img = np.zeros((5, 5), np.float64)
    img[2, 2] = 1.0
    lap = laplacian(torch.from_numpy(np.repeat(img[..., None], 3, axis=2)) / (0.2989 + 0.587 + 0.114))
    expected = np.zeros((5, 5))
    expected[2, 2], expected[1, 2], expected[3, 2], expected[2, 1], expected[2, 3] = -4, 1, 1, 1, 1
    assert np.allclose(lap.numpy(), expected)
    task = make_task(tiny_image(12, 16), ratio=0.25, iters=20)
    s, nocfs = build(task, "evos"), build(make_task(tiny_image(12, 16), ratio=0.25, iters=20), "evos-nocfs")
    b = s.select(0)
    pred = task.model(task.coords)
    mse = (pred - task.targets).pow(2).mean().detach()
    full_lap = s.lap_error(pred).mean().detach()
    assert float(s.loss(pred, task.targets, b, 0).detach()) == pytest.approx(float(mse + 1e-5 / 4 * full_lap), rel=1e-6)
    nocfs.select(0)
    assert float(nocfs.loss(pred.detach(), task.targets, b, 0)) == pytest.approx(float(mse), rel=1e-6)
    # CFS on a later step: the composite's Laplacian error over the selected pixels; the gradient reaches
    # only the selected pixels' predictions
    b = s.select(1)
    sub = task.model(task.coords[b.indices]).detach().requires_grad_(True)
    loss = s.loss(sub, task.targets[b.indices], b, 1)
    composite = s.frozen.index_put((b.indices,), sub.detach())
    cfs = s.lap_error(composite).reshape(-1)[b.indices].mean()
    mse = (sub.detach() - task.targets[b.indices]).pow(2).mean()
    assert float(loss.detach()) == pytest.approx(float(mse + 1e-5 / 4 * cfs), rel=1e-6)
    loss.backward()
    assert sub.grad.shape == sub.shape and torch.isfinite(sub.grad).all()
    # CFS stops after EVOS iteration 1500 (step 1499)
    sub = sub.detach()
    assert float(s.loss(sub, task.targets[b.indices], b, 1499)) > float(s.loss(sub, task.targets[b.indices], b, 1500))


# --- schedules and the per-strategy interval -------------------------------------------------------------------
def test_reverse_incremental_mirrors_incremental():
    T = 5000
    inc = [schedules.incremental_interval(t, T) for t in range(T)]
    rev = [schedules.reverse_incremental_interval(t, T) for t in range(T)]
    assert all(a <= b for a, b in zip(inc, inc[1:])) and all(a >= b for a, b in zip(rev, rev[1:]))
    assert inc[0] == 1 and inc[-1] == 50 and rev[0] == 90 and rev[-1] == 1  # dense start vs dense end
    assert set(inc) - {1} <= set(rev) - {1} and set(rev) - {1} == {10 * k for k in range(1, 10)}
    assert rev.count(1) == T // 10


def test_interval_override_per_strategy():
    task = make_task(iters=100)  # the run's profile: dense
    s = build(task, "int", interval="incremental")
    s.select(0)
    assert [s._recompute_here(t) for t in (30, 31, 40)] == [True, False, True]
    _, full = strategies.resolve("int", {"interval": "incremental"})
    cfg = RunConfig(image="x", image_sha256="x", strategy="int", params=full)
    assert cfg.label == "int[interval=incremental]"
    _, plain = strategies.resolve("int", {"interval": None})
    assert plain == strategies.resolve("int")[1]  # None = the run's profile, the same run id
    with pytest.raises(BenchError, match="interval profile 'bogus'"):
        strategies.resolve("int", {"interval": "bogus"})


def test_presets_parse_and_resolve():
    from benchmark.models import build_model, model_spec
    from benchmark.runner import parse_strategies

    for name, preset in presets.PRESETS.items():
        settings = preset["settings"]
        assert parse_strategies(settings["strategies"])
        variants = settings.get("model_params", {})
        for model in settings.get("model", "siren").split(","):
            model_spec(model)
            for v in variants if isinstance(variants, list) else [variants]:
                build_model(model, v)
    assert len(presets.get("nint-netsize")["settings"]["model_params"]) == 9
    assert "int[interval=incremental]" in presets.get("evos-table1")["settings"]["strategies"]
