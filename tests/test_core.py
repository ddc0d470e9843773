"""The foundation: NTK scores against an explicit Jacobian, NINT's split and decay, metrics, schedules,
the Parquet store and resume."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch.func import functional_call, jacrev

import datasets
import strategies
from benchmark import schedules
from benchmark.config import RunConfig
from benchmark.errors import BenchError
from benchmark.fit import fit
from benchmark.metrics import Lpips, make_lpips, psnr, ssim
from benchmark.ntk import ntk_scores
from benchmark.runner import build_jobs, parse_strategies, run_jobs
from benchmark.store import METRICS_SCHEMA, RUNS_SCHEMA, Store, load
from benchmark.task import Task
from conftest import make_task, tiny_image


# --- NTK ------------------------------------------------------------------------------------------------------
def explicit_kg(task) -> tuple[torch.Tensor, torch.Tensor]:
    """J (Jᵀ g) from the full Jacobian (N·C × P), and f."""
    model = task.model
    params = {n: p.detach() for n, p in model.named_parameters()}
    f = lambda p: functional_call(model, p, (task.coords,)).reshape(-1)  # noqa: E731
    jac = jacrev(f)(params)
    J = torch.cat([jac[n].reshape(jac[n].shape[0], -1) for n in params], dim=1)
    out = f(params)
    g = out - task.targets.reshape(-1)
    return (J @ (J.T @ g)).reshape(-1, 3), out.reshape(-1, 3)


def test_ntk_score_equals_explicit_jacobian():
    task = make_task(tiny_image(6, 5), depth=2, width=8, dtype=torch.float64)
    kg, _ = explicit_kg(task)
    score, pred = ntk_scores(task, "kg")
    expected = kg.pow(2).sum(dim=1)
    assert torch.allclose(score, expected, rtol=1e-5, atol=1e-12)
    # a real kernel couples pixels: K·g is not a per-pixel rescaling of g
    assert not torch.allclose(kg / kg.norm(), (pred - task.targets) / (pred - task.targets).norm(), atol=1e-3)


def test_ntk_score_chunked_equals_one_pass():
    one = make_task(tiny_image(6, 5), depth=2, width=8, dtype=torch.float64)
    chunked = make_task(tiny_image(6, 5), depth=2, width=8, dtype=torch.float64, chunk_size=7)
    assert torch.allclose(ntk_scores(one, "kg")[0], ntk_scores(chunked, "kg")[0], rtol=1e-9)


def test_released_score_is_squared_output_norm():
    task = make_task(tiny_image(6, 5), depth=2, width=8, dtype=torch.float64)
    score, pred = ntk_scores(task, "primal")
    assert torch.allclose(score, task.forward_full().pow(2).sum(dim=1), rtol=1e-12)
    kg_score, _ = ntk_scores(task, "kg")
    assert not torch.allclose(score, kg_score)


# --- NINT split and decay -------------------------------------------------------------------------------------
def nint(task, name="nint", **params):
    cls, full = strategies.resolve(name, params)
    return cls(task, **full)


def test_nint_paper_and_released_decay_formulas():
    s_paper, s_rel = nint(make_task()), nint(make_task(), "nint-released")
    for u in [1, 10, 20, 30, 40, 50, 60]:
        assert s_paper.ntk_share(u) == pytest.approx(0.3 * math.exp(-1.0 * math.floor(u / 10)))
        assert s_rel.ntk_share(u) == pytest.approx(0.3 * math.exp(math.floor(-1.0 * u / 10)))
    assert s_paper.ntk_share(1) == pytest.approx(0.3) and s_rel.ntk_share(1) == pytest.approx(0.3 / math.e)
    for u in [10, 20, 30, 40, 50, 60]:  # the two parses agree on every later recompute
        assert s_paper.ntk_share(u) == pytest.approx(s_rel.ntk_share(u))
    assert s_paper.ntk_share(60) < 1e-3 < s_paper.ntk_share(50)


def test_nint_split_sizes_and_union():
    task = make_task(tiny_image(40, 50), ratio=0.2)
    s = nint(task)
    n = task.budget(0)
    assert n == int(0.2 * 2000)
    batch = s.select(0)
    assert s.share == pytest.approx(0.3)
    n_ntk, n_res, n_rand = s.split(n)
    assert (n_ntk, n_res) == (math.floor(n * 0.3), max(0, math.floor(n * (1 - 0.3 - 0.7))))
    assert n_ntk + n_res + n_rand == n
    idx = batch.indices
    assert idx.numel() == n and idx.unique().numel() == n and int(idx.min()) >= 0 and int(idx.max()) < 2000
    # the NTK part is the top of the K·g score
    score, _ = ntk_scores(task, "kg")
    assert set(idx[:n_ntk].tolist()) == set(torch.topk(score, n_ntk).indices.tolist())
    # after the first refresh window the share decays and the residual part appears
    for t in range(1, 10):
        batch = s.select(t)
    assert s.calls == 10 and s.share == pytest.approx(0.3 * math.exp(-1))
    n_ntk, n_res, n_rand = s.split(n)
    assert n_res == math.floor(n * (1 - s.share - 0.7)) > 0
    res = batch.indices[n_ntk:n_ntk + n_res]
    l1 = (task.targets - batch.full_pred).abs().sum(dim=1)
    l1[batch.indices[:n_ntk]] = -1
    assert set(res.tolist()) == set(torch.topk(l1, n_res).indices.tolist())


def test_nint_recomputes_every_alpha_and_stops_below_cutoff(monkeypatch):
    import strategies.nint as mod

    calls = []
    real = mod.ntk_scores
    monkeypatch.setattr(mod, "ntk_scores", lambda task, variant: calls.append(variant) or real(task, variant))
    task = make_task(tiny_image(20, 20), iters=100)
    s = nint(task)
    for t in range(100):
        s.select(t)
    # refreshes at u = 1, 10, 20, 30, 40, 50 (share ≥ 1e-3); at u = 60 the share is below the cut-off
    assert len(calls) == 6
    assert s.split(task.budget(99))[0] == math.floor(task.budget(99) * 0.3 * math.exp(-9))


def test_ntk_only_takes_whole_budget_from_the_score():
    task = make_task(tiny_image(10, 10), ratio=0.3)
    s = nint(task, "ntk")
    batch = s.select(0)
    score, _ = ntk_scores(task, "kg")
    assert set(batch.indices.tolist()) == set(torch.topk(score, 30).indices.tolist())


def test_int_takes_top_l1_and_reuses_between_recomputes():
    task = make_task(tiny_image(10, 10), ratio=0.3, interval="dense2")
    s = nint(task, "int")
    b0 = s.select(0)
    l1 = (task.targets - task.forward_full()).abs().sum(1)
    assert set(b0.indices.tolist()) == set(torch.topk(l1, 30).indices.tolist())
    b1 = s.select(1)  # dense2: no recompute at odd steps, same pixels, no full forward
    assert torch.equal(b0.indices, b1.indices) and b1.full_pred is None
    assert s.provides_full_pred(2) and not s.provides_full_pred(3)


def test_uniform_is_seeded_and_unique():
    a = nint(make_task(seed=3), "uniform").select(0).indices
    b = nint(make_task(seed=3), "uniform").select(0).indices
    c = nint(make_task(seed=4), "uniform").select(0).indices
    assert torch.equal(a, b) and not torch.equal(a, c) and a.unique().numel() == a.numel() == 48


# --- schedules ------------------------------------------------------------------------------------------------
def test_ratio_schedules_match_formulas():
    step = schedules.RATIO_SCHEDULES["step"]
    assert step(0, 5000, 0.2) == pytest.approx(0.2) and step(4999, 5000, 0.2) == pytest.approx(0.92)
    assert schedules.RATIO_SCHEDULES["cosine"](0, 100, 0.2) == pytest.approx(0.2)
    assert schedules.RATIO_SCHEDULES["cosine"](100, 100, 0.2) == pytest.approx(1.0)
    assert schedules.RATIO_SCHEDULES["reverse-cosine"](100, 100, 0.6) == pytest.approx(0.2)
    assert schedules.budget(0.2, 262144) == 52428 and schedules.budget(1.0 - 1e-12, 10) == 10


def test_interval_profiles():
    inc = [schedules.incremental_interval(t, 5000) for t in range(5000)]
    assert inc[1249] == 1 and inc[1250] == 10 and inc[2000] == 20 and inc[4999] == 50
    assert all(a <= b for a, b in zip(inc, inc[1:]))
    assert sum(schedules.INTERVAL_PROFILES["incremental"](t, 5000) for t in range(5000)) == 1422
    assert sum(schedules.INTERVAL_PROFILES["reverse-incremental"](t, 5000) for t in range(5000)) == 642
    assert sum(schedules.INTERVAL_PROFILES["decremental"](t, 5000) for t in range(5000)) == 2157


# --- metrics --------------------------------------------------------------------------------------------------
def test_psnr_and_ssim_match_skimage():
    rng = np.random.default_rng(1)
    a = rng.random((33, 41, 3))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    assert float(psnr(tb, ta)) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1), abs=1e-3)
    ref = structural_similarity(a.astype(np.float32), b.astype(np.float32), channel_axis=-1, data_range=1)
    assert float(ssim(tb, ta)) == pytest.approx(ref, abs=1e-3)


def test_lpips_code_path_with_random_backbone():
    metric = Lpips(None, random_backbone=True)  # for the code path only: not LPIPS numbers
    torch.manual_seed(0)
    a = torch.rand(32, 32, 3)
    noisy = [torch.clamp(a + s * torch.randn_like(a), 0, 1) for s in (0.02, 0.1, 0.3)]
    assert float(metric(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(metric(a, noisy[1])) == pytest.approx(float(metric(noisy[1], a)), rel=1e-4)
    d = [float(metric(n, a)) for n in noisy]
    assert d[0] < d[1] < d[2]


def test_lpips_offline_auto_is_null_and_explicit_path_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NINT_BENCH_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr("benchmark.metrics._NOTICED", [])
    assert make_lpips("auto", None, "cpu") is None
    assert "LPIPS recorded as null" in capsys.readouterr().err
    with pytest.raises(BenchError, match="--lpips-weights"):
        make_lpips("on", None, "cpu")
    with pytest.raises(BenchError, match="not found"):
        make_lpips("auto", str(tmp_path / "missing.pth"), "cpu")


def test_lpips_loads_a_torchvision_alexnet_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(state, path)
    metric = make_lpips("on", str(path), "cpu")
    assert torch.equal(metric.model.net.slice1._modules["0"].weight, state["features.0.weight"])
    assert torch.equal(metric.model.net.slice5._modules["10"].weight, state["features.10.weight"])


# --- fit loop -------------------------------------------------------------------------------------------------
def config(**kw) -> RunConfig:
    base = dict(image="tiny", image_sha256="x", strategy="uniform", iters=12, eval_every=5,
                model_params={"depth": 2, "width": 16})
    base.update(kw)
    _, base["params"] = strategies.resolve(base["strategy"], base.get("params", {}))
    return RunConfig(**base)


def test_fit_rows_are_the_model_after_t_updates():
    img = tiny_image()
    runs = {s: fit(config(strategy=s), img).metrics for s in ("uniform", "int", "standard", "nint")}
    first = {s: m["psnr"].iloc[0] for s, m in runs.items()}
    assert len(set(np.round(list(first.values()), 10))) == 1  # same initial model, reused or not
    for m in runs.values():
        assert list(m["iteration"]) == list(range(13))
        assert m["psnr"].notna().all() and m["loss"].iloc[1:].notna().all() and pd.isna(m["loss"].iloc[0])
        assert m["ssim"].notna().tolist() == [t % 5 == 0 or t == 12 for t in range(13)]
        assert (np.diff(m["train_seconds"]) > 0).all()
    assert runs["standard"]["sampled_fraction"].iloc[1:].eq(1.0).all()
    assert runs["uniform"]["sampled_fraction"].iloc[1:].eq(int(0.2 * 192) / 192).all()


@pytest.mark.parametrize("strategy", ["uniform", "int"])
def test_psnr_every_records_the_same_rows_for_every_strategy_and_trains_the_same(strategy, monkeypatch):
    """--psnr-every 3 (SSIM every 5): PSNR at multiples of 3 or 5 and at T, for a strategy that runs its own full
    forward (int) as for one that does not (uniform); the skipped rows cost no evaluation forward, and the
    training itself is untouched."""
    img = tiny_image()
    every = fit(config(strategy=strategy), img).metrics
    calls = []
    original = Task.forward_full
    monkeypatch.setattr(Task, "forward_full", lambda self: calls.append(1) or original(self))
    sparse = fit(config(strategy=strategy, psnr_every=3), img, warm_up=False).metrics  # no scratch forwards
    due = [t % 3 == 0 or t % 5 == 0 or t == 12 for t in range(13)]
    assert sparse["psnr"].notna().tolist() == due
    np.testing.assert_array_equal(sparse["psnr"][due], every["psnr"][due])
    np.testing.assert_array_equal(sparse["loss"], every["loss"])
    if strategy == "uniform":  # one evaluation forward per due row before the last update, one after it
        assert len(calls) == sum(due)
    assert config(psnr_every=1).run_id == config().run_id != config(psnr_every=3).run_id


@pytest.mark.parametrize("strategy", ["uniform", "int"])
def test_every_evaluation_ends_by_waiting_for_the_device(strategy, monkeypatch):
    """After each evaluated row the host waits for the GPU, so the next step cannot be queued in advance while
    the GPU evaluates: a host-bound step is then timed the same after an evaluated row as after a plain one."""
    import benchmark.fit as fit_module

    waits = []
    monkeypatch.setattr(fit_module, "wait_for_device", lambda device: waits.append(device.type))
    m = fit(config(strategy=strategy, psnr_every=3), tiny_image()).metrics
    assert waits == ["cpu"] * (1 + int(m["psnr"].notna().sum()))  # the first after the untimed warm-up


def test_bf16_scoring_keeps_neighbouring_pixels_apart_and_stays_close_to_float32():
    """SIREN's bf16 scoring forward: the first layer in float32, so the 768 columns of a Kodak-wide row keep
    768 distinct predictions (bf16 coordinates would merge neighbours); the rest close to float32's output."""
    from benchmark.models import build_model
    from benchmark.task import coordinate_grid

    torch.manual_seed(0)
    model = build_model("siren", {"depth": 3, "width": 32})
    coords = coordinate_grid(1, 768)
    with torch.no_grad():
        exact, low = model(coords), model.forward_bf16(coords)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # what the first layer must not do
            merged = model(coords).float()
    assert low.dtype == torch.float32
    assert len(torch.unique(low[:, 0])) == 768 > len(torch.unique(merged[:, 0]))
    assert 0 < float((low - exact).norm() / exact.norm()) < 0.05


