from strategies import register_strategy
from strategies.base import Batch, Strategy


@register_strategy("standard")
class Standard(Strategy):
    """Full batch: every pixel at every step (the tables' "Stand." row)."""

    uses_profile = False

    def choose(self, step):
        return Batch(indices=None)

    def step_kind(self, step):
        return "full"

    def provides_full_pred(self, step):
        # The training forward over every pixel is itself the evaluation forward (the fit loop reuses it).
        return True
