import torch

from strategies import register_strategy
from strategies.base import Batch, Strategy


@register_strategy("int", aliases={"residual-only": {}})
class INT(Strategy):
    """INT: top-⌊r(t)·N⌋ pixels by L1 error summed over channels, from a full no-grad forward.

    With top_k off, a uniform subset instead (the forward still runs, as in INT's code). Under --bf16-scoring
    the forward is the approximate one, and the fit loop evaluates with its own.
    """

    defaults = {"top_k": True}

    def choose(self, step):
        task = self.task
        pred = task.forward_scoring()
        full = pred if task.exact_scoring else None
        n = task.budget(step)
        if n >= task.n_pixels:
            return Batch(indices=None, full_pred=full)
        if self.params["top_k"]:
            score = (task.targets - pred).abs().sum(dim=1)
            idx = torch.topk(score, n, sorted=False).indices
        else:
            idx = task.randperm(task.n_pixels)[:n]
        return Batch(indices=idx, full_pred=full)

    def step_kind(self, step):
        return "scoring" if self._recompute_here(step) else "reuse"  # a full no-grad forward, then the step

    def provides_full_pred(self, step):
        return self._recompute_here(step) and self.task.exact_scoring
