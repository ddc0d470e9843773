"""benchmark.bench_host on the CPU: it runs the suite's own steps, writes its JSON, reprints it, refuses bad modes."""
from __future__ import annotations

import json

import cv2
import pytest

from benchmark import bench_host
from conftest import tiny_image


def test_bench_host_measures_writes_and_reprints(tmp_path, capsys):
    image = tmp_path / "tiny.png"
    cv2.imwrite(str(image), tiny_image()[..., ::-1])
    out = tmp_path / "bench"
    assert bench_host.main(["--image", str(image), "--strategies", "uniform,int", "--modes", "eager",
                            "--steps", "3", "--profile-steps", "1", "--out", str(out)]) == 0
    report = json.loads((out / "host-cpu.json").read_text())
    assert report["image_size"] == [12, 16]
    assert [(r["strategy"], r["mode"]) for r in report["rows"]] == [("uniform", "eager"), ("int", "eager")]
    for r in report["rows"]:
        assert r["host_ms"] > 0 and r["gpu_ms"] == r["host_ms"] and r["kernel_ms"] is None  # no GPU clock here
    capsys.readouterr()
    assert bench_host.main(["--table", str(out / "host-cpu.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[:2] == ["uniform", "eager"] and lines[2].split()[:2] == ["int", "eager"]


def test_bench_host_refuses_an_unknown_mode(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_host.main(["--image", str(tmp_path / "x.png"), "--modes", "default,turbo"])
    assert exc.value.code == 2
    assert "unknown mode(s) turbo; choose from eager, default, graph-steps, max-autotune" in capsys.readouterr().err
