"""Faults inside a run are recorded as the run's status and the suite goes on."""
from __future__ import annotations

import pytest
import torch

import datasets
from benchmark.runner import build_jobs, parse_strategies, run_jobs
from benchmark.store import Store, load
from conftest import tiny_image
from strategies import STRATEGIES, register_strategy
from strategies.uniform import Uniform

class NaNAt(Uniform):
    """Test only: the loss becomes NaN from step `at` on."""
    defaults = {"at": 3}

    def loss(self, pred, target, batch, step):
        loss = super().loss(pred, target, batch, step)
        return loss * float("nan") if step >= self.params["at"] else loss


class OOM(Uniform):
    """Test only: raises CUDA's out-of-memory error."""

    def choose(self, step):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.fixture
def faulty_strategies():
    """Register the two test strategies for one test only, so other tests never see them."""
    register_strategy("test-nan")(NaNAt)
    register_strategy("test-oom")(OOM)
    yield
    del STRATEGIES["test-nan"], STRATEGIES["test-oom"]


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
