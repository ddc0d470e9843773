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

# Pixels per VJP/JVP pass when the run sets no --chunk-size: the VJP keeps every layer's activations of its chunk
# for the pull-back, so one pass over a 512² image held ~10 activation tensors of 262k × 256 floats at once.
NTK_CHUNK = 65536

# torch.func's JVP goes through a decomposition that still calls torch.jit.script (deprecated): not ours to fix.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)


def ntk_scores(task: Task, variant: str = "kg", chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel score and the full prediction of the current parameters.

    The VJP and the JVP run over `chunk` pixels at a time (default: the run's chunk size, else NTK_CHUNK), so
    peak memory is bounded by the chunk; the scores equal the one-pass ones up to the order of the VJP's sum.
    A task that already holds this step's scores (a packed fit scores all its members at once) returns them.

    variant "kg": sᵢ = Σ_c (K g)ᵢ,c², the paper's score (squared norm: same ranking as the norm).
    variant "primal": sᵢ = Σ_c f(xᵢ)_c², what the released code computes; it runs the same VJP and JVP, so the
    cost matches the release too.
    """
    found = task.precomputed_ntk(variant)
    if found is not None:
        return found
    model = task.model
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    frozen.update(dict(model.named_buffers()))

    def f(p, x):
        return functional_call(model, ({**p, **frozen}), (x,))

    slices = list(pixel_chunks(task, chunk))
    # VJP: Jᵀg is a sum over pixels, so chunks accumulate.
    preds, v = [], None
    for c in slices:
        x = task.coords[c]
        pred, pull = vjp(lambda p: f(p, x), params)
        g = (pred - task.targets[c]).detach()
        (part,) = pull(g)
        del pull  # frees this chunk's saved activations before the next chunk's forward
        v = part if v is None else {n: v[n] + part[n] for n in names}
        preds.append(pred.detach())
    # JVP: J(Jᵀg) is per pixel, so chunks concatenate.
    scores = []
    for c in slices:
        x = task.coords[c]
        primal, tangent = jvp(lambda p: f(p, x), (params,), (v,))
        out = tangent if variant == "kg" else primal
        if out.is_complex():
            out = out.real
        scores.append(out.detach().pow(2).sum(dim=-1))
    pred = preds[0] if len(preds) == 1 else torch.cat(preds)
    score = scores[0] if len(scores) == 1 else torch.cat(scores)
    return score, pred


def pixel_chunks(task: Task, chunk: int | None = None):
    """Slices of at most `chunk` pixels (default: the task's chunk size, else NTK_CHUNK) covering every pixel."""
    size = chunk if chunk is not None else (task.chunk_size or NTK_CHUNK)
    if size < 1:
        raise ValueError(f"NTK chunk must be >= 1 pixel, got {size}")
    n = task.n_pixels
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
