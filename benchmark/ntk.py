"""NTK-weighted pixel scores without forming the kernel: w = K g = J (Jᵀ g) by one VJP and one JVP.

f is the model's output over all pixels (N·C), J its Jacobian w.r.t. the trainable parameters, g the residual
f − y (proportional to ∂L/∂f for MSE). The VJP gives Jᵀg (parameter-shaped), the JVP with that tangent gives
J(Jᵀg): its *tangent output*, not its primal output (which is f itself; the NINT release keeps the primal).
"""
from __future__ import annotations

import warnings

import torch
from torch.func import functional_call, jvp, vjp

from .task import Task

# torch.func's JVP goes through a decomposition that still calls torch.jit.script (deprecated): not ours to fix.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)


def ntk_scores(task: Task, variant: str = "kg") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel score and the full prediction of the current parameters.

    variant "kg": sᵢ = Σ_c (K g)ᵢ,c², the paper's score (squared norm: same ranking as the norm).
    variant "primal": sᵢ = Σ_c f(xᵢ)_c², what the released code computes; it runs the same VJP and JVP, so the
    cost matches the release too.
    """
    model = task.model
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    frozen.update(dict(model.named_buffers()))

    def f(p, x):
        return functional_call(model, ({**p, **frozen}), (x,))

    # VJP: Jᵀg is a sum over pixels, so chunks accumulate.
    preds, v = [], None
    for c in task.chunks():
        x = task.coords[c]
        pred, pull = vjp(lambda p: f(p, x), params)
        g = (pred - task.targets[c]).detach()
        (part,) = pull(g)
        v = part if v is None else {n: v[n] + part[n] for n in names}
        preds.append(pred.detach())
    # JVP: J(Jᵀg) is per pixel, so chunks concatenate.
    scores = []
    for c in task.chunks():
        x = task.coords[c]
        primal, tangent = jvp(lambda p: f(p, x), (params,), (v,))
        out = tangent if variant == "kg" else primal
        if out.is_complex():
            out = out.real
        scores.append(out.detach().pow(2).sum(dim=-1))
    pred = preds[0] if len(preds) == 1 else torch.cat(preds)
    score = scores[0] if len(scores) == 1 else torch.cat(scores)
    return score, pred
