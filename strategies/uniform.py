from strategies import register_strategy
from strategies.base import Batch, Strategy


@register_strategy("uniform", aliases={"random-only": {}})
class Uniform(Strategy):
    """A fresh uniform subset of ⌊r(t)·N⌋ pixels without replacement (seeded), every recompute step."""

    def choose(self, step):
        n = self.task.budget(step)
        if n >= self.task.n_pixels:
            return Batch(indices=None)
        return Batch(indices=self.task.randperm(self.task.n_pixels)[:n])
