"""--graph-steps: which steps it covers and what it refuses (CPU); that replays train as eager steps do (GPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import strategies
from benchmark.errors import BenchError
from benchmark.fit import fit
from benchmark.step_graphs import StepGraphs
from conftest import make_task, tiny_image
from test_core import config

COVERED = {"standard", "uniform", "egra", "expansive", "int", "nint", "nint-released", "ntk"}
EAGER = {"soft-mining", "evos", "evos-nocfs"}  # a coordinate gradient, or a loss of their own


@pytest.mark.parametrize("name", sorted(COVERED | EAGER))
def test_the_captured_step_covers_plain_mse_steps_only(name):
    task = make_task()
    cls, params = strategies.resolve(name)
    strategy = cls(task, **params)
    assert StepGraphs.covers(strategy, strategy.select(0)) == (name in COVERED)


def test_graph_steps_is_refused_where_a_captured_step_cannot_hold():
    with pytest.raises(BenchError, match=r"^--graph-steps needs a constant ratio and a constant lr .*, got "
                                         r"--ratio-schedule linear --lr-schedule constant$"):
        config(graph_steps=True, ratio_schedule="linear")
    with pytest.raises(BenchError, match=r"^--graph-steps needs a constant ratio and a constant lr"):
        config(graph_steps=True, lr_schedule="cosine")
    assert config(graph_steps=False).run_id == config().run_id != config(graph_steps=True).run_id
    with pytest.raises(BenchError, match=r"^--graph-steps needs a CUDA GPU, got device cpu; drop --graph-steps"):
        fit(config(graph_steps=True), tiny_image(), "cpu")
    for mode in ("cudagraphs", "reduce-overhead"):
        with pytest.raises(BenchError, match=rf"^--graph-steps cannot be combined with --compile {mode} "):
            config(graph_steps=True, compile=mode)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("name,compile", [("standard", True), ("uniform", True), ("int", True), ("nint", True),
                                          ("soft-mining", True), ("nint", False)])
def test_gpu_replayed_steps_train_as_eager_steps_do(name, compile, monkeypatch):
    """Every covered step is a replay (none of an uncovered strategy's), and the loss and PSNR trajectory are
    those of the fit without --graph-steps (up to the rounding of Adam's capturable kernel)."""
    img = tiny_image(48, 64)
    plain = fit(config(strategy=name, iters=40, compile=compile), img, "cuda").metrics
    replays = []
    original = StepGraphs.run
    monkeypatch.setattr(StepGraphs, "run", lambda self, *a: replays.append(original(self, *a)) or replays[-1])
    graphed = fit(config(strategy=name, iters=40, compile=compile, graph_steps=True), img, "cuda").metrics
    covered = name in COVERED
    assert len(replays) == 40 and all((r is not None) == covered for r in replays)
    np.testing.assert_allclose(graphed["loss"].iloc[1:], plain["loss"].iloc[1:], rtol=1e-4)
    np.testing.assert_allclose(graphed["psnr"], plain["psnr"], atol=1e-3)
