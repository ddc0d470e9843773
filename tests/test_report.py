"""Report on a synthetic Parquet store with known curves: the table entries, the CIs, the files, the maps."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from benchmark import report
from benchmark.errors import BenchError
from benchmark.store import RUNS_SCHEMA, Store
from conftest import tiny_image

ITERS = 1000


def write_run(store: Store, run_id: str, label: str, image: str, psnr, *, strategy: str | None = None,
              params: dict | None = None, model: str = "siren", model_params: dict | None = None,
              seed: int = 0, seconds_per_iter: float = 0.01, ssim: float = 0.9, lpips: float = 0.1,
              psnr_every: int = 1) -> None:
    """One finished run whose PSNR after t updates is psnr(t) (recorded every `psnr_every` rows and at the end)
    and whose train-seconds are t × seconds_per_iter."""
    t = np.arange(ITERS + 1)
    evaluated = t % 100 == 0
    recorded = (t % psnr_every == 0) | evaluated | (t == ITERS)
    metrics = pd.DataFrame({
        "run_id": run_id, "suite": "synthetic", "image": image, "strategy": label, "seed": seed, "iteration": t,
        "train_seconds": t * seconds_per_iter, "loss": np.nan,
        "psnr": [float(psnr(i)) if r else np.nan for i, r in zip(t, recorded)],
        "ssim": np.where(evaluated, ssim, np.nan), "lpips": np.where(evaluated, lpips, np.nan),
        "sampled_fraction": 0.2,
    })
    row = {name: None for name in RUNS_SCHEMA.names}
    row.update(run_id=run_id, status="ok", suite="synthetic", image=image, strategy=strategy or label.split("[")[0],
               label=label, seed=seed, iters=ITERS, mt_ratio=0.2, ratio_schedule="constant", interval="dense",
               model=model, lr=1e-4, lr_schedule="constant", params=json.dumps(params or {}),
               model_params=json.dumps(model_params or {}), config=json.dumps({"max_size": 0}),
               train_seconds=ITERS * seconds_per_iter, ms_per_iter=1000 * seconds_per_iter,
               final_psnr=float(psnr(ITERS)), final_ssim=ssim, final_lpips=lpips)
    store.write_run(metrics, row)


@pytest.fixture
def results(tmp_path):
    """standard: 20 + t/50 dB on both images (30 dB at t=500, 35 at t=750).
    nint: 25 + t/50 on img1 (30 at 250, 35 at 500); 20 + 0.012·t on img2 (30 at t=834, never 35: ends at 32)."""
    store = Store(tmp_path / "res")
    for img in ("img1", "img2"):
        write_run(store, f"std-{img}", "standard", img, lambda t: 20 + t / 50)
    write_run(store, "nint-img1", "nint", "img1", lambda t: 25 + t / 50)
    write_run(store, "nint-img2", "nint", "img2", lambda t: 20 + t * 12 / 1000)
    return store


def add_variants(store: Store) -> None:
    """A second network size, a second architecture and an ablation variant, so Tables C, D and the ablation exist."""
    small = {"depth": 3, "width": 64}
    write_run(store, "std-small", "standard", "img1", lambda t: 18 + t / 100, model_params=small, seconds_per_iter=0.004)
    write_run(store, "nint-small", "nint", "img1", lambda t: 19 + t / 100, model_params=small, seconds_per_iter=0.003)
    write_run(store, "std-ffn", "standard", "img1", lambda t: 15 + t / 40, model="ffn")
    write_run(store, "nint-ffn", "nint", "img1", lambda t: 16 + t / 40, model="ffn", seconds_per_iter=1 / 128)
    write_run(store, "xi-img1", "nint[xi=0.5]", "img1", lambda t: 24 + t / 50, params={"xi": 0.5})
    write_run(store, "xi-img2", "nint[xi=0.5]", "img2", lambda t: 21 + t / 50, params={"xi": 0.5})


def tables(root):
    from benchmark.store import load

    runs, metrics = load(root)
    values = report.run_values(runs, metrics, [250, 500, 1000, 2500, 5000], [5.0, 60.0], [25.0, 30.0, 35.0])
    return values


def test_table_a_known_entries(results):
    a = report.table_a(tables(results.root))
    assert list(a.columns) == ["runs", "PSNR@250", "PSNR@1000", "SSIM@1000", "LPIPS@1000"]  # 5000 > the runs
    std, nint = a.loc[("standard",)], a.loc[("nint",)]
    assert std["PSNR@250"].mean == pytest.approx(25.0) and std["PSNR@250"].lo == std["PSNR@250"].hi == pytest.approx(25.0)
    assert nint["PSNR@250"].mean == pytest.approx((30.0 + 23.0) / 2)
    assert (nint["PSNR@250"].lo, nint["PSNR@250"].hi) == pytest.approx((23.0, 30.0))  # two images: CI spans them
    assert nint["PSNR@1000"].mean == pytest.approx((45.0 + 32.0) / 2)
    assert std["SSIM@1000"].mean == pytest.approx(0.9) and std["LPIPS@1000"].mean == pytest.approx(0.1)
    assert nint["runs"] == 2 and a.index[0] == ("standard",)  # the baseline row comes first


def test_table_b_counts_runs_that_never_reach(results):
    b = report.table_b(tables(results.root))
    std, nint = b.loc[("standard",)], b.loc[("nint",)]
    assert std["s to 30 dB"].mean == pytest.approx(5.0) and std["it to 30 dB"].mean == pytest.approx(500)
    assert nint["s to 30 dB"].mean == pytest.approx((2.5 + 8.34) / 2)
    assert nint["it to 30 dB"].mean == pytest.approx((250 + 834) / 2)
    assert nint["reached 30 dB"] == "2/2" and nint["reached 35 dB"] == "1/2"  # img2 never reaches 35 dB
    assert nint["s to 35 dB"].mean == pytest.approx(5.0) and nint["s to 35 dB"].k == 1
    assert nint["Δs 30 dB"] == pytest.approx(100 * (5.42 / 5.0 - 1))
    assert nint["Δs 35 dB"] == pytest.approx(100 * (5.0 / 7.5 - 1))
    assert math.isnan(std["Δs 30 dB"])  # the baseline has no change against itself
    shown = report.text_table(b)
    assert shown.loc[("nint",), "Δs 35 dB"] == "−33.3%"
    assert shown.loc[("nint",), "s to 35 dB"] == "5.00 [5.00, 5.00]"


def test_never_reached_is_a_dash(tmp_path):
    store = Store(tmp_path / "res")
    write_run(store, "low", "uniform", "img1", lambda t: 10 + t / 1000)
    b = report.text_table(report.table_b(tables(store.root)))
    assert b.loc[("uniform",), "s to 30 dB"] == "—" and b.loc[("uniform",), "reached 30 dB"] == "0/1"


def test_tables_c_d_and_ablation_appear_only_with_variants(results):
    values = tables(results.root)
    assert report.table_c(values) is None and report.table_d(values) is None and report.table_ablation(values) is None
    add_variants(results)
    values = tables(results.root)
    c, d, abl = report.table_c(values), report.table_d(values, seconds=(5.0, 60.0)), report.table_ablation(values)
    assert c.index.names == ["model", "net", "label"]
    small_nint = c.loc[("siren", "3×64", "nint")]
    assert small_nint["PSNR@500"].mean == pytest.approx(24.0) and small_nint["train s"].mean == pytest.approx(3.0)
    assert small_nint["Δtime"] == pytest.approx(100 * (3.0 / 4.0 - 1))
    assert [i[1] for i in c.index if i[0] == "siren"][:3] == ["3×64", "3×64", "5×256"]  # by size, not as text
    ffn_nint = d.loc[("ffn", "2×256", "nint")]
    assert ffn_nint["PSNR@5s"].mean == pytest.approx(16 + 640 / 40)  # 5 s at 1/128 s/it = 640 iterations
    assert ffn_nint["s to 25 dB"].mean == pytest.approx(360 / 128)
    assert ffn_nint["Δs 25 dB"] == pytest.approx(100 * (360 / 128 / 4.0 - 1))  # standard ffn: 400 it × 0.01 s
    assert "PSNR@60s" not in d.columns  # no run trains that long
    xi = abl.loc[("siren", "5×256", "nint[xi=0.5]")]
    assert xi["ΔPSNR end vs nint (dB)"] == pytest.approx((44 + 41) / 2 - (45 + 32) / 2)


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    values = rng.normal(30.0, 2.0, size=12)
    mean, lo, hi = report.bootstrap_ci(values, resamples=2000, seed=0)
    assert lo < mean < hi and mean == pytest.approx(values.mean())
    assert hi - lo < 4 * 2.0 / math.sqrt(12) * 1.96  # a sane width for n = 12, sd = 2
    assert report.bootstrap_ci(values, seed=0) == (mean, lo, hi)  # reproducible
    assert report.bootstrap_ci([5.0, np.nan]) == (5.0, 5.0, 5.0)  # NaN dropped; one value: zero width
    assert all(math.isnan(v) for v in report.bootstrap_ci([np.nan]))


def test_cli_writes_every_table_figure_and_the_incomplete_runs(results, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    add_variants(results)
    failed = {name: None for name in RUNS_SCHEMA.names}
    failed.update(run_id="failed-run", status="failed", error="RuntimeError: boom | traceback", image="img1",
                  label="egra", strategy="egra", seed=0)
    results.write_failure(failed)
    write_run(results, "orphan-run", "uniform", "img2", lambda t: 20.0)
    (results.root / "runs" / "orphan-run.parquet").unlink()  # killed between the two writes
    out = tmp_path / "rep"
    assert report.main(["--results", str(results.root), "--out", str(out), "--resamples", "200"]) == 0
    for name in ("table_a", "table_b", "table_c", "table_d", "ablation"):
        for ext in ("md", "tex", "csv"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    for name in ("psnr_vs_iteration", "psnr_vs_seconds", "ssim_vs_iteration", "ssim_vs_seconds", "final_psnr_per_image"):
        assert (out / "figures" / f"{name}.png").is_file() and (out / "figures" / f"{name}.pdf").is_file()
    text = (out / "report.md").read_text()
    assert "failed-run" in text and "RuntimeError: boom" in text and "orphan-run" in text and "orphan" in text
    assert "1/2" in (out / "tables" / "table_b.md").read_text()
    assert "\\begin{tabular}" in (out / "tables" / "table_b.tex").read_text()
    csv = pd.read_csv(out / "tables" / "table_a.csv")
    assert {"PSNR@250", "PSNR@250_lo", "PSNR@250_hi"} <= set(csv.columns)


def test_selection_masks_match_the_budget():
    img = tiny_image(8, 8)
    small = {"depth": 2, "width": 16}
    masks = report.record_selections("uniform", img, [0, 3], mt_ratio=0.25, model_params=small)
    assert sorted(masks) == [0, 3] and all(m.shape == (8, 8) and m.sum() == 16 for m in masks.values())
    assert not np.array_equal(masks[0], masks[3])  # a fresh subset each step
    assert report.record_selections("standard", img, [2], model_params=small)[2].all()
    import strategies

    assert "select" not in vars(strategies.resolve("uniform")[0])  # the wrap is undone after the fit


def test_selection_map_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    path = report.selection_map_figure(["uniform", "int"], tiny_image(8, 8), [0, 2], tmp_path)
    assert path.is_file() and path.with_suffix(".pdf").is_file()


def _journal_with_trials(path, params_per_trial):
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for i, params in enumerate(params_per_trial):
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: FloatDistribution(0.0, 1.0) for k in params}, value=20.0 + i))
    return str(path)


def test_study_plots_skip_importance_with_one_parameter(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    one = _journal_with_trials(tmp_path / "one.journal", [{"mt_ratio": v} for v in (0.1, 0.5, 0.9)])
    summary, paths = report.study_report(one, None, tmp_path / "f1")
    assert {p.stem for p in paths} == {"optuna_history", "optuna_slice"} and "importances skipped" in summary
    two = _journal_with_trials(tmp_path / "two.journal", [{"mt_ratio": v, "xi": 1 - v} for v in (0.1, 0.5, 0.9, 0.3)])
    summary, paths = report.study_report(two, None, tmp_path / "f2")
    assert {p.stem for p in paths} == {"optuna_history", "optuna_importance", "optuna_slice"}
    assert "Best: trial #3" in summary


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(BenchError, match="not a results directory"):
        report.main(["--results", str(tmp_path / "nothing")])
    Store(tmp_path / "empty")
    with pytest.raises(BenchError, match="no finished runs"):
        report.main(["--results", str(tmp_path / "empty")])
    with pytest.raises(BenchError, match="no study journal"):
        report.study_report(str(tmp_path / "missing.journal"), None, tmp_path)
    with pytest.raises(BenchError, match="--iters must be comma-separated numbers"):
        report.main(["--results", str(tmp_path / "empty"), "--iters", "a,b"])


def test_time_curve_stops_where_the_shortest_run_of_a_variant_ends(tmp_path):
    """Two images of one strategy end at different train-seconds: the mean curve must not jump to one image."""
    from benchmark.store import load

    store = Store(tmp_path / "res")
    write_run(store, "a", "nint", "img1", lambda t: 20 + t / 100, seconds_per_iter=0.01)  # ends at 10 s
    write_run(store, "b", "nint", "img2", lambda t: 30 + t / 100, seconds_per_iter=0.02)  # ends at 20 s
    runs, metrics = load(store.root)
    values = report.run_values(runs, metrics, [250], [5.0], [30.0])
    frame = report.curve_frame(values, metrics, "train_seconds", "psnr")
    assert frame["train_seconds"].max() <= 10.0 + 1e-9
    per_x = frame.groupby("train_seconds")["image"].nunique()
    assert (per_x == 2).all()
    mean = frame.groupby("train_seconds")["psnr"].mean()
    assert np.all(np.diff(mean.to_numpy()) >= 0)  # both curves rise, so their mean never drops


def test_psnr_at_seconds_and_time_to_target_with_a_psnr_period(tmp_path):
    """--psnr-every 7 (SSIM rows every 100 carry a PSNR too): PSNR at 5.5 s is the last recorded one (iteration
    546), and 31 dB (reached at t = 550) is first seen at 553."""
    from benchmark.store import load

    store = Store(tmp_path / "res")
    write_run(store, "a", "nint", "img1", lambda t: 20 + t / 50, psnr_every=7)
    runs, metrics = load(store.root)
    values = report.run_values(runs, metrics, [], [5.5], [31.0]).iloc[0]
    assert values["psnr@5.5s"] == pytest.approx(20 + 546 / 50)
    assert values["it_to_31"] == 553


def test_single_strategy_report_and_early_missing_study(tmp_path):
    """One strategy is valid input (seaborn's dodge divides by zero with one hue); a missing --study fails before
    any table or figure is written."""
    store = Store(tmp_path / "res")
    for img in ("img1", "img2"):
        write_run(store, f"u-{img}", "uniform", img, lambda t: 20 + t / 60)
    out = tmp_path / "rep"
    with pytest.raises(BenchError, match="no study journal"):
        report.main(["--results", str(store.root), "--out", str(out), "--study", str(tmp_path / "missing.journal"),
                     "--resamples", "50"])
    assert not out.exists()
    assert report.main(["--results", str(store.root), "--out", str(out), "--resamples", "50"]) == 0
    assert (out / "figures" / "final_psnr_per_image.png").is_file() and (out / "report.md").is_file()