@pytest.mark.parametrize("strategy", ["int", "nint"])
def test_bf16_scoring_ranks_by_the_approximate_forward_and_never_reports_it(strategy, monkeypatch):
    """Under --bf16-scoring INT and NINT rank by the bf16 forward, while every PSNR row comes from the fit
    loop's own float32 forward (one per row here); without it their full forward serves both."""
    img = tiny_image()
    scored, calls = [], []
    original_full, original_score = Task.forward_full, Task.forward_scoring
    monkeypatch.setattr(Task, "forward_full", lambda self: calls.append(1) or original_full(self))
    monkeypatch.setattr(Task, "forward_scoring",
                        lambda self: scored.append(self.exact_scoring) or original_score(self))
    low = fit(config(strategy=strategy, bf16_scoring=True), img, warm_up=False).metrics  # the loop's forwards only
    assert scored and not any(scored) and len(calls) == 13  # rows 0..12, each evaluated in float32
    scored.clear()
    calls.clear()
    exact = fit(config(strategy=strategy), img, warm_up=False).metrics
    assert scored and all(scored) and len(calls) == len(scored) + 1  # the scoring forward serves the rows
    assert low["psnr"].notna().all() and low["psnr"].iloc[0] == exact["psnr"].iloc[0]
    assert config(bf16_scoring=False).run_id == config().run_id != config(bf16_scoring=True).run_id


