"""Up-front validation: every numeric parameter of every registered strategy and model, huge values, image size
limits, image ids and repeated grid entries. Each case either is refused in one line (a BenchError, or the
CLI's `error: …` with status 2) or really works."""
from __future__ import annotations

import math
import struct
import zlib

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import torch

import datasets
import run_benchmark
import strategies
from benchmark import memory
from benchmark.config import RunConfig
from benchmark.errors import BenchError, Range
from benchmark.fit import train_step
from benchmark.models import MODELS, build_model
from conftest import make_task, tiny_image
from test_bad_input import ONE_RUN, TINY, cli_error

HOSTILE = [math.nan, math.inf, -math.inf, 0, 0.0, -1, -0.5]


def _numeric(defaults: dict) -> list[str]:
    return [k for k, v in defaults.items() if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))]


STRATEGY_PARAMS = [(name, key) for name, cls in sorted(strategies.STRATEGIES.items()) for key in _numeric(cls.defaults)]
MODEL_PARAMS = [(name, key) for name, spec in sorted(MODELS.items()) for key in _numeric(spec.defaults)]


def test_every_numeric_parameter_has_a_declared_range():
    assert len(STRATEGY_PARAMS) > 30 and len(MODEL_PARAMS) > 20  # the walk below covers the whole registry
    for name, cls in strategies.STRATEGIES.items():
        assert set(_numeric({**cls.defaults, **cls.optional})) == set(cls.ranges), name
    for name, spec in MODELS.items():
        assert set(_numeric(spec.defaults)) == set(spec.ranges), name
    with pytest.raises(ValueError, match="without a range"):
        @strategies.register_strategy("unchecked-test-strategy")
        class Unchecked(strategies.STRATEGIES["uniform"]):
            defaults = {"knob": 1.0}


@pytest.mark.parametrize("name, key", STRATEGY_PARAMS)
def test_hostile_strategy_values_are_refused_or_work(name, key):
    """NaN, ±inf, 0 and negatives: refused naming the parameter, or a strategy that trains with it."""
    for value in HOSTILE:
        try:
            cls, params = strategies.resolve(name, {key: value})
        except BenchError as exc:
            msg = str(exc)
            assert "\n" not in msg and key in msg and name.split("-")[0] in msg, msg
            if isinstance(value, float) and not math.isfinite(value):
                assert msg == (f"strategy {name!r} needs {cls_range(name, key).describe(key)}, got {key}={value!r}; "
                               f"e.g. {name}[{key}={default_text(name, key)}]")
            continue
        assert math.isfinite(value), f"{name}[{key}={value}] was accepted"
        task = make_task(iters=4, ratio=0.5)
        strategy = cls(task, **params)
        opt = torch.optim.Adam(task.model.parameters(), lr=1e-4)
        for t in range(3):
            _, _, loss = train_step(strategy, opt, t)
            assert torch.isfinite(loss), (name, key, value)


def cls_range(name: str, key: str) -> Range:
    return strategies.STRATEGIES[name].ranges[key]


def default_text(name: str, key: str) -> str:
    default = strategies.STRATEGIES[name].defaults[key]
    return "none" if default is None else str(default)


@pytest.mark.parametrize("name, key", MODEL_PARAMS)
def test_hostile_model_values_are_refused_or_work(name, key):
    spec = MODELS[name]
    for value in HOSTILE:
        try:
            model = build_model(name, {key: value})
        except BenchError as exc:
            msg = str(exc)
            assert "\n" not in msg and key in msg and msg.startswith(f"model {name!r}"), msg
            if isinstance(value, float) and not math.isfinite(value):
                assert msg == (f"model {name!r} needs {spec.ranges[key].describe(key)}, got {key}={value!r}; "
                               f"e.g. --model-param {key}={spec.defaults[key] if spec.defaults[key] is not None else 'none'}")
            continue
        assert math.isfinite(value), f"{name} {key}={value} was accepted"
        out = model(torch.rand(5, 2) * 2 - 1)
        assert out.shape == (5, 3) and torch.isfinite(out).all(), (name, key, value)


