import math

import cv2
import numpy as np
import torch

from benchmark.errors import Range, at_least
from strategies import register_strategy
from strategies.base import Batch, Strategy


def edge_anchors(gray: np.ndarray, a: float, mu: float = 15.0, max_steps: int = 100) -> np.ndarray:
    """Dilated Canny map whose edge area is searched towards a: thresholds (0.5θ, mult·θ), θ = Otsu's,
    mult *= 1 + mu·(area − a) while the area is outside [0.8a, 1.2a] (at most max_steps tries; mult may go
    negative, and OpenCV's Canny then decides, as in the reference). Returns the boolean (H, W) map."""
    theta, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mult = 1.0
    edges = cv2.Canny(gray, 0.5 * theta, mult * theta)
    area = np.count_nonzero(edges) / edges.size
    for _ in range(max_steps):
        if 0.8 * a <= area <= 1.2 * a:
            break
        mult *= 1.0 + mu * (area - a)
        edges = cv2.Canny(gray, 0.5 * theta, mult * theta)
        area = np.count_nonzero(edges) / edges.size
    return cv2.dilate(edges, np.ones((2, 2), np.uint8), iterations=1) > 0


@register_strategy("expansive")
class Expansive(Strategy):
    """Expansive supervision: fixed edge anchors (a = 0.5·r₀ of the pixels) + ⌊(r(t) − a)·N⌋ uniform others.

    Anchors are computed once (`edge_anchors`) and, if the dilated map holds more than ⌊a·N⌋ pixels, thinned
    at random to exactly that many (seeded). Each selection adds fresh uniform picks among the non-anchors.
    As in the reference there is no top-up: when the edge map holds fewer than a·N pixels the batch is
    smaller than the budget, and the fit loop records the real fraction. Guard (a fix): when r(t) < a (e.g.
    under reverse-cosine) no sources are taken, where the reference's negative slice took almost every pixel.
    If anchors and sources are both empty (tiny images), one uniform pixel is taken so the step has a loss.
    """

    defaults = {"anchor_share": 0.5, "mu": 15.0, "max_steps": 100}
    ranges = {"anchor_share": Range(0.0, 1.0, low_open=True), "mu": at_least(0.0),
              "max_steps": at_least(0, integer=True)}

    def __init__(self, task, **params):
        super().__init__(task, **params)
        p = self.params
        n = task.n_pixels
        self.a = p["anchor_share"] * task.mt_ratio
        gray = cv2.cvtColor(np.ascontiguousarray(task.image_uint8), cv2.COLOR_RGB2GRAY)
        mask = torch.from_numpy(edge_anchors(gray, self.a, p["mu"], int(p["max_steps"])).reshape(-1))
        anchors = mask.nonzero().squeeze(1).to(task.device)
        keep = int(self.a * n)
        if anchors.numel() > keep:
            anchors = anchors[task.randperm(anchors.numel())[:keep]].sort().values
            mask = torch.zeros(n, dtype=torch.bool)
            mask[anchors.cpu()] = True
        self.anchors = anchors
        self.others = (~mask).nonzero().squeeze(1).to(task.device)

    def n_sources(self, step: int) -> int:
        return min(max(0, int((self.task.ratio(step) - self.a) * self.task.n_pixels)), self.others.numel())

    def choose(self, step):
        task = self.task
        if math.isclose(task.ratio(step), 1.0):
            return Batch(indices=None)
        k = self.n_sources(step)
        if k == 0 and self.anchors.numel() == 0:
            k = 1
        sources = self.others[task.randperm(self.others.numel())[:k]]
        return Batch(indices=torch.cat([self.anchors, sources]))