def test_bf16_scoring_is_refused_for_models_without_it():
    with pytest.raises(BenchError, match=r"^--bf16-scoring is implemented for the siren model only, got model "
                                         r"'relu-mlp'; drop --bf16-scoring"):
        config(model="relu-mlp", model_params={}, bf16_scoring=True)


def test_fit_is_reproducible_under_a_seed():
    img = tiny_image()
    a, b = fit(config(strategy="nint", seed=5), img).metrics, fit(config(strategy="nint", seed=5), img).metrics
    c = fit(config(strategy="nint", seed=6), img).metrics
    cols = ["loss", "psnr", "ssim"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert not np.allclose(a["psnr"].iloc[1:], c["psnr"].iloc[1:])


@pytest.mark.parametrize("mode,strategy,schedule", [(True, "nint", "constant"), ("max-autotune", "nint", "constant"),
                                                    ("cudagraphs", "nint", "constant"),
                                                    ("reduce-overhead", "uniform", "constant"),
                                                    (True, "soft-mining", "linear")])
def test_compiled_fit_follows_the_eager_fit(mode, strategy, schedule):
    """--compile only fuses kernels: its one-off compile happens before the timed loop (without touching the
    parameters or the optimizer), so the loss and PSNR trajectory match eager's up to rounding."""
    img = tiny_image()
    eager = fit(config(strategy=strategy, iters=6, ratio_schedule=schedule), img).metrics
    compiled = fit(config(strategy=strategy, iters=6, ratio_schedule=schedule, compile=mode), img).metrics
    np.testing.assert_allclose(compiled["loss"].iloc[1:], eager["loss"].iloc[1:], rtol=1e-4)
    np.testing.assert_allclose(compiled["psnr"], eager["psnr"], atol=1e-3)


def test_standard_step_matches_a_hand_written_adam_step():
    img = tiny_image()
    m = fit(config(strategy="standard", iters=1, lr=1e-3), img).metrics
    task = make_task(img, seed=0)
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-3)
    loss = (task.model(task.coords) - task.targets).pow(2).mean()
    loss.backward()
    opt.step()
    assert m["loss"].iloc[1] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert m["psnr"].iloc[1] == pytest.approx(float(psnr(task.forward_full(), task.targets)), rel=1e-5)


