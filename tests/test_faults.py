"""Faults inside a run are recorded as the run's status and the suite goes on; a full disk stops the suite
with one clear line and leaves the store consistent; chunked evaluation changes nothing but memory."""
from __future__ import annotations

import errno

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import torch

import datasets
import run_benchmark
from benchmark import fit as fit_module
from benchmark import store as store_module
from benchmark.config import RunConfig
from benchmark.errors import BenchError, at_least
from benchmark.fit import fit
from benchmark.ntk import ntk_scores
from benchmark.runner import build_jobs, parse_strategies, run_jobs
from benchmark.store import Store, load
from conftest import make_task, tiny_image
from strategies import STRATEGIES, register_strategy
from strategies.uniform import Uniform

class NaNAt(Uniform):
    """Test only: the loss becomes NaN from step `at` on."""
    defaults = {"at": 3}
    ranges = {"at": at_least(0, integer=True)}

    def loss(self, pred, target, batch, step):
        loss = super().loss(pred, target, batch, step)
        return loss * float("nan") if step >= self.params["at"] else loss


class OOM(Uniform):
    """Test only: raises CUDA's out-of-memory error."""

    def choose(self, step):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class Raises(Uniform):
    """Test only: a bug in a strategy."""

    def choose(self, step):
        raise RuntimeError("boom in choose")


@pytest.fixture
def faulty_strategies():
    """Register the test strategies for one test only, so other tests never see them."""
    register_strategy("test-nan")(NaNAt)
    register_strategy("test-oom")(OOM)
    register_strategy("test-raise")(Raises)
    yield
    del STRATEGIES["test-nan"], STRATEGIES["test-oom"], STRATEGIES["test-raise"]


def tiny_jobs(selectors, seeds=(0,), iters=120, **kw):
    refs = [datasets.ImageRef("tiny", loader=tiny_image)]
    return build_jobs(refs, parse_strategies(selectors), list(seeds), iters=iters, eval_every=50,
                      model_params={"depth": 2, "width": 8}, lpips=False, suite="test", **kw)


def test_nan_is_diverged_oom_is_failed_and_the_next_jobs_run(tmp_path, faulty_strategies):
    refs = [datasets.ImageRef("tiny", loader=tiny_image)]
    jobs = build_jobs(refs, parse_strategies("test-nan,test-oom,uniform"), [0], iters=120, eval_every=50,
                      model_params={"depth": 2, "width": 8}, lpips=False, suite="test")
    rows = {r["strategy"]: r for r in run_jobs(jobs, tmp_path / "r", ["cpu"], progress=False)}
    assert rows["test-nan"]["status"] == "diverged" and rows["test-nan"]["diverged_at"] == 4
    assert "NaN/Inf at iteration 4" in rows["test-nan"]["error"]
    assert rows["test-oom"]["status"] == "failed" and "try a smaller --mt-ratio" in rows["test-oom"]["error"]
    assert rows["uniform"]["status"] == "ok"
    runs, metrics = load(tmp_path / "r")
    assert set(runs["strategy"]) == {"test-nan", "uniform"}  # a failed run is not a finished one
    assert Store(tmp_path / "r").incomplete() == [rows["test-oom"]["run_id"]]
    again = run_jobs(jobs, tmp_path / "r", ["cpu"], progress=False)  # only the failed run is retried
    assert [r["strategy"] for r in again] == ["test-oom"]


def test_nan_late_in_the_run_is_caught_at_the_next_check_with_the_first_bad_iteration(tmp_path, faulty_strategies):
    jobs = tiny_jobs("test-nan[at=149],uniform", iters=300)  # NaN from update 150 on; checks at 100, 200, 300
    rows = run_jobs(jobs, tmp_path / "r", ["cpu"], progress=False)
    assert [r["status"] for r in rows] == ["diverged", "ok"]
    assert rows[0]["diverged_at"] == 150 and rows[0]["final_psnr"] is None
    metrics = Store(tmp_path / "r").metrics({rows[0]["run_id"]})
    assert metrics["iteration"].max() == 200  # stopped at the check that saw it, not at 300
    loss = metrics.set_index("iteration")["loss"]
    assert np.isfinite(loss.loc[1:149]).all() and loss.loc[150:].isna().all()
    diverged = load(tmp_path / "r")[0].set_index("label").loc["test-nan[at=149]"]
    assert diverged["status"] == "diverged" and diverged["diverged_at"] == 150  # stored, not redone on rerun
    assert run_jobs(jobs, tmp_path / "r", ["cpu"], progress=False) == []


def test_a_strategy_that_raises_is_failed_with_its_error_and_the_others_run(tmp_path, faulty_strategies):
    jobs = tiny_jobs("uniform,test-raise,int", iters=20)
    rows = run_jobs(jobs, tmp_path / "r", ["cpu"], progress=False)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    error = rows[1]["error"]
    assert error.startswith("RuntimeError: boom in choose | ") and "choose" in error.split(" | ", 1)[1]
    assert "\n" not in error  # one line, traceback tail included
    runs = pd.read_parquet(tmp_path / "r" / "runs").set_index("strategy")
    assert runs.loc["test-raise", "status"] == "failed" and runs.loc["test-raise", "error"] == error
    assert not (tmp_path / "r" / "metrics" / f"{rows[1]['run_id']}.parquet").exists()