def test_whole_number_parameters():
    with pytest.raises(BenchError, match=r"^strategy 'nint' needs alpha >= 1 \(a whole number\), got alpha=2.5"):
        strategies.resolve("nint", {"alpha": 2.5})
    assert strategies.resolve("nint", {"alpha": 5.0})[1]["alpha"] == 5.0  # whole: kept as given (run ids)
    assert build_model("siren", {"depth": 2.0, "width": 8.0})(torch.zeros(1, 2)).shape == (1, 3)
    with pytest.raises(BenchError, match=r"^model 'siren' needs depth in \[1, 1000\] \(a whole number\), got depth=10000000"):
        build_model("siren", {"depth": 10**7})


def test_the_meta_build_leaves_the_random_stream_alone():
    """build_model measures the model on torch's meta device first: the weights must be those of a plain build."""
    for name, spec in MODELS.items():
        torch.manual_seed(3)
        checked = build_model(name).state_dict()
        torch.manual_seed(3)
        plain = spec.build(**spec.defaults).state_dict()
        assert all(torch.equal(checked[k], plain[k]) for k in plain), name


# --- huge values ---------------------------------------------------------------------------------------------------
def test_seed_limit(capsys, tmp_path):
    assert cli_error(capsys, *ONE_RUN, "--seeds", str(2**63), "--out", str(tmp_path / "r")) == (
        f"error: seed must be below 2**63 = {2**63} (the store keeps seeds as 64-bit integers), got {2**63}")
    top = 2**63 - 1
    torch.Generator().manual_seed(top)  # the largest seed is one the generators take
    assert run_benchmark.main([*ONE_RUN, "--seeds", str(top), "--out", str(tmp_path / "r")]) == 0
    assert pd.read_parquet(tmp_path / "r" / "runs")["seed"].tolist() == [top]


def test_huge_iters_is_refused_against_host_memory(capsys, tmp_path):
    msg = cli_error(capsys, *ONE_RUN, "--iters", str(10**12), "--out", str(tmp_path / "r"))
    assert msg.startswith("error: --iters 1000000000000 needs at least 120 TB of host memory for its per-iteration "
                          "metrics, more than the ") and msg.endswith(" available; lower --iters")
    assert not (tmp_path / "r").exists()


def test_huge_width_is_refused_before_it_is_built(capsys, tmp_path):
    msg = cli_error(capsys, *ONE_RUN, "--model-param", "width=10000000", "--out", str(tmp_path / "r"))
    assert msg.startswith("error: model 'siren' (depth=2, width=10000000) holds 400 TB of weights, more than the ")
    assert msg.endswith("of memory available; lower its width or depth (--model-param)")


def test_a_run_too_large_for_the_device_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_device_bytes", lambda: (10**6, "on this machine"))
    msg = cli_error(capsys, "--suite", "builtin", "--images", "astronaut", "--max-size", "64", "--iters", "3",
                    "--strategies", "uniform", "--no-progress", "--no-lpips", "--out", str(tmp_path / "r"))
    assert msg.startswith("error: a run of siren (width 256, depth 5) on astronaut (4096 pixels, --iters 3) needs at "
                          "least ") and msg.endswith(" more than the 1 MB available on this machine; lower --max-size, "
                                                     "the model's width or depth, --mt-ratio or --chunk-size")


def test_run_bytes_grows_with_every_dimension():
    cfg = RunConfig(image="a", image_sha256="", strategy="uniform", iters=100, lpips=False)
    base = memory.run_bytes(cfg, 10_000, 10**6, 256, 5)
    assert memory.run_bytes(cfg, 20_000, 10**6, 256, 5)[0] > base[0]
    assert memory.run_bytes(cfg, 10_000, 10**6, 512, 5)[0] > base[0]
    full = RunConfig(image="a", image_sha256="", strategy="uniform", iters=100, mt_ratio=1.0, lpips=False)
    assert memory.run_bytes(full, 10_000, 10**6, 256, 10)[0] > memory.run_bytes(full, 10_000, 10**6, 256, 5)[0]
    longer = RunConfig(image="a", image_sha256="", strategy="uniform", iters=10_000, lpips=False)
    assert memory.run_bytes(longer, 10_000, 10**6, 256, 5)[1] == 10_001 * memory.HOST_BYTES_PER_ITERATION > base[1]
    assert memory.available_host_bytes() > 0