# --- store and runner -----------------------------------------------------------------------------------------
def test_tiny_run_writes_parquet_with_the_schema_and_rerun_skips(tmp_path):
    refs = [datasets.ImageRef("tiny", loader=lambda: tiny_image())]
    jobs = build_jobs(refs, parse_strategies("uniform,nint"), [0, 1], iters=8, eval_every=4,
                      model_params={"depth": 2, "width": 8}, lpips=False, suite="test")
    out = run_jobs(jobs, tmp_path / "res", ["cpu"], progress=False)
    assert [o["status"] for o in out] == ["ok"] * 4
    metrics = pd.read_parquet(tmp_path / "res" / "metrics")  # plain pandas reads the store
    assert list(metrics.columns) == METRICS_SCHEMA.names and len(metrics) == 4 * 9
    assert pq.read_schema(next((tmp_path / "res" / "runs").glob("*.parquet"))).names == RUNS_SCHEMA.names
    runs, _ = load(tmp_path / "res")
    assert set(runs["run_id"]) == {j.cfg.run_id for j in jobs} and runs["final_psnr"].notna().all()
    assert set(metrics.loc[metrics["ssim"].notna(), "iteration"]) == {0, 4, 8}
    assert metrics["lpips"].isna().all()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("*.parquet")}
    assert run_jobs(jobs, tmp_path / "res", ["cpu"], progress=False) == []  # resume: nothing to do
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("*.parquet")} == mtimes
    assert not list((tmp_path / "res").rglob("*.tmp"))


