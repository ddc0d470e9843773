import math

import torch

from benchmark.errors import BenchError, Range, at_least
from benchmark.ntk import ntk_scores
from strategies import register_strategy
from strategies.base import Batch, Strategy


@register_strategy("nint")
class NINT(Strategy):
    """NINT: NTK-guided top-k share (1−ξ)·exp(−λ⌊u/α⌋), top-residual for the rest of 1−ξ, random ξ.

    u counts selections (from 1); the NTK part is recomputed at u = 1 and every α-th selection and cached in
    between; once its share falls below `cutoff` the NTK is no longer computed (the cache keeps being cut).
    Switches: `score` "kg" (K·g, the paper) or "primal" (‖f(x)‖², the release); `decay` "paper"
    (exp(−λ⌊u/α⌋)) or "released" (exp(⌊−λu/α⌋)); `top_k` off draws the NTK part ∝ (s − min s) and the
    residual part uniformly. `ntk_share` None means 1 − ξ. Under --bf16-scoring the residual part ranks by the
    approximate forward (the NTK part stays float32).
    """

    defaults = {
        "xi": 0.7,
        "alpha": 10,
        "lam": 1.0,
        "cutoff": 1e-3,
        "ntk_share": None,
        "top_k": True,
        "score": "kg",
        "decay": "paper",
    }
    ranges = {"xi": Range(0.0, 1.0), "alpha": at_least(1, integer=True), "lam": at_least(0.0),
              "cutoff": Range(0.0, 1.0), "ntk_share": Range(0.0, 1.0, optional=True)}

    @classmethod
    def validate(cls, p):
        share = 1.0 - p["xi"] if p["ntk_share"] is None else p["ntk_share"]
        if p["xi"] + share > 1.0 + 1e-9:
            raise BenchError(f"xi + ntk_share must be at most 1, got xi={p['xi']} ntk_share={share}")
        if p["score"] not in ("kg", "primal"):
            raise BenchError(f"score must be 'kg' (paper) or 'primal' (release), got {p['score']!r}")
        if p["decay"] not in ("paper", "released"):
            raise BenchError(f"decay must be 'paper' or 'released', got {p['decay']!r}")

    def __init__(self, task, **params):
        super().__init__(task, **params)
        p = self.params
        self.xi = float(p["xi"])
        self.share0 = 1.0 - self.xi if p["ntk_share"] is None else float(p["ntk_share"])
        self.calls = 0
        self.share = self.share0
        self.cached = torch.empty(0, dtype=torch.long, device=task.device)

    def ntk_share(self, u: int) -> float:
        """NTK share at selection u (1-based): the paper's or the release's parse of the decay."""
        a, lam = int(self.params["alpha"]), float(self.params["lam"])
        if self.params["decay"] == "paper":
            return self.share0 * math.exp(-lam * math.floor(u / a))
        return self.share0 * math.exp(math.floor(-lam * u / a))

    def is_refresh(self, u: int) -> bool:
        return u == 1 or u % int(self.params["alpha"]) == 0

    def split(self, n: int) -> tuple[int, int, int]:
        """(NTK, residual, random) counts for a budget n under the current share."""
        n_ntk = math.floor(n * self.share)
        n_res = max(0, math.floor(n * (1.0 - self.share - self.xi)))
        return n_ntk, n_res, n - n_ntk - n_res

    def choose(self, step):
        task, p = self.task, self.params
        self.calls += 1
        u = self.calls
        n = task.budget(step)
        pred = None
        if self.is_refresh(u):
            self.share = self.ntk_share(u)
            if self.share >= p["cutoff"] and n < task.n_pixels:
                score, pred = ntk_scores(task, p["score"])
                k = min(math.floor(n * self.share), task.n_pixels)
                if p["top_k"]:
                    self.cached = torch.topk(score, k).indices
                else:
                    weights = (score - score.min()).clamp_min(torch.finfo(score.dtype).tiny)
                    self.cached = torch.multinomial(weights, k, replacement=False, generator=task.generator)
        if n >= task.n_pixels:
            return Batch(indices=None)
        if pred is None:
            pred = task.forward_scoring()  # the NTK's own prediction above is always exact
        n_ntk, n_res, _ = self.split(n)
        ntk_idx = self.cached[:n_ntk]
        taken = torch.zeros(task.n_pixels, dtype=torch.bool, device=task.device)
        taken.index_fill_(0, ntk_idx, True)  # not taken[idx] = True: that copies True to the GPU and waits
        parts = [ntk_idx]
        if n_res > 0:
            if p["top_k"]:
                res_score = (task.targets - pred).abs().sum(dim=1).masked_fill_(taken, -math.inf)
            else:
                res_score = task.random_keys().masked_fill_(taken, -1.0)
            res_idx = torch.topk(res_score, n_res, sorted=False).indices
            taken.index_fill_(0, res_idx, True)
            parts.append(res_idx)
        n_rand = n - int(ntk_idx.numel()) - n_res  # also fills any shortfall of the cached NTK part
        if n_rand > 0:
            keys = task.random_keys().masked_fill_(taken, -1.0)
            parts.append(torch.topk(keys, n_rand, sorted=False).indices)
        return Batch(indices=torch.cat(parts), full_pred=pred if task.exact_scoring else None)

    def step_kind(self, step):
        """"ntk" (a refresh that computes the NTK), "scoring" (a full no-grad forward for the residual part),
        "full" (every pixel, no selection), or "reuse"; the same tests as `choose`, without changing state."""
        if not self._recompute_here(step):
            return "reuse"
        u, n = self.calls + 1, self.task.budget(step)
        if self.is_refresh(u) and self.ntk_share(u) >= self.params["cutoff"] and n < self.task.n_pixels:
            return "ntk"
        return "full" if n >= self.task.n_pixels else "scoring"

    def provides_full_pred(self, step):
        return self._recompute_here(step) and self.task.exact_scoring


@register_strategy("nint-released")
class NINTReleased(NINT):
    """NINT as the released code computes it: score ‖f(x)‖² (the JVP's primal) and decay exp(⌊−λu/α⌋)."""

    defaults = {**NINT.defaults, "score": "primal", "decay": "released"}


@register_strategy("ntk", aliases={"ntk-only": {}})
class NTKOnly(NINT):
    """NTK-only arm: the whole budget is the top-k of ‖K·g‖, recomputed every `alpha` selections (default 1)."""

    defaults = {**NINT.defaults, "xi": 0.0, "ntk_share": 1.0, "lam": 0.0, "alpha": 1, "cutoff": 0.0}
