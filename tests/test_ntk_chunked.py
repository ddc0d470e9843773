"""The NTK's VJP and JVP run over bounded chunks of pixels, and the scores equal the one-pass scores."""
from __future__ import annotations

import pytest
import torch

from benchmark import ntk
from benchmark.ntk import ntk_scores
from conftest import make_task, tiny_image


@pytest.mark.parametrize("variant", ["kg", "primal"])
@pytest.mark.parametrize("chunk", [1, 50, 128, 479])
def test_chunked_scores_equal_the_one_pass_scores_in_float64(variant, chunk):
    task = make_task(tiny_image(24, 20), dtype=torch.float64)  # 480 pixels
    whole, pred = ntk_scores(task, variant, chunk=task.n_pixels)
    parts, pred_c = ntk_scores(task, variant, chunk=chunk)
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=1e-12 * float(whole.abs().max()))
    torch.testing.assert_close(pred_c, pred, rtol=1e-12, atol=1e-12)


def test_without_a_chunk_size_the_ntk_runs_in_chunks_of_ntk_chunk(monkeypatch):
    """The run's chunk size 0 means one pass for the plain forwards, but the NTK still bounds its passes."""
    monkeypatch.setattr(ntk, "NTK_CHUNK", 64)
    task = make_task(tiny_image(24, 20), dtype=torch.float64)
    seen = []
    task.model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[0]))
    score, _ = ntk_scores(task, "kg")
    assert max(seen) == 64 and sum(seen) == 2 * 480  # every pixel once in the VJP, once in the JVP
    whole, _ = ntk_scores(task, "kg", chunk=480)
    torch.testing.assert_close(score, whole, rtol=1e-12, atol=1e-12 * float(whole.abs().max()))
    own = make_task(tiny_image(24, 20), chunk_size=100)  # the run's own chunk size wins
    seen.clear()
    own.model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[0]))
    ntk_scores(own, "kg")
    assert max(seen) == 100 and sum(seen) == 2 * 480


def test_a_chunk_below_one_pixel_is_refused():
    with pytest.raises(ValueError, match="NTK chunk must be >= 1 pixel, got 0"):
        ntk_scores(make_task(), "kg", chunk=0)
