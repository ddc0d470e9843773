"""benchmark/bench_packed.py runs its CPU-capable parts end to end on tiny images and writes its JSON."""
from __future__ import annotations

import json

import cv2
import numpy as np

from benchmark import bench_packed
from conftest import tiny_image


def test_bench_packed_parts_a_b_c_run_and_write_json(tmp_path, capsys):
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    for i in range(8):
        cv2.imwrite(str(kodak / f"kodim{i + 1:02d}.png"), tiny_image(6, 8, seed=i)[..., ::-1])
    out = tmp_path / "bench"
    assert bench_packed.main(["--kodak-dir", str(kodak), "--parts", "a,b,c", "--iters-a", "3", "--iters-b", "3",
                              "--iters-c", "3", "--strategies-c", "uniform", "--device", "cpu",
                              "--out", str(out)]) == 0
    report = json.loads((out / "packed-cpu.json").read_text())
    assert [r["K"] for r in report["a"]["rows"]] == [1, 4, 8]
    b = report["b"]["strategies"]
    assert set(b) == {"nint", "uniform", "int"}
    # PSNR rows are float32 and bmm sums in another order than mm on some CPUs: equal to a few float32 ulps
    for r in b.values():
        ulp = np.spacing(np.float32(max(row["final_psnr_alone"] for row in r["rows"])))
        assert r["max_abs_dpsnr"] <= 4 * ulp and r["max_abs_dpsnr_rerun"] == 0 and r["met"]
    assert {r["image"] for r in report["c"]["rows"]} == {"kodim01", "kodim02", "kodim03"}
    assert "(a) NINT 8×6, exclusive" in capsys.readouterr().out
    assert report["a"]["gemm_floor"]["floor_ms"] > 0 and report["a"]["floor_ratio"] > 0
    assert report["numerics"] == "fp32" and report["a"]["gemm_floor"]["numerics"] == "fp32"


def test_the_gemm_floor_counts_the_median_nint_steps_matrix_products():
    """A steady NINT step is a full no-grad forward plus forward and backward on its 20 % batch; the input
    coordinates need no gradient, so the first layer's input-gradient product is not done."""
    import torch

    img = tiny_image(12, 16)
    strat, opt, t = bench_packed.steady_nint(img, "cpu")
    linears = [m for m in strat.task.model.modules() if isinstance(m, torch.nn.Linear)]
    per_pixel = sum(2 * m.in_features * m.out_features for m in linears)
    first = 2 * linears[0].in_features * linears[0].out_features
    n, b = strat.task.n_pixels, strat.task.budget(t)
    assert strat.step_kind(t) == "scoring"
    assert bench_packed.step_flops(strat, opt, t) == per_pixel * n + (3 * per_pixel - first) * b
