import cv2
import numpy as np
import torch

from benchmark.errors import BenchError, Range, at_least
from strategies import register_strategy
from strategies.base import Batch, Strategy


@register_strategy("egra")
class EGRA(Strategy):
    """EGRA: ⌊r(t)·N⌋ pixels drawn without replacement, edge pixels (Canny 30/40, jittered) favoured ≈1.39×.

    Edges are found once (OpenCV gray, Canny(low, high)). Every selection shifts each edge pixel's flat index
    by a random integer in [shift_min, shift_max] mod N (a row-major jitter that drops the original edge
    positions, as in EVOS's code) and draws by multinomial over p·E′ + (1 − p)·base. The defaults are the
    reference's (p 0.0025, base 4096/640000 from its NeRF batch), so EGRA stays close to uniform sampling.
    """

    defaults = {"low": 30.0, "high": 40.0, "p": 0.0025, "base": 4096 / 640000, "shift_min": 6, "shift_max": 9}
    # Canny thresholds on the 8-bit gray image; a shift of s and of s mod N are the same jitter
    ranges = {"low": at_least(0.0), "high": at_least(0.0), "p": Range(0.0, 1.0), "base": at_least(0.0),
              "shift_min": at_least(0, integer=True), "shift_max": at_least(0, integer=True)}

    @classmethod
    def validate(cls, p):
        if p["base"] <= 0 and p["p"] < 1.0:
            raise BenchError(f"egra base (non-edge weight) must be > 0, got {p['base']}")
        if p["shift_min"] > p["shift_max"]:
            raise BenchError(f"egra needs shift_min <= shift_max, got shift_min={p['shift_min']}, "
                             f"shift_max={p['shift_max']}")

    def __init__(self, task, **params):
        super().__init__(task, **params)
        p = self.params
        gray = cv2.cvtColor(np.ascontiguousarray(task.image_uint8), cv2.COLOR_RGB2GRAY)
        edges = cv2.Canny(gray, float(p["low"]), float(p["high"])).reshape(-1) > 0
        self.edge_idx = torch.from_numpy(np.flatnonzero(edges)).to(task.device)

    def weights(self) -> torch.Tensor:
        """One draw of the jittered edge map turned into sampling weights (unnormalised)."""
        task, p = self.task, self.params
        n = task.n_pixels
        shift = torch.randint(int(p["shift_min"]), int(p["shift_max"]) + 1, self.edge_idx.shape,
                              generator=task.generator, device=task.device)
        weights = torch.full((n,), (1.0 - p["p"]) * p["base"], device=task.device)
        weights[(self.edge_idx + shift) % n] += p["p"]  # collisions merge, as in the reference
        return weights

    def choose(self, step):
        n = self.task.budget(step)
        if n >= self.task.n_pixels:
            return Batch(indices=None)
        return Batch(indices=torch.multinomial(self.weights(), n, replacement=False, generator=self.task.generator))
