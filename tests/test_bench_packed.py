"""benchmark/bench_packed.py runs its CPU-capable parts end to end on tiny images and writes its JSON."""
from __future__ import annotations

import json

import cv2

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
    assert report["b"]["max_abs_dpsnr"] < 1e-6  # packed = unpacked on the CPU
    assert {r["image"] for r in report["c"]["rows"]} == {"kodim01", "kodim02", "kodim03"}
    assert "(a) NINT" in capsys.readouterr().out