def test_run_id_is_a_hash_of_the_config():
    a, b = config(), config()
    assert a.run_id == b.run_id and len(a.run_id) == 16
    assert config(seed=1).run_id != a.run_id and config(mt_ratio=0.3).run_id != a.run_id
    assert config(chunk_size=64).run_id == a.run_id  # chunking does not change what is computed


@pytest.mark.parametrize("strategy,schedule,iters", [("nint", "linear", 200), ("soft-mining", "constant", 8)])
def test_compile_warm_up_builds_every_graph_the_timed_steps_use(strategy, schedule, iters):
    """Nothing is compiled inside the timed loop: after the warm-up, neither a run whose batch size changes every
    step (linear ratio schedule) nor one whose batch needs a coordinate gradient (Soft Mining) compiles a frame."""
    from torch._dynamo.utils import counters

    from benchmark.fit import warm_up_outside_timing, compiled, train_step

    torch._dynamo.reset()
    counters.clear()
    task = make_task(iters=iters, schedule=schedule)  # linear over 200 steps: steps 0 and 1 have one batch size
    task.predict = compiled(task.model, True, static_shapes=schedule == "constant")  # as the fit loop does
    cls, params = strategies.resolve(strategy)
    before = [p.detach().clone() for p in task.model.parameters()]
    warm_up_outside_timing(task, lambda scratch: cls(scratch, **params), lr=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(before, task.model.parameters()))  # parameters restored
    built = sum(counters["frames"].values())
    assert built > 0
    strategy, optimizer = cls(task, **params), torch.optim.Adam(task.model.parameters(), lr=1e-4)
    sizes = set()
    for t in range(task.iters):
        batch, _, _ = train_step(strategy, optimizer, t)
        sizes.add(batch.size(task.n_pixels))
        task.forward_full()
    assert sum(counters["frames"].values()) == built
    assert len(sizes) > 2 if schedule == "linear" else batch.coords is not None