def test_cli_reports_oom_with_the_hint_and_finishes_the_suite(tmp_path, capsys, faulty_strategies):
    image = tmp_path / "img.png"
    iio.imwrite(image, tiny_image(12, 12))
    code = run_benchmark.main(["--suite", str(image), "--strategies", "test-oom,uniform", "--iters", "5",
                               "--model-param", "depth=2", "--model-param", "width=8", "--no-lpips",
                               "--no-progress", "--out", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert code == 1  # some runs failed, the others finished
    assert ("failed: test-oom on img (seed 0): CUDA out of memory; try a smaller --mt-ratio, a smaller "
            "--chunk-size (e.g. 65536) for the full-image forwards, or fewer workers per GPU") in captured.err
    assert "summary of 1 runs" in captured.out and "uniform" in captured.out


@pytest.mark.parametrize("failing_write", [1, 2])  # 1: the metrics file, 2: the run row
def test_full_disk_stops_with_one_line_and_the_store_stays_consistent(tmp_path, capsys, monkeypatch, failing_write):
    image = tmp_path / "img.png"
    iio.imwrite(image, tiny_image(12, 12))
    out = tmp_path / "r"
    args = ["--suite", str(image), "--strategies", "uniform,int", "--iters", "5", "--model-param", "depth=2",
            "--model-param", "width=8", "--no-lpips", "--no-progress", "--out", str(out)]
    assert run_benchmark.main([*args, "--seeds", "0"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.parquet")}
    assert len(before) == 4
    capsys.readouterr()

    real, writes = store_module.write_parquet, []

    def disk_fills_up(table, fh, **options):
        writes.append(table)
        if len(writes) == failing_write:
            fh.write(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(table, fh, **options)

    monkeypatch.setattr(store_module, "write_parquet", disk_fills_up)
    assert run_benchmark.main([*args, "--seeds", "0,1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("2 of 4 runs already finished")
    sub = "metrics" if failing_write == 1 else "runs"
    assert err[1].startswith(f"error: no space left on the device while writing {out / sub}/") and err[1].endswith(
        ".parquet; free some space and rerun the same command: finished runs are kept")
    assert len(writes) == failing_write  # the suite stopped at the full disk instead of failing every run

    assert not list(out.rglob("*.tmp"))  # no half-written file
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.parquet")} == before  # earlier runs intact, no orphan
    assert Store(out).incomplete() == []
    runs, metrics = load(out)
    assert len(runs) == 2 and (runs["status"] == "ok").all() and len(metrics) == 2 * 6

    monkeypatch.setattr(store_module, "write_parquet", real)  # space freed: the same command finishes
    assert run_benchmark.main([*args, "--seeds", "0,1"]) == 0
    assert len(load(out)[0]) == 4


def test_chunked_fit_gives_the_same_psnr_trajectory():
    img = tiny_image(24, 20)  # 480 pixels; chunks of 37 leave a short last chunk
    for strategy in ("nint", "int", "uniform", "standard"):
        results = [fit(RunConfig(image="t", image_sha256="x", strategy=strategy, iters=120, eval_every=60,
                                 chunk_size=chunk, model_params={"depth": 2, "width": 16}), img)
                   for chunk in (0, 37)]
        whole, chunked = (r.metrics for r in results)
        assert whole["psnr"].notna().all() and len(whole) == 121
        np.testing.assert_allclose(chunked["psnr"], whole["psnr"], rtol=0, atol=1e-4, err_msg=strategy)
        np.testing.assert_allclose(chunked["loss"][1:], whole["loss"][1:], rtol=1e-5, err_msg=strategy)
        np.testing.assert_array_equal(chunked["sampled_fraction"], whole["sampled_fraction"])


@pytest.mark.parametrize("variant", ["kg", "primal"])
def test_chunked_ntk_scores_match_the_one_pass_scores(variant):
    img = tiny_image(24, 20)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        score, pred = ntk_scores(make_task(img, dtype=dtype), variant)
        score_c, pred_c = ntk_scores(make_task(img, dtype=dtype, chunk_size=37), variant)
        assert score.shape == score_c.shape == (480,)
        # Equal up to the rounding of the VJP's sum over chunks (a different summation order), no more.
        torch.testing.assert_close(score_c, score, rtol=rtol, atol=rtol * float(score.abs().max()))
        torch.testing.assert_close(pred_c, pred, rtol=rtol, atol=rtol)
        for k in (10, 96, 240):  # NINT keeps the top-k: the selection is the same
            assert set(torch.topk(score, k).indices.tolist()) == set(torch.topk(score_c, k).indices.tolist())


def test_a_megapixel_image_runs_through_the_chunked_path(monkeypatch):
    """1024×1024 with chunks of 65536 pixels: no forward (evaluation, scoring, NTK VJP/JVP) sees more than one
    chunk, so memory is bounded by the chunk, not the image; the training batch (5% = 52428) is below it."""
    seen = []
    real_build = fit_module.build_model

    def recording_model(*args, **kw):
        model = real_build(*args, **kw)
        model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[0]))
        return model

    monkeypatch.setattr(fit_module, "build_model", recording_model)
    img = tiny_image(1024, 1024)
    result = fit(RunConfig(image="big", image_sha256="x", strategy="nint", iters=2, eval_every=2, mt_ratio=0.05,
                           chunk_size=65536, model_params={"depth": 1, "width": 8}), img)
    assert result.status == "ok" and (result.height, result.width) == (1024, 1024)
    assert result.metrics["psnr"].notna().all() and result.metrics["ssim"].notna().sum() == 2
    assert max(seen) == 65536 < 1024 * 1024
    assert seen.count(65536) >= 3 * 16  # forwards over all 16 chunks: evaluation, NTK VJP, NTK JVP
    assert 52428 in seen  # the training forward
