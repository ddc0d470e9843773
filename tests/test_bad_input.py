"""Bad input gives one line that names the problem and the fix: through the CLI, exit status 2, no traceback."""
from __future__ import annotations

import json
import imageio.v3 as iio
import numpy as np
import pytest

import run_benchmark
from conftest import tiny_image

TINY = ["--max-size", "16", "--iters", "3", "--model-param", "depth=2", "--model-param", "width=8",
        "--no-progress", "--no-lpips"]


def cli_error(capsys, *args) -> str:
    code = run_benchmark.main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("ratio", ["0", "-0.1", "1.5", "nan"])
def test_mt_ratio_outside_0_1(capsys, tmp_path, ratio):
    msg = cli_error(capsys, "--suite", "builtin", "--mt-ratio", ratio, "--out", str(tmp_path), *TINY)
    assert "mt_ratio must be in (0, 1]" in msg and "--mt-ratio 0.2" in msg


@pytest.mark.parametrize("args, expected", [
    (["--strategies", "bogus"], "unknown strategy 'bogus'; choose from:"),
    (["--suite", "nosuch"], "unknown suite 'nosuch'"),
    (["--preset", "nosuch"], "unknown preset 'nosuch'"),
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--iters", "-5"], "iters must be a whole number >= 1"),
    (["--lr", "0"], "lr must be a positive number"),
    (["--strategies", "nint[xi=0.8,ntk_share=0.5]"], "xi + ntk_share must be at most 1"),
    (["--strategies", "nint[bogus=1]"], "has no parameter(s) bogus"),
    (["--seeds", "a,b"], "--seeds must be comma-separated whole numbers"),
    (["--suite", "/nonexistent/img.png"], "image not found: /nonexistent/img.png"),
])
def test_invalid_arguments(capsys, tmp_path, args, expected):
    assert expected in cli_error(capsys, "--suite", "builtin", *TINY, *args, "--out", str(tmp_path))


def test_corrupt_png(capsys, tmp_path):
    path = tmp_path / "cut.png"
    iio.imwrite(path, tiny_image(40, 40))
    path.write_bytes(path.read_bytes()[:60])
    msg = cli_error(capsys, "--suite", str(path), "--out", str(tmp_path / "r"), *TINY)
    assert f"cannot read image {path}" in msg and "valid image file" in msg


def test_grayscale_and_rgba_are_refused_unless_converted(capsys, tmp_path):
    gray, rgba = tmp_path / "g" / "gray.png", tmp_path / "a" / "rgba.png"
    for p in (gray, rgba):
        p.parent.mkdir()
    iio.imwrite(gray, tiny_image(20, 20)[:, :, 0])
    iio.imwrite(rgba, np.dstack([tiny_image(20, 20), np.full((20, 20), 255, np.uint8)]))
    assert "is grayscale, not RGB" in cli_error(capsys, "--suite", str(gray), "--out", str(tmp_path / "r"), *TINY)
    assert "--convert-rgb" in cli_error(capsys, "--suite", str(rgba), "--out", str(tmp_path / "r"), *TINY)
    with pytest.warns(UserWarning, match="converted to RGB"):
        assert run_benchmark.main(["--suite", str(gray), "--convert-rgb", "--strategies", "uniform",
                                   "--out", str(tmp_path / "r"), *TINY]) == 0


def test_sixteen_bit_rgb_is_accepted(tmp_path):
    import cv2

    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), tiny_image(20, 20)[:, :, ::-1].astype(np.uint16) * 257)  # BGR; PIL cannot write 16-bit RGB
    import datasets

    loaded = datasets.load_image(path)
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, tiny_image(20, 20).astype(np.uint16) * 257)
    assert run_benchmark.main(["--suite", str(path), "--strategies", "uniform", "--out", str(tmp_path / "r"),
                               *TINY]) == 0


@pytest.mark.parametrize("size", [1, 2])
def test_tiny_images_run_to_the_end(tmp_path, size):
    import pandas as pd

    path = tmp_path / f"t{size}.png"
    iio.imwrite(path, tiny_image(size, size))
    assert run_benchmark.main(["--suite", str(path), "--strategies", "uniform,nint,standard",
                               "--out", str(tmp_path / "r"), *TINY]) == 0
    runs = pd.read_parquet(tmp_path / "r" / "runs")
    assert (runs["status"] == "ok").all() and runs["final_ssim"].isna().all()  # SSIM needs 7×7


def test_checksum_mismatch(capsys, tmp_path, monkeypatch):
    import datasets

    data = tmp_path / "kodak"
    data.mkdir()
    sums = {}
    for i in (1, 2):
        iio.imwrite(data / f"kodim0{i}.png", tiny_image(20, 20, seed=i))
        sums[f"kodim0{i}.png"] = datasets.file_sha256(data / f"kodim0{i}.png")
    sums["kodim02.png"] = "0" * 64  # the published checksum no longer matches the file
    monkeypatch.setattr(datasets, "_read_sums", lambda name: sums)
    msg = cli_error(capsys, "--suite", "kodak", "--data-dir", str(data), "--out", str(tmp_path / "r"), *TINY)
    assert "checksum mismatch" in msg and "kodim02.png" in msg and "download it again" in msg


def test_missing_suite_file(capsys, tmp_path):
    (tmp_path / "kodak").mkdir()
    msg = cli_error(capsys, "--suite", "kodak", "--data-dir", str(tmp_path / "kodak"), "--out", str(tmp_path / "r"), *TINY)
    assert "kodim01.png is missing from" in msg


def test_incompatible_results_directory(capsys, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "store.json").write_text(json.dumps({"schema_version": 0}))
    msg = cli_error(capsys, "--suite", "builtin", "--max-images", "1", "--strategies", "uniform",
                    "--out", str(tmp_path / "r"), *TINY)
    assert "schema version 0" in msg and "new --out directory" in msg


def test_unwritable_output_directory(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    msg = cli_error(capsys, "--suite", "builtin", "--max-images", "1", "--strategies", "uniform",
                    "--out", str(blocker / "r"), *TINY)
    assert "cannot create output directory" in msg and "choose another --out" in msg