def test_a_long_grid_of_compiled_runs_never_falls_back_to_eager(monkeypatch):
    """One process compiles the same forward for every run of a grid; each new batch or image size is a new
    graph. Past torch's default limit of 8 graphs, later runs would silently run eager: compiled() lifts it."""
    from torch._dynamo.utils import counters

    from benchmark.fit import compiled
    from benchmark.models import build_model

    # The limit is Dynamo's, applied before any backend: Dynamo's eager backend builds the same frames
    # without inductor's C++ compile of each one, which keeps the test fast.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager", **kw))
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        for n in range(1, 13):  # 12 runs, each with its own model and input size
            compiled(build_model("siren", {"depth": 1, "width": 4}), True, static_shapes=True)(torch.zeros(n, 2))
    assert counters["frames"]["ok"] == 12


def test_compile_modes_reach_the_run_config_and_keep_old_run_ids(tmp_path, capsys):
    """--compile is inductor's default mode (stored as true, as before), --compile max-autotune is stored by name;
    any other value is refused in one line."""
    import run_benchmark

    base = config(strategy="uniform")
    assert config(strategy="uniform", compile=False).run_id == base.run_id
    assert len({base.run_id, config(strategy="uniform", compile=True).run_id,
                config(strategy="uniform", compile="max-autotune").run_id}) == 3
    with pytest.raises(BenchError, match=r"^compile must be false, true, 'max-autotune', 'cudagraphs', "
                                        r"'reduce-overhead', got 'fast'; e\.g\."):
        config(strategy="uniform", compile="fast")
    out = tmp_path / "r"
    assert run_benchmark.main(["--suite", "builtin", "--max-images", "1", "--max-size", "16", "--iters", "3",
                               "--strategies", "uniform", "--model-param", "depth=2", "--model-param", "width=8",
                               "--compile", "max-autotune", "--out", str(out), "--no-progress", "--no-lpips"]) == 0
    runs = pd.concat(pd.read_parquet(f) for f in (out / "runs").glob("*.parquet"))
    assert [json.loads(c)["compile"] for c in runs["config"]] == ["max-autotune"]
    capsys.readouterr()
    assert run_benchmark.main(["--compile", "fast"]) == 2
    assert capsys.readouterr().err.startswith("error: argument --compile: invalid choice: 'fast'")


def test_cli_lists_and_runs(tmp_path, capsys):
    import run_benchmark

    assert run_benchmark.main(["--list-strategies"]) == 0
    listed = capsys.readouterr().out
    for name in ("standard", "uniform", "int", "ntk", "nint", "nint-released"):
        assert f"\n{name} " in "\n" + listed
    code = run_benchmark.main(["--suite", "builtin", "--max-images", "1", "--max-size", "16", "--iters", "5",
                               "--strategies", "uniform,nint", "--model-param", "depth=2", "--model-param",
                               "width=8", "--out", str(tmp_path / "r"), "--no-progress", "--no-lpips"])
    assert code == 0
    out = capsys.readouterr().out
    assert "summary of 2 runs" in out and "s_to_30dB" in out and "nint" in out
    assert run_benchmark.main(["--strategies", "bogus", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown strategy 'bogus'")
