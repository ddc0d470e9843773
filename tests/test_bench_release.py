"""benchmark.bench_release on the CPU, against a stand-in for the released code that writes known timestamps."""
from __future__ import annotations

import json
import textwrap

import cv2
import pytest

from benchmark import bench_release
from conftest import tiny_image

FAKE_TRAIN_IMAGE = textwrap.dedent("""
    import os, pickle, sys
    import wandb, lpips, torchaudio  # the release imports these at start-up: the stubs must satisfy it
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    n = int(args["TRAIN_CONFIGS.iterations"])
    seed = int(args["TRAIN_CONFIGS.seed"])
    assert os.path.isfile(args["DATASET_CONFIGS.file_path"]) and args["METRIC_LOGGING.log_lpips"] == "0"
    no_io = args.get("TRAIN_CONFIGS.no_io") == "1"
    step = 0.004 if no_io else (0.008 if "METRIC_LOGGING.log_ssim" in args else 0.05)
    psnr = [0 if no_io else 20.0 + seed + t / 100 for t in range(n)]
    os.makedirs("outputs/run", exist_ok=True)
    with open("outputs/run/metrics_history_run-1.pkl", "wb") as f:
        pickle.dump({"iterations": list(range(n)), "timestamps": [step * (t + 1) for t in range(n)],
                     "psnr": psnr}, f)
""")


@pytest.fixture
def fake_release(tmp_path):
    release = tmp_path / "release"
    (release / "images").mkdir(parents=True)
    (release / "train_image.py").write_text(FAKE_TRAIN_IMAGE)
    # The lpips stub subclasses torch.nn.Module; this stand-in torch has just that, so the stand-in release's
    # five runs start in a fraction of a second instead of importing the real torch five times.
    (release / "torch.py").write_text("import types\nnn = types.SimpleNamespace(Module=type('Module', (), {}))\n")
    cv2.imwrite(str(release / "images" / "01.png"), tiny_image(8, 8))
    return release


def test_release_side_by_side_reads_the_release_timestamps(fake_release, tmp_path):
    out = tmp_path / "bench"
    code = bench_release.main(["--release-dir", str(fake_release), "--iters", "24", "--seeds", "0,1",
                               "--strategies", "nint-released", "--variants", "fp32,max-autotune+tf32",
                               "--out", str(out)])
    assert code == 0
    report = json.loads(next(out.glob("release-*.json")).read_text())
    rows = {r["name"]: r for r in report["summary"]}
    assert rows["release train"]["ms"] == pytest.approx(4.0)
    assert rows["release psnr"]["ms"] == pytest.approx(8.0)
    assert rows["release default"]["ms"] == pytest.approx(50.0) and rows["release default"]["seeds"] == 1
    assert rows["release psnr"]["psnr"] == pytest.approx(20.0 + 0.5 + 0.23)  # mean of seeds 0, 1 at t = 23
    ours = rows["ours nint-released train"]
    assert ours["seeds"] == 2 and ours["ratio_vs_release"] == pytest.approx(ours["ms"] / 4.0)
    assert ours["psnr_minus_release"] == pytest.approx(ours["psnr"] - rows["release psnr"]["psnr"])
    assert {"wandb", "lpips"} <= set(report["stubbed_modules"])
    assert rows["ours nint-released max-autotune+tf32 train"]["seeds"] == 2
    assert list(report["compile_s"]) == ["nint-released max-autotune+tf32"]  # measured apart, fp32 compiles nothing
    variant = rows["ours nint-released max-autotune+tf32 train"]
    runs = {(r["variant"], r["seed"]): r["psnr"] for r in report["ours"]}
    diffs = [b - a for s in (0, 1) for a, b in zip(runs["fp32", s], runs["max-autotune+tf32", s])]
    assert variant["vs_fp32_max_abs_db"] >= variant["vs_fp32_mean_abs_db"] >= 0
    assert variant["vs_fp32_max_abs_db"] <= max(abs(d) for d in diffs) + 1e-9
    last = (runs["max-autotune+tf32", 0][-1] + runs["max-autotune+tf32", 1][-1]
            - runs["fp32", 0][-1] - runs["fp32", 1][-1]) / 2
    assert variant["vs_fp32_last_db"] == pytest.approx(last)
    assert "vs_fp32_last_db" not in ours  # fp32 against itself is not reported


def test_release_side_by_side_bad_input(fake_release, tmp_path, capsys):
    assert bench_release.main(["--release-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "has no train_image.py" in capsys.readouterr().err
    assert bench_release.main(["--release-dir", str(fake_release), "--variants", "bf16",
                               "--out", str(tmp_path / "o")]) == 2
    assert "unknown variant 'bf16'" in capsys.readouterr().err
    (fake_release / "train_image.py").write_text("raise SystemExit('boom: no GPU')\n")
    assert bench_release.main(["--release-dir", str(fake_release), "--iters", "24", "--seeds", "0",
                               "--out", str(tmp_path / "o")]) == 2
    assert "train_image.py failed (train, seed 0): boom: no GPU" in capsys.readouterr().err
