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
              psnr_every: int = 1, suite: str = "synthetic") -> None:
    """One finished run whose PSNR after t updates is psnr(t) (recorded every `psnr_every` rows and at the end)
    and whose train-seconds are t × seconds_per_iter."""
    t = np.arange(ITERS + 1)
    evaluated = t % 100 == 0
    recorded = (t % psnr_every == 0) | evaluated | (t == ITERS)
    metrics = pd.DataFrame({
        "run_id": run_id, "suite": suite, "image": image, "strategy": label, "seed": seed, "iteration": t,
        "train_seconds": t * seconds_per_iter, "loss": np.nan,
        "psnr": [float(psnr(i)) if r else np.nan for i, r in zip(t, recorded)],
        "ssim": np.where(evaluated, ssim, np.nan), "lpips": np.where(evaluated, lpips, np.nan),
        "sampled_fraction": 0.2,
    })
    row = {name: None for name in RUNS_SCHEMA.names}
    row.update(run_id=run_id, status="ok", suite=suite, image=image, strategy=strategy or label.split("[")[0],
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


def only(results):
    """The one table a builder returned."""
    assert len(results) == 1, [r.name for r in results]
    return results[0]


def test_table_a_known_entries_and_paired_comparison(results):
    a = only(report.table_a(tables(results.root)))
    means = a.means
    assert list(means.columns) == ["runs", "best PSNR ≤250", "best PSNR ≤1000", "SSIM@1000", "LPIPS@1000"]
    std, nint = means.loc[("standard",)], means.loc[("nint",)]
    assert std["best PSNR ≤250"].mean == pytest.approx(25.0)
    assert nint["best PSNR ≤250"].mean == pytest.approx((30.0 + 23.0) / 2)
    assert nint["best PSNR ≤1000"].mean == pytest.approx((45.0 + 32.0) / 2)
    assert std["SSIM@1000"].mean == pytest.approx(0.9) and std["LPIPS@1000"].mean == pytest.approx(0.1)
    assert nint["runs"] == 2 and means.index[0] == ("standard",)  # the baseline row comes first
    assert str(std["best PSNR ≤250"]) == "25.00"  # a mean, no interval of a strategy's own mean
    vs = a.comparisons["standard"]
    c = vs.loc[("nint",), "Δ best PSNR ≤250"]
    assert (c.mean, c.n, c.wins) == (pytest.approx(1.5), 2, 1)  # +5 dB on img1, −2 dB on img2
    assert c.p == pytest.approx(1.0) and math.isnan(c.lo)  # exact Wilcoxon of +5, −2; no interval at n = 2
    assert report.text_table(vs).loc[("nint",), "Δ best PSNR ≤250"] == "+1.50 (n = 2), 1/2 better, p = 1"
    assert vs.loc[("nint",), "Δ LPIPS@1000"].wins == 0  # equal LPIPS: no win either way
    assert ("standard",) not in vs.index and "int" not in a.comparisons  # no int in this store
    assert a.units == [("img1", 0), ("img2", 0)] and a.left_out.empty


def test_paired_table_matches_scipy_on_four_images(tmp_path):
    from scipy import stats

    store = Store(tmp_path / "res")
    offsets = {"i1": 0.0, "i2": 3.0, "i3": -2.0, "i4": 5.0}  # image difficulty, shared by both strategies
    gains = {"i1": 1.0, "i2": 0.4, "i3": 2.0, "i4": -0.5}
    for img, off in offsets.items():
        write_run(store, f"s-{img}", "standard", img, lambda t, o=off: 20 + o + t / 100)
        write_run(store, f"u-{img}", "uniform", img, lambda t, o=off, g=gains[img]: 20 + o + g + t / 100)
        write_run(store, f"e-{img}", "egra", img, lambda t, o=off: 19 + o + t / 100)
    vs = only(report.table_a(tables(store.root))).comparisons["standard"]
    d = np.array(list(gains.values()))
    c = vs.loc[("uniform",), "Δ best PSNR ≤1000"]
    assert c.mean == pytest.approx(d.mean()) and c.wins == 3 and c.n == 4
    assert (c.lo, c.hi) == pytest.approx(stats.t.interval(0.95, 3, loc=d.mean(), scale=stats.sem(d)))
    p_uniform, p_egra = stats.wilcoxon(d).pvalue, stats.wilcoxon(np.full(4, -1.0)).pvalue
    assert c.p == pytest.approx(p_uniform)
    holm = sorted([p_uniform, p_egra])
    expected = {p_egra: 2 * holm[0]} if p_egra <= p_uniform else {}
    e = vs.loc[("egra",), "Δ best PSNR ≤1000"]
    assert e.mean == pytest.approx(-1.0) and e.wins == 0 and e.lo == e.hi == pytest.approx(-1.0)
    assert e.p_holm == pytest.approx(expected.get(p_egra, p_egra))
    assert c.p_holm == pytest.approx(max(2 * min(p_uniform, p_egra), max(p_uniform, p_egra)))


def test_a_strategy_missing_one_image_is_not_averaged_over_another_set(tmp_path):
    store = Store(tmp_path / "res")
    for img, off in (("img1", 0.0), ("img2", 2.0), ("img3", 9.0)):
        write_run(store, f"s-{img}", "standard", img, lambda t, o=off: 20 + o + t / 100)
    for img, off in (("img1", 0.0), ("img2", 2.0)):
        write_run(store, f"n-{img}", "nint", img, lambda t, o=off: 21 + o + t / 100)
    failed = {("nint", "img3", 0)}
    a = only(report.table_a(tables(store.root), failed=failed))
    assert a.means.loc[("standard",), "best PSNR ≤1000"].mean == pytest.approx(30 + 1.0)  # img1, img2 only
    assert a.means.loc[("standard",), "runs"] == 2 and a.units == [("img1", 0), ("img2", 0)]
    assert a.left_out.to_dict("records") == [{"image": "img3", "seed": 0, "label": "nint", "reason": "failed"}]
    assert "Left out: img3 seed 0 (nint: failed)" in a.note
    assert a.per_image.loc[("standard", "img3", 0), "in means"] == False  # noqa: E712 - listed, not averaged
    # a strategy on one of four images gets a table of its own, with the baseline on that image
    write_run(store, "s-img4", "standard", "img4", lambda t: 25 + t / 100)
    write_run(store, "n-img4", "nint", "img4", lambda t: 26 + t / 100)
    write_run(store, "u-img1", "uniform", "img1", lambda t: 19 + t / 100)
    parts = report.table_a(tables(store.root))
    assert [p.name for p in parts] == ["table_a", "table_a_uniform"]
    assert "uniform" not in parts[0].means.index.get_level_values("label") and "own" in parts[0].note
    assert list(parts[1].means.index) == [("standard",), ("uniform",)] and parts[1].units == [("img1", 0)]


def test_a_store_of_two_suites_gets_each_suites_own_tables(tmp_path):
    """Two suites have different images: no table averages over both (and none is left empty)."""
    store = Store(tmp_path / "res")
    for suite, images, offset in (("kodak", ("kodim01", "kodim02", "kodim03"), 0.0), ("div2k16", ("00", "01"), 5.0)):
        for i, img in enumerate(images):
            write_run(store, f"s-{img}", "standard", img, lambda t, o=offset + i: 20 + o + t / 100, suite=suite)
            write_run(store, f"n-{img}", "nint", img, lambda t, o=offset + i: 21 + o + t / 100, suite=suite)
    built = report.build_report(store.root, tmp_path / "out", html=False, resamples=10)
    a = {name: built["tables"][name] for name in ("table_a_kodak", "table_a_div2k16")}
    assert "table_a" not in built["tables"]
    assert a["table_a_kodak"].units == [("kodim01", 0), ("kodim02", 0), ("kodim03", 0)]
    assert a["table_a_div2k16"].units == [("00", 0), ("01", 0)] and "(suite div2k16)" in a["table_a_div2k16"].caption
    assert a["table_a_kodak"].means.loc[("standard",), "best PSNR ≤1000"].mean == pytest.approx(31.0)  # 30 + 0, 1, 2
    assert a["table_a_div2k16"].means.loc[("nint",), "best PSNR ≤1000"].mean == pytest.approx(36.5)  # 31 + 5, 6
    assert a["table_a_kodak"].comparisons["standard"].loc[("nint",), "Δ best PSNR ≤1000"].n == 3


def test_diverged_pairs_are_left_out_and_named(tmp_path):
    store = Store(tmp_path / "res")
    for img in ("img1", "img2"):
        write_run(store, f"s-{img}", "standard", img, lambda t: 20 + t / 100)
        write_run(store, f"n-{img}", "nint", img, lambda t: 21 + t / 100)
    row = pd.read_parquet(store.root / "runs" / "n-img2.parquet")
    row["status"] = "diverged"
    row.to_parquet(store.root / "runs" / "n-img2.parquet")
    a = only(report.table_a(tables(store.root)))
    assert a.units == [("img1", 0)] and a.left_out["reason"].tolist() == ["diverged"]


def test_three_psnr_readings():
    """A transient drop (Adam on SIREN): at 250 the PSNR is down, the best so far is not, the last-5% median
    (iterations 238–250) sits between."""
    from benchmark.analysis import psnr_readings

    t = np.arange(1001)
    psnr = 20 + t / 50.0
    psnr[245:251] = 10.0
    m = pd.DataFrame({"run_id": "r", "iteration": t, "psnr": psnr})
    r = psnr_readings(m, [250, 1000, 2000]).loc["r"]
    assert r["at@250"] == 10.0 and r["best@250"] == pytest.approx(20 + 244 / 50)
    assert r["last5@250"] == pytest.approx(float(np.median(psnr[238:251])))
    assert r["at@1000"] == r["best@1000"] == pytest.approx(40.0)
    assert math.isnan(r["best@2000"])  # the run is shorter than 2000 iterations
    assert report.reading_name("last5", 250) == "median PSNR 238–250"


def test_table_a_reading_switch(tmp_path):
    store = Store(tmp_path / "res")
    write_run(store, "d", "nint", "img1", lambda t: 10.0 if 240 <= t <= 250 else 20 + t / 50)
    values = tables(store.root)
    best = only(report.table_a(values)).means.loc[("nint",), "best PSNR ≤250"].mean
    at = only(report.table_a(values, reading="at")).means.loc[("nint",), "PSNR at 250"].mean
    assert best == pytest.approx(20 + 239 / 50) and at == pytest.approx(10.0)
    readings = only(report.table_readings(values)).means
    assert {"PSNR at 250", "best PSNR ≤250", "median PSNR 238–250"} <= set(readings.columns)


def test_table_b_censored_targets(results):
    b = only(report.table_b(tables(results.root)))
    means = b.means
    std, nint = means.loc[("standard",)], means.loc[("nint",)]
    assert str(std["it to 30 dB"]) == "500" and str(std["s to 30 dB"]) == "5.00"
    assert nint["reached 30 dB"] == "2/2" and nint["reached 35 dB"] == "1/2"  # img2 never reaches 35 dB
    assert str(nint["it to 35 dB"]) == ">1000" and str(nint["s to 35 dB"]) == ">10.00"  # median: not reached
    assert str(nint["it to 30 dB"]) == f"{(250 + 834) / 2:.0f}"
    vs = b.comparisons["standard"]
    r30 = vs.loc[("nint",), "it to 30 dB ratio"]
    assert r30.n == 2 and r30.mean == pytest.approx(math.sqrt(250 / 500 * 834 / 500)) and r30.wins == 1
    r35 = vs.loc[("nint",), "s to 35 dB ratio"]
    assert r35.n == 1 and r35.mean == pytest.approx(500 / 750)  # only img1: both reached there
    assert b.timing == "CPU, exclusive, fp32, eager, PSNR every 1, measured" and b.timing in b.caption


def test_never_reached_is_censored(tmp_path):
    store = Store(tmp_path / "res")
    write_run(store, "low", "uniform", "img1", lambda t: 10 + t / 1000)
    b = report.text_table(only(report.table_b(tables(store.root))).means)
    assert b.loc[("uniform",), "s to 30 dB"] == ">10.00" and b.loc[("uniform",), "reached 30 dB"] == "0/1"


def _set_config(store: Store, run_id: str, **changes) -> None:
    path = store.root / "runs" / f"{run_id}.parquet"
    row = pd.read_parquet(path)
    cfg = json.loads(row.loc[0, "config"])
    for key, value in changes.items():
        if key in row.columns:
            row[key] = value
        else:
            cfg[key] = value
    row["config"] = json.dumps(cfg)
    row.to_parquet(path)


def test_time_tables_never_mix_timing_groups(results):
    _set_config(results, "std-img2", tf32=True)
    _set_config(results, "nint-img2", tf32=True)
    values = tables(results.root)
    with pytest.raises(BenchError, match=r"^table t would mix 2 timing groups \(CPU, exclusive, fp32, eager"):
        report.build_table(values, "t", "T", report.target_columns(30.0), ["label"])
    parts = report.table_b(values)
    assert [p.name for p in parts] == ["table_b_t1", "table_b_t2"]
    assert [p.units for p in parts] == [[("img1", 0)], [("img2", 0)]] and "tf32" in parts[1].caption
    assert only(report.table_a(values)).units == [("img1", 0), ("img2", 0)]  # iteration tables may mix


def test_shared_device_runs_get_no_time_columns(results):
    for run_id in ("std-img1", "std-img2", "nint-img1", "nint-img2"):
        _set_config(results, run_id, execution_mode="shared-2")
    b = only(report.table_b(tables(results.root)))
    assert "s to 30 dB" not in b.means.columns and "it to 30 dB" in b.means.columns
    assert "shared device" in b.caption


def test_tables_c_d_and_ablation_appear_only_with_variants(results):
    values = tables(results.root)
    assert report.table_c(values) == [] and report.table_d(values) == [] and report.table_ablation(values) == []
    add_variants(results)
    values = tables(results.root)
    c = only(report.table_c(values))
    assert c.means.index.names == ["model", "net", "label"] and c.units == [("img1", 0)]
    small_nint = c.means.loc[("siren", "3×64", "nint")]
    assert small_nint["best PSNR ≤500"].mean == pytest.approx(24.0) and small_nint["train s"].mean == pytest.approx(3.0)
    ratio = c.comparisons["standard"].loc[("siren", "3×64", "nint"), "train s ratio"]
    assert ratio.mean == pytest.approx(3.0 / 4.0) and ratio.n == 1  # against standard of the same net
    assert [i[1] for i in c.means.index if i[0] == "siren"][:3] == ["3×64", "3×64", "5×256"]  # by size, not as text
    d = only(report.table_d(values, seconds=(5.0, 60.0)))
    ffn_nint = d.means.loc[("ffn", "2×256", "nint")]
    assert ffn_nint["PSNR@5s"].mean == pytest.approx(16 + 640 / 40)  # 5 s at 1/128 s/it = 640 iterations
    assert str(ffn_nint["s to 25 dB"]) == f"{360 / 128:.2f}"
    assert d.comparisons["standard"].loc[("ffn", "2×256", "nint"), "s to 25 dB ratio"].mean == pytest.approx(
        360 / 128 / 4.0)  # standard ffn: 400 it × 0.01 s
    assert "PSNR@60s" not in d.means.columns  # no run trains that long
    abl = only(report.table_ablation(values))
    xi = abl.comparisons["nint"].loc[("siren", "5×256", "nint[xi=0.5]"), "Δ best PSNR ≤1000"]
    assert xi.mean == pytest.approx(44 - 45) and xi.n == 1  # img1 only: the 3×64 nint ran there alone


def test_bootstrap_band_brackets_the_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    values = rng.normal(30.0, 2.0, size=12)
    mean, lo, hi = report.bootstrap_ci(values, resamples=2000, seed=0)
    assert lo < mean < hi and mean == pytest.approx(values.mean())
    assert report.bootstrap_ci(values, seed=0) == (mean, lo, hi)  # reproducible
    assert all(math.isnan(v) for v in report.bootstrap_ci([np.nan]))


def test_latex_escaping():
    assert report.latex_escape("Δ 5% a_b & #1 $x") == r"$\Delta$ 5\% a\_b \& \#1 \$x"
    assert report.latex_escape("best PSNR ≤250 −0.4 [−1, 2×]") == r"best PSNR $\le$250 $-$0.4 [$-$1, 2$\times$]"
    assert report.latex_escape("ü") == "?"  # never an error in pdflatex


def compile_latex(paths) -> None:
    """pdflatex every table (inside a minimal document); skipped where pdflatex is not installed."""
    import shutil
    import subprocess

    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed")
    for path in paths:
        doc = path.with_name(path.stem + "-doc.tex")
        doc.write_text("\\documentclass{article}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
                       "\\begin{document}\n\\input{" + path.name + "}\n\\end{document}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=path.parent,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{path.name}: " + done.stdout[-800:]


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
    written = sorted(p.stem for p in (out / "tables").glob("*.md"))
    for name in ("table_a", "table_b", "table_c", "table_d", "ablation"):
        for suffix in ("", "_per_image", "_vs_standard" if name != "ablation" else "_vs_nint"):
            assert f"{name}{suffix}" in written
            for ext in ("md", "tex", "csv"):
                assert (out / "tables" / f"{name}{suffix}.{ext}").stat().st_size > 0
    for name in ("psnr_vs_iteration", "psnr_vs_seconds", "ssim_vs_iteration", "ssim_vs_seconds", "final_psnr_per_image"):
        assert (out / "figures" / f"{name}.png").is_file() and (out / "figures" / f"{name}.pdf").is_file()
    text = (out / "report.md").read_text()
    assert "failed-run" in text and "RuntimeError: boom" in text and "orphan-run" in text and "orphan" in text
    assert "img2 seed 0" in (out / "tables" / "table_b.md").read_text()  # left out: the small nets ran on img1 only
    tex = (out / "tables" / "table_b.tex").read_text()
    assert "\\begin{tabular}" in tex and "%" not in tex.replace("\\%", "") and "Δ" not in tex
    csv = pd.read_csv(out / "tables" / "table_a_vs_standard.csv")
    assert {"Δ best PSNR ≤250", "Δ best PSNR ≤250_lo", "Δ best PSNR ≤250_p_holm"} <= set(csv.columns)
    compile_latex(sorted((out / "tables").glob("*.tex")))


def test_a_regenerated_report_has_the_same_bytes(results, tmp_path):
    """Regenerating a committed report from unchanged runs must not change its files (no timestamp in a PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert report.main(["--results", str(results.root), "--out", str(out), "--resamples", "200", "--no-html"]) == 0
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert any(p.suffix == ".pdf" for p in files)
    changed = [p for p in files if (first / p).read_bytes() != (second / p).read_bytes()]
    assert changed == []


def test_build_report_returns_every_table_for_other_writers(results, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    result = report.build_report(results.root, tmp_path / "rep", resamples=50)
    assert set(result["tables"]) == {"table_a", "psnr_readings", "table_b"}
    kinds = {name: entry["kind"] for name, entry in result["written"].items()}
    assert kinds["table_a"] == "means" and kinds["table_a_vs_standard"] == "comparison"
    assert kinds["table_a_per_image"] == "per_image" and result["written"]["table_a_vs_standard"]["of"] == "table_a"
    assert all((tmp_path / "rep" / "tables" / f"{name}.csv").is_file() for name in result["written"])
    assert result["markdown"] == (tmp_path / "rep" / "report.md").read_text()
    with pytest.raises(BenchError, match="--baseline 'int' is not a label"):
        report.build_report(results.root, tmp_path / "rep2", baseline="int")


def test_labels_report_a_subset_of_the_store(results, tmp_path):
    """--labels keeps a partly run arm out of the tables, so it neither shrinks their image set nor gets one."""
    import matplotlib

    matplotlib.use("Agg")
    write_run(results, "xi-img1", "nint[xi=0.5]", "img1", lambda t: 24 + t / 50, params={"xi": 0.5})
    everything = report.build_report(results.root, tmp_path / "all", resamples=20, html=False)
    assert everything["tables"]["table_a"].units == [("img1", 0)]  # the arm on half the images shrinks the set
    assert report.main(["--results", str(results.root), "--out", str(tmp_path / "sub"), "--labels", "nint,standard",
                        "--resamples", "20", "--no-html"]) == 0
    text = (tmp_path / "sub" / "report.md").read_text()
    assert "labels: `nint`, `standard`. Left out by `--labels`: `nint[xi=0.5]`." in text
    assert sorted(p.stem for p in (tmp_path / "sub" / "tables").glob("*.csv") if "xi" in p.stem) == []
    a = pd.read_csv(tmp_path / "sub" / "tables" / "table_a_per_image.csv")
    assert sorted(a["label"].unique()) == ["nint", "standard"] and len(a) == 4 and a["in means"].all()
    assert not (tmp_path / "sub" / "tables" / "ablation.csv").exists()  # one nint-family label left: no ablation
    for bad in ("nint,egra", ""):
        with pytest.raises(BenchError, match=r"^--labels (egra: not a|names no) label of .*; it has nint, nint\[xi=0.5\], standard$"):
            report.main(["--results", str(results.root), "--out", str(tmp_path / "bad"), "--labels", bad])


def test_selection_masks_match_the_budget():
    img = tiny_image(8, 8)
    small = {"depth": 2, "width": 16}
    masks = report.record_selections("uniform", img, [0, 3], mt_ratio=0.25, model_params=small)
    assert sorted(masks) == [0, 3] and all(m.shape == (8, 8) and m.sum() == 16 for m in masks.values())
    assert not np.array_equal(masks[0], masks[3])  # a fresh subset each step
    assert report.record_selections("standard", img, [2], model_params=small)[2].all()
    import strategies

    assert "select" not in vars(strategies.resolve("uniform")[0])  # the class is never patched


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
