"""The HTML page of a synthetic store: its content from Python, and its behaviour in headless Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import html_report, report
from benchmark.store import RUNS_SCHEMA, Store, load

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def write_run(store: Store, label: str, image: str, psnr, iters: int = 1000, seconds_per_iter: float = 0.01) -> None:
    """A finished run whose PSNR after t updates is psnr(t) (every update), SSIM every 50 updates."""
    t = np.arange(iters + 1)
    run_id = f"{label}-{image}"
    metrics = pd.DataFrame({
        "run_id": run_id, "suite": "synthetic", "image": image, "strategy": label, "seed": 0, "iteration": t,
        "train_seconds": t * seconds_per_iter, "loss": np.nan, "psnr": [float(psnr(i)) for i in t],
        "ssim": np.where(t % 50 == 0, 0.5 + t / (4 * iters), np.nan), "lpips": np.nan, "sampled_fraction": 0.2,
    })
    row = {name: None for name in RUNS_SCHEMA.names}
    row.update(run_id=run_id, status="ok", suite="synthetic", image=image, strategy=label, label=label, seed=0,
               iters=iters, mt_ratio=0.2, ratio_schedule="constant", interval="dense", model="siren", lr=1e-4,
               lr_schedule="constant", params="{}", model_params="{}", config=json.dumps({"max_size": 0}),
               device="cpu", execution_mode="exclusive", versions=json.dumps({"git_commit": "abc1234"}),
               train_seconds=iters * seconds_per_iter, ms_per_iter=1000 * seconds_per_iter,
               final_psnr=float(psnr(iters)), final_ssim=0.75, final_lpips=np.nan)
    store.write_run(metrics, row)


@pytest.fixture
def store(tmp_path):
    """standard: 20 + t/50 dB (img1), 22 + t/50 (img2); nint 2 dB above; uniform falls from 30 dB (best: 30)."""
    s = Store(tmp_path / "res")
    for img, offset in (("img1", 0.0), ("img2", 2.0)):
        write_run(s, "standard", img, lambda t, o=offset: 20 + o + t / 50)
        write_run(s, "nint", img, lambda t, o=offset: 22 + o + t / 50, seconds_per_iter=0.005)
        write_run(s, "uniform", img, lambda t, o=offset: 30 + o - t / 100, seconds_per_iter=0.004)
    return s


def page_data(path: Path) -> dict:
    text = path.read_text()
    blob = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(blob.replace("<\\/", "</"))


def test_page_renders_given_tables_and_curves(store, tmp_path):
    """Any DataFrame (text cells, MultiIndex rows) is shown as given; curves are thinned, their values exact."""
    runs, metrics = load(store.root)
    table = pd.DataFrame({"Δ PSNR": ["+1.50 [1.2, 1.8]", "—"], "wins": ["2/2", "0/2"]},
                         index=pd.MultiIndex.from_tuples([("siren", "nint"), ("siren", "uniform")],
                                                         names=["model", "label"]))
    png = tmp_path / "selection_maps.png"
    import matplotlib.pyplot as plt

    plt.imsave(png, np.zeros((4, 4, 3)))
    path = html_report.write_html(tmp_path / "out", runs, metrics, {"paired": (table, "Δ vs standard")}, None,
                                  [png, tmp_path / "psnr_vs_iteration.png"], html_report.store_header("res", runs))
    text = path.read_text()
    assert '<a href="#per-image-nint">nint</a>' in text and 'id="per-image-nint"' in text
    assert '<td data-sort="1.5">+1.50 [1.2, 1.8]</td>' in text and "<td>—</td>" in text
    assert "data:image/png;base64," in text and "selection maps" in text  # embedded; the redrawn one is not read
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", text)  # nothing loaded from elsewhere
    assert "abc1234" in text and "exclusive" in text
    curves = page_data(path)["curves"]
    assert curves["variants"] == ["standard", "nint", "uniform"]
    psnr = curves["plots"]["psnr-iteration"]
    assert len(psnr["x"]) == html_report.CURVE_POINTS < 1001  # 1001 recorded iterations, thinned for display
    std = psnr["readings"]["at"]["standard"]
    x = np.array(psnr["x"], dtype=float)
    np.testing.assert_allclose(std["mean"], np.round(21 + x / 50, 2), atol=0.011)  # mean of img1 and img2
    assert std["lo"][-1] < std["mean"][-1] < std["hi"][-1]
    best = psnr["readings"]["best"]["uniform"]["images"]["img1"]
    assert best[0] == best[-1] == 30.0 and psnr["readings"]["at"]["uniform"]["images"]["img1"][-1] == 20.0
    assert len(curves["plots"]["ssim-iteration"]["x"]) == 21  # SSIM recorded every 50 updates: 21 values


def test_html_is_on_by_default_and_can_be_left_out():
    assert report.parser().parse_args(["--results", "r"]).html is True
    assert report.parser().parse_args(["--results", "r", "--no-html"]).html is False


def _browser():
    """A headless Chromium through playwright, fresh profile, no network; skips when chromium is absent locally."""
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        why = ("Debian's chromium is not installed (apt-get install chromium)" if exe is None
               else "playwright is not installed (pip install -r requirements.txt)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test must run in CI: {why}")
        pytest.skip(why)
    return exe, sync_playwright


def test_page_in_headless_chromium(store, tmp_path):
    exe, sync_playwright = _browser()
    out = tmp_path / "report"
    result = report.build_report(store.root, out, resamples=200)
    page_path = result["html"]
    assert page_path == out / "index.html"
    csv = pd.read_csv(out / "tables" / "table_a.csv", index_col="label")
    expected = f"{csv.loc['nint', 'best PSNR ≤250']:.2f}"

    errors, requests = [], []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=exe,
                                                        headless=True, args=CHROMIUM_ARGS,
                                                        viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def route(r):
                requests.append(r.request.url)
                (r.continue_() if r.request.url.startswith("file://") else r.abort())
            page.route("**/*", route)
            page.goto(page_path.as_uri())
            page.wait_for_selector("body[data-ready=yes]", timeout=15000)
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5")

            # a table cell is the CSV's value
            cell = page.evaluate("""() => {
                const t = document.getElementById('table-table_a-body');
                const col = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent === 'best PSNR ≤250');
                const row = Array.from(t.tBodies[0].rows).find(r => r.cells[0].textContent === 'nint');
                return row.cells[col].textContent; }""")
            assert cell.split(" ")[0] == expected

            # sorting by a column puts the highest PSNR first on the second click
            heading = page.locator("#table-table_a-body thead th", has_text="best PSNR ≤250")
            heading.click()
            heading.click()
            assert page.locator("#table-table_a-body tbody tr").first.locator("th").first.inner_text() == "uniform"

            # a real click on a legend entry hides that strategy's line and band
            plot = "#plot-psnr-iteration"
            drawn = f"document.querySelectorAll('{plot} .scatterlayer .trace').length"
            visible = f"document.querySelector('{plot}').data.filter(t => t.legendgroup === 'nint').map(t => t.visible)"
            assert page.evaluate(drawn) == 6 and page.evaluate(visible) == [True, True]
            page.locator(f"{plot} .legend .traces", has_text="nint").click()
            page.wait_for_function(f"{visible}.every(v => v === 'legendonly')", timeout=5000)
            assert page.evaluate(drawn) == 4

            # the image selector shows one image's line per strategy (no band); the hidden one stays hidden
            page.select_option("#image", "img2")
            page.wait_for_function(f"document.querySelector('{plot}').data.length === 3")
            assert page.evaluate(visible) == ["legendonly"]
            last = f"document.querySelector('{plot}').data.find(t => t.name === 'uniform').y.slice(-1)[0]"
            assert page.evaluate(last) == pytest.approx(22.0)
            page.select_option("#reading", "best")
            page.wait_for_function(f"{last} === 32")

            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            context.close()
    assert errors == []
    assert requests and all(u.startswith("file://") for u in requests), requests
