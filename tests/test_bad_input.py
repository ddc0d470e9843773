"""Bad input gives one line that names the problem and the fix: through the CLI, exit status 2, no traceback.

Every test asserts the whole line (paths and registry lists filled in), so a message that loses its hint fails.
Choices these tests pin down: grayscale and RGBA images are refused with a hint unless --convert-rgb, which
converts them with a warning; 16-bit RGB is accepted as is; images smaller than 7×7 run to the end with SSIM
(and LPIPS) null, and every step trains on at least one pixel (benchmark.schedules.budget).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

import datasets
import run_benchmark
import strategies
from benchmark.models import MODELS
from benchmark.presets import PRESETS
from conftest import SHARED, tiny_image

TINY = ["--max-size", "16", "--iters", "3", "--model-param", "depth=2", "--model-param", "width=8",
        "--no-progress", "--no-lpips"]
ONE_RUN = ["--suite", "builtin", "--max-images", "1", "--strategies", "uniform", *TINY]


def cli_error(capsys, *args) -> str:
    """Run the CLI in-process; it must fail with status 2 and print exactly one line, `error: …`."""
    code = run_benchmark.main(list(args))
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    return err[0]


@pytest.mark.parametrize("ratio", ["0", "-0.1", "1.5", "nan"])
def test_mt_ratio_outside_0_1(capsys, tmp_path, ratio):
    msg = cli_error(capsys, *ONE_RUN, "--mt-ratio", ratio, "--out", str(tmp_path))
    assert msg == f"error: mt_ratio must be in (0, 1], got {float(ratio)!r}; e.g. --mt-ratio 0.2 samples 20% of the pixels"


@pytest.mark.parametrize("args, expected", [
    (["--strategies", "bogus"], f"unknown strategy 'bogus'; choose from: {', '.join(strategies.list_strategies())}"),
    (["--suite", "nosuch"], f"unknown suite 'nosuch'; choose from {', '.join(datasets.SUITES)}, or give a folder or "
                            "image file"),
    (["--preset", "nosuch"], f"unknown preset 'nosuch'; choose from {', '.join(PRESETS)}"),
    (["--model", "nosuch"], f"unknown model 'nosuch'; choose one of {', '.join(sorted(MODELS))}"),
    (["--iters", "-5"], "iters must be a whole number >= 1, got -5"),
    (["--iters", "0"], "iters must be a whole number >= 1, got 0"),
    (["--iters", "abc"], "argument --iters: invalid int value: 'abc'; see --help"),
    (["--mt-ratio", "lots"], "argument --mt-ratio: invalid float value: 'lots'; see --help"),
    (["--nosuchflag"], "unrecognized arguments: --nosuchflag; see --help"),
    (["--lr", "0"], "lr must be a positive number, got 0.0; e.g. --lr 1e-4"),
    (["--lr", "-0.001"], "lr must be a positive number, got -0.001; e.g. --lr 1e-4"),
    (["--eval-every", "0"], "eval_every must be a whole number >= 1, got 0"),
    (["--psnr-every", "0"], "psnr_every must be a whole number >= 1, got 0"),
    (["--model", "ffn", "--bf16-scoring"], "--bf16-scoring is implemented for the siren model only, got model "
                                           "'ffn'; drop --bf16-scoring for this model"),
    (["--chunk-size", "-5"], "chunk_size must be a whole number >= 0 (0 means off), got -5"),
    (["--max-size", "-1"], "max_size must be a whole number >= 0 (0 means off), got -1"),
    (["--ratio-schedule", "bogus"], "unknown ratio schedule 'bogus'; choose one of constant, linear, step, cosine, "
                                    "reverse-cosine"),
    (["--interval", "bogus"], "unknown interval profile 'bogus'; choose one of dense, dense2, dense5, incremental, "
                              "reverse-incremental, decremental"),
    (["--lr-schedule", "bogus"], "unknown lr schedule 'bogus'; choose one of constant, cosine"),
    (["--strategies", "nint[xi=0.8,ntk_share=0.5]"], "xi + ntk_share must be at most 1, got xi=0.8 ntk_share=0.5"),
    (["--strategies", "nint[xi=0.5"], "cannot parse strategy selector 'nint[xi=0.5'; write name or name[key=value,...]"),
    (["--strategies", "n!nt"], "cannot parse strategy selector 'n!nt'; write name or name[key=value,...]"),
    (["--strategies", "nint[xi]"], "strategy parameter 'xi' in 'nint[xi]' needs the form key=value"),
    (["--strategies", ","], "--strategies ',' names no strategy; e.g. --strategies nint,uniform (see --list-strategies)"),
    (["--seeds", "a,b"], "--seeds must be comma-separated whole numbers, got 'a,b'"),
    (["--seeds", "1.5"], "--seeds must be comma-separated whole numbers, got '1.5'"),
    (["--seeds", "-1"], "seed must be a whole number >= 0, got -1"),
    (["--seeds", ","], "--seeds ',' names no seed; e.g. --seeds 0,1"),
    (["--max-images", "-1"], "--max-images must be >= 0 (0 keeps every image), got -1"),
    (["--images", "nosuch"], "suite 'builtin' has no image(s) nosuch; it has astronaut, coffee, chelsea"),
    (["--model-param", "depth"], "--model-param 'depth' needs the form key=value"),
    (["--workers-per-device", "0"], "--workers-per-device must be >= 1, got 0"),
    (["--devices", "gpu"], "--devices: 'gpu' is not a device name; write cpu or cuda:N, e.g. --devices cuda:0,cuda:1"),
    (["--devices", "cpu,cpu"], "--devices names cpu twice; list each device once"),
    (["--suite", "div2k16"], "suite div2k16 has no download source: pass --data-dir DIR holding 00.png … 15.png"),
    (["--suite", "/nonexistent/img.png"], "image not found: /nonexistent/img.png; check the path (--suite takes a "
                                          "suite name, a folder or an image file)"),
])
def test_invalid_arguments(capsys, tmp_path, args, expected):
    assert cli_error(capsys, *ONE_RUN, *args, "--out", str(tmp_path / "r")) == f"error: {expected}"
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_strategy_parameter_of_the_wrong_type(capsys, tmp_path):
    msg = cli_error(capsys, *ONE_RUN, "--strategies", "nint[xi=abc]", "--out", str(tmp_path))
    assert msg == "error: strategy 'nint': xi must be a number, got 'abc'; e.g. nint[xi=0.7]"
    msg = cli_error(capsys, *ONE_RUN, "--strategies", "nint[top_k=1]", "--out", str(tmp_path))
    assert msg == "error: strategy 'nint': top_k must be true or false, got 1; e.g. nint[top_k=true]"


def test_unknown_strategy_parameter(capsys, tmp_path):
    msg = cli_error(capsys, *ONE_RUN, "--strategies", "nint[bogus=1]", "--out", str(tmp_path))
    takes = msg.removeprefix("error: strategy 'nint' has no parameter(s) bogus; it takes: ").split(", ")
    assert {"xi", "alpha", "ntk_share"} <= set(takes)


def test_bad_model_parameters_stop_before_any_run(capsys, tmp_path):
    base = ["--suite", "builtin", "--max-images", "1", "--strategies", "uniform", "--max-size", "16", "--iters", "3",
            "--no-progress", "--no-lpips"]
    msg = cli_error(capsys, *base, "--model-param", "dept=2", "--out", str(tmp_path / "r"))
    assert msg == "error: model 'siren' has no parameter(s) dept; it takes bias_init, depth, w0, w0_initial, width"
    msg = cli_error(capsys, *base, "--model-param", "width=0", "--out", str(tmp_path / "r"))
    assert msg == "error: model 'siren' needs width >= 1 (a whole number), got width=0; e.g. --model-param width=256"
    msg = cli_error(capsys, *base, "--model-param", "depth=abc", "--out", str(tmp_path / "r"))
    assert msg == "error: model 'siren': depth must be a number, got 'abc'; e.g. --model-param depth=5"
    assert not (tmp_path / "r").exists()


def test_missing_gpu(capsys, tmp_path):
    import torch

    count = torch.cuda.device_count()
    msg = cli_error(capsys, *ONE_RUN, "--devices", f"cuda:{count}", "--out", str(tmp_path))
    assert msg.startswith(f"error: --devices: cuda:{count} is not available, this machine has {count} visible GPU(s) (")


def test_missing_lpips_weights(capsys, tmp_path):
    args = [a for a in ONE_RUN if a != "--no-lpips"]
    msg = cli_error(capsys, *args, "--lpips-weights", "/nonexistent.pth", "--out", str(tmp_path))
    assert msg == ("error: LPIPS backbone weights not found at /nonexistent.pth; give the path of torchvision's "
                   "alexnet-owt-7be5be79.pth or run with --no-lpips")


# --- image files -------------------------------------------------------------------------------------------------
def test_corrupt_png(capsys, tmp_path):
    path = tmp_path / "cut.png"
    iio.imwrite(path, tiny_image(40, 40))
    path.write_bytes(path.read_bytes()[:60])  # a real PNG, truncated inside its pixel data
    msg = cli_error(capsys, "--suite", str(path), "--out", str(tmp_path / "r"), *TINY)
    assert msg == (f"error: cannot read image {path}: the file is truncated, corrupt or not an image; "
                   "is it a complete, valid image file?")


def test_text_file_named_png(capsys, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    msg = cli_error(capsys, "--suite", str(path), "--out", str(tmp_path / "r"), *TINY)
    assert msg.startswith(f"error: cannot read image {path}: the file is truncated, corrupt or not an image")


def test_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    msg = cli_error(capsys, "--suite", str(tmp_path / "empty"), "--out", str(tmp_path / "r"), *TINY)
    assert msg == f"error: folder {tmp_path / 'empty'} holds no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .ppm)"


def test_grayscale_and_rgba_are_refused_unless_converted(capsys, tmp_path):
    gray, rgba = tmp_path / "g" / "gray.png", tmp_path / "a" / "rgba.png"
    for p in (gray, rgba):
        p.parent.mkdir()
    iio.imwrite(gray, tiny_image(20, 20)[:, :, 0])
    iio.imwrite(rgba, np.dstack([tiny_image(20, 20), np.full((20, 20), 255, np.uint8)]))
    for path, kind in ((gray, "grayscale"), (rgba, "RGBA")):
        assert cli_error(capsys, "--suite", str(path), "--out", str(tmp_path / "r"), *TINY) == (
            f"error: {path} is {kind}, not RGB; convert it to RGB or pass --convert-rgb to do it on load")
        with pytest.warns(UserWarning, match=f"{kind} image converted to RGB"):
            assert run_benchmark.main(["--suite", str(path), "--convert-rgb", "--strategies", "uniform",
                                       "--out", str(tmp_path / "r"), *TINY]) == 0
    runs = pd.read_parquet(tmp_path / "r" / "runs")
    assert sorted(runs["image"]) == ["gray", "rgba"] and (runs["status"] == "ok").all()


def test_sixteen_bit_rgb_is_accepted(tmp_path):
    import cv2

    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), tiny_image(20, 20)[:, :, ::-1].astype(np.uint16) * 257)  # BGR; PIL cannot write 16-bit RGB
    loaded = datasets.load_image(path)
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, tiny_image(20, 20).astype(np.uint16) * 257)
    small = datasets.resize_longest(loaded, 16)  # what --max-size 16 gives the run: still 16 bits
    eight = datasets.resize_longest(tiny_image(20, 20), 16)
    assert small.dtype == np.uint16 and small.shape == (16, 16, 3)
    assert np.abs(small.astype(np.int64) - eight.astype(np.int64) * 257).max() <= 257  # same picture
    assert run_benchmark.main(["--suite", str(path), "--strategies", "uniform", "--out", str(tmp_path / "r"),
                               *TINY]) == 0
    assert pd.read_parquet(tmp_path / "r" / "runs")["status"].tolist() == ["ok"]


@pytest.mark.parametrize("size", [1, 2])
def test_tiny_images_run_to_the_end(tmp_path, size):
    path = tmp_path / f"t{size}.png"
    iio.imwrite(path, tiny_image(size, size))
    assert run_benchmark.main(["--suite", str(path), "--strategies", "uniform,int,nint,standard",
                               "--out", str(tmp_path / "r"), *TINY]) == 0
    runs = pd.read_parquet(tmp_path / "r" / "runs").set_index("strategy")
    assert (runs["status"] == "ok").all() and runs["final_ssim"].isna().all()  # SSIM needs 7×7
    assert runs["final_psnr"].notna().all() and runs["final_lpips"].isna().all()
    metrics = pd.read_parquet(tmp_path / "r" / "metrics")
    trained = metrics[metrics["iteration"] > 0]
    assert np.isfinite(trained["loss"]).all() and metrics["ssim"].isna().all()
    # ⌊0.2·N⌋ is 0 pixels here: every step still trains on one pixel (the full image for standard)
    fraction = trained.groupby("strategy")["sampled_fraction"].unique()
    for name in ("uniform", "int", "nint"):
        assert fraction[name].tolist() == [1 / size**2]
    assert fraction["standard"].tolist() == [1.0]


# --- suites with checksums ---------------------------------------------------------------------------------------
def test_checksum_mismatch(capsys, tmp_path, monkeypatch):
    """Without the shared data: two synthetic files and their sums, one sum no longer matching."""
    data = tmp_path / "kodak"
    data.mkdir()
    sums = {}
    for i in (1, 2):
        iio.imwrite(data / f"kodim0{i}.png", tiny_image(20, 20, seed=i))
        sums[f"kodim0{i}.png"] = datasets.file_sha256(data / f"kodim0{i}.png")
    sums["kodim02.png"] = "0" * 64  # the published checksum no longer matches the file
    monkeypatch.setattr(datasets, "_read_sums", lambda name: sums)
    msg = cli_error(capsys, "--suite", "kodak", "--data-dir", str(data), "--out", str(tmp_path / "r"), *TINY)
    got = datasets.file_sha256(data / "kodim02.png")[:12]
    assert msg == (f"error: checksum mismatch for {data / 'kodim02.png'}: expected 000000000000…, got {got}…; "
                   "the file is corrupt or a different image: delete it and download it again")


@pytest.mark.skipif(not (SHARED / "kodak" / "kodim24.png").is_file(), reason="needs the shared Kodak copy")
def test_checksum_mismatch_on_a_real_kodak_copy(capsys, tmp_path):
    data = tmp_path / "kodak"
    data.mkdir()
    for i in range(1, 25):
        shutil.copy(SHARED / "kodak" / f"kodim{i:02d}.png", data)
    altered = data / "kodim03.png"
    blob = bytearray(altered.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte inside the pixel data
    altered.write_bytes(bytes(blob))
    expected = datasets._read_sums("kodak.sha256")["kodim03.png"]
    msg = cli_error(capsys, "--suite", "kodak", "--data-dir", str(data), "--out", str(tmp_path / "r"), *TINY)
    assert msg == (f"error: checksum mismatch for {altered}: expected {expected[:12]}…, "
                   f"got {datasets.file_sha256(altered)[:12]}…; "
                   "the file is corrupt or a different image: delete it and download it again")
    assert not (tmp_path / "r").exists()  # stopped before any run


def test_missing_suite_file(capsys, tmp_path):
    (tmp_path / "kodak").mkdir()
    msg = cli_error(capsys, "--suite", "kodak", "--data-dir", str(tmp_path / "kodak"), "--out", str(tmp_path / "r"), *TINY)
    assert msg == (f"error: kodim01.png is missing from {tmp_path / 'kodak'}; the suite needs 24 files "
                   "(or name the images you have with --images)")


def test_a_suite_folder_needs_only_the_images_named(capsys, tmp_path, monkeypatch):
    """--images kodim03 runs from a folder holding kodim03.png alone (still checked against the suite's
    SHA-256); an image the suite lacks, or a named one missing from the folder, is a one-line error."""
    data = tmp_path / "kodak"
    data.mkdir()
    iio.imwrite(data / "kodim03.png", tiny_image(20, 20, seed=3))
    sums = {f"kodim0{i}.png": "0" * 64 for i in (1, 2, 4)} | {"kodim03.png": datasets.file_sha256(data / "kodim03.png")}
    monkeypatch.setattr(datasets, "_read_sums", lambda name: sums)
    out = tmp_path / "r"
    assert run_benchmark.main(["--suite", "kodak", "--data-dir", str(data), "--images", "kodim03",
                               "--strategies", "uniform", "--out", str(out), *TINY]) == 0
    assert set(pd.read_parquet(out / "runs")["image"]) == {"kodim03"}
    capsys.readouterr()
    msg = cli_error(capsys, "--suite", "kodak", "--data-dir", str(data), "--images", "kodim03,kodim99", *TINY)
    assert msg == "error: suite 'kodak' has no image(s) kodim99; it has kodim01, kodim02, kodim03, kodim04"
    msg = cli_error(capsys, "--suite", "kodak", "--data-dir", str(data), "--images", "kodim04", *TINY)
    assert msg == f"error: kodim04.png is missing from {data}; --images names it"


# --- results directory -------------------------------------------------------------------------------------------
def test_incompatible_results_directory(capsys, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "store.json").write_text(json.dumps({"schema_version": 0}))
    msg = cli_error(capsys, *ONE_RUN, "--out", str(tmp_path / "r"))
    assert msg == (f"error: {tmp_path / 'r'} holds results of schema version 0, this nint-bench reads versions 1, 2; "
                   "use a new --out directory (or re-create these results)")
    assert not list((tmp_path / "r" / "runs").iterdir())


def test_unreadable_store_marker(capsys, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "store.json").write_text("[not json")
    msg = cli_error(capsys, *ONE_RUN, "--out", str(tmp_path / "r"))
    assert msg == (f"error: {tmp_path / 'r' / 'store.json'} is unreadable or not a nint-bench store marker; "
                   "use a new --out directory")


def test_runs_without_store_marker(capsys, tmp_path):
    (tmp_path / "r" / "runs").mkdir(parents=True)
    (tmp_path / "r" / "runs" / "x.parquet").write_bytes(b"")
    msg = cli_error(capsys, *ONE_RUN, "--out", str(tmp_path / "r"))
    assert msg == f"error: {tmp_path / 'r'} holds runs but no store.json; it is not a nint-bench results directory"


def test_output_under_a_regular_file(capsys, tmp_path):
    """Works as root too (chmod does not stop root): a folder cannot be made inside a file."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    msg = cli_error(capsys, *ONE_RUN, "--out", str(blocker / "r"))
    assert msg == f"error: cannot create output directory {blocker / 'r'}: Not a directory; choose another --out"


def test_output_directory_not_writable(capsys, tmp_path, monkeypatch):
    out = tmp_path / "r"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out else real_access(p, mode, **kw))
    msg = cli_error(capsys, *ONE_RUN, "--out", str(out))
    assert msg == f"error: output directory {out} is not writable; choose another --out or fix its permissions"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 500")
def test_output_directory_chmod_500(capsys, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    out.chmod(0o500)
    try:
        msg = cli_error(capsys, *ONE_RUN, "--out", str(out))
    finally:
        out.chmod(0o700)
    assert msg.startswith(f"error: cannot create output directory {out}: Permission denied") or msg == (
        f"error: output directory {out} is not writable; choose another --out or fix its permissions")