# --- image size ----------------------------------------------------------------------------------------------------
def _png_header_only(path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR claiming width × height 8-bit RGB, a few bytes of IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_from_its_header(capsys, tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 100_000, 100_000)
    assert bomb.stat().st_size < 200
    msg = cli_error(capsys, "--suite", str(bomb), "--out", str(tmp_path / "r"), *TINY)
    assert msg == (f"error: image {bomb} is 100000×100000 pixels, more than --max-pixels 100000000; that is beyond "
                   "what the decoder reads (1073741824 pixels), so downscale the file first")
    msg = cli_error(capsys, "--suite", str(bomb), "--max-pixels", str(2**31), "--out", str(tmp_path / "r"), *TINY)
    assert msg == ("error: --max-pixels must be a whole number in [1, 1073741824] (the decoder reads at most 2**30 "
                   "pixels), got 2147483648")


def test_max_pixels_refuses_and_can_be_raised(capsys, tmp_path):
    path = tmp_path / "pic.png"
    iio.imwrite(path, tiny_image(40, 30))
    msg = cli_error(capsys, "--suite", str(path), "--max-pixels", "1000", "--out", str(tmp_path / "r"), *TINY)
    assert msg == (f"error: image {path} is 30×40 pixels, more than --max-pixels 1000; pass --max-pixels 1200 if it "
                   "really is that large")
    assert run_benchmark.main(["--suite", str(path), "--max-pixels", "1200", "--strategies", "uniform",
                               "--out", str(tmp_path / "r"), *TINY]) == 0


def test_a_large_jpeg_is_decoded_at_reduced_scale(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    iio.imwrite(path, np.repeat(np.repeat(tiny_image(32, 48), 8, axis=0), 8, axis=1), quality=95)  # 256 × 384
    small = datasets.load_image(path, max_size=48)  # 1/8 of 384 is 48: libjpeg decodes 32 × 48 directly
    assert small.shape == (32, 48, 3) and small.dtype == np.uint8
    assert datasets.load_image(path, max_size=100).shape == (128, 192, 3)  # 1/2: the smallest scale >= 100
    assert datasets.load_image(path).shape == (256, 384, 3)  # no --max-size: full size, as before
    assert np.abs(small.astype(int) - tiny_image(32, 48)).mean() < 3  # the picture whose 8×8 blocks were saved
    # A JPEG too large at full size is read when the reduced decode fits under --max-pixels
    assert datasets.load_image(path, max_size=48, max_pixels=32 * 48).shape == (32, 48, 3)
    with pytest.raises(BenchError, match=r"is 192×128 pixels even decoded at reduced scale \(full size 384×256\), "
                       r"more than --max-pixels 1536; pass --max-pixels 24576 or a smaller --max-size$"):
        datasets.load_image(path, max_size=100, max_pixels=32 * 48)


# --- image ids and repeated grid entries ---------------------------------------------------------------------------
def test_two_files_with_one_stem_are_refused(capsys, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    iio.imwrite(folder / "x.png", tiny_image(8, 8))
    iio.imwrite(folder / "x.jpg", tiny_image(8, 8))
    iio.imwrite(folder / "y.png", tiny_image(8, 8))
    msg = cli_error(capsys, "--suite", str(folder), "--out", str(tmp_path / "r"), *TINY)
    assert msg == (f"error: folder {folder} holds 2 images with the id 'x' (x.jpg, x.png): an image's id is its file "
                   "name without the extension, so rename or move all but one")


def test_repeated_grid_entries_run_once_with_an_honest_count(capsys, tmp_path):
    args = ["--suite", "builtin", "--max-images", "1", *TINY, "--out", str(tmp_path / "r")]
    assert run_benchmark.main([*args, "--strategies", "uniform,uniform,nint,nint[xi=0.7]", "--seeds", "0,0"]) == 0
    err = capsys.readouterr().err
    assert ("note: 6 of 8 grid entries repeat another entry (same image, strategy, parameters and seed): running "
            "each once, 2 distinct run(s)") in err.splitlines()
    assert "already finished" not in err
    assert sorted(pd.read_parquet(tmp_path / "r" / "runs")["strategy"]) == ["nint", "uniform"]
    assert run_benchmark.main([*args, "--strategies", "uniform,uniform"]) == 0  # resumed: the count is of distinct runs
    assert f"1 of 1 runs already finished in {tmp_path / 'r'}: skipped" in capsys.readouterr().err
