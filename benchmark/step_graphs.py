"""--graph-steps: everything of a training step after the selection, replayed as one CUDA graph.

The sampling strategies' steps are bound by the host that queues their 80–140 kernels, not by the GPU
(`benchmark/bench_host.py`). Once a strategy has chosen its pixels, the rest of the step (gather, forward,
MSE loss, backward, Adam) is the same every step: captured once as a CUDA graph, it costs the host one replay.
The selection stays eager, so strategies keep their Python logic and their random streams.

Covered: a batch of pixel indices (or every pixel) with the base class's unweighted MSE and no
`after_backward` hook (standard, uniform, egra, expansive, int, nint and their variants). Other steps run
as before. The captured forward is the run's (compiled by --compile or --compile max-autotune; torch's own CUDA
graphs, `cudagraphs` and `reduce-overhead`, are refused: in the GPU tests they broke the capture). Needs a CUDA device,
a constant ratio (one batch size) and a constant learning rate (the graph holds the rate it was captured with);
Adam is built `capturable` so that its step count lives on the GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from strategies.base import Batch, Strategy

from .task import Task

WARMUP_STEPS = 3  # eager steps on a side stream before a capture, as CUDA graph capture asks (then undone)


@dataclass
class CapturedStep:
    graph: torch.cuda.CUDAGraph
    indices: torch.Tensor | None  # the static input: the selection is copied here before each replay
    pred: torch.Tensor  # static outputs, overwritten by each replay
    loss: torch.Tensor
    grads: list[torch.Tensor]  # kept alive: the graph writes the gradients here


class StepGraphs:
    """The captured steps of one fit, one per batch size, captured before the timed loop."""

    def __init__(self, task: Task, optimizer: torch.optim.Optimizer):
        self.task = task
        self.optimizer = optimizer
        self.captured: dict[int | None, CapturedStep] = {}

    @staticmethod
    def covers(strategy: Strategy, batch: Batch) -> bool:
        """Can this step run as the captured step: pixel indices (or all pixels), plain MSE, no hook?"""
        cls = type(strategy)
        return (batch.weights is None and batch.coords is None and batch.targets is None
                and cls.loss is Strategy.loss and cls.after_backward is Strategy.after_backward)

    @staticmethod
    def key(batch: Batch) -> int | None:
        return None if batch.indices is None else int(batch.indices.numel())

    def prepare(self, strategy: Strategy, batch: Batch, step: int) -> None:
        """Capture the step for `batch`'s size if the strategy's steps are covered (untimed, state untouched)."""
        if self.covers(strategy, batch) and self.key(batch) not in self.captured:
            self.captured[self.key(batch)] = self.capture(strategy, batch, step)

    def run(self, strategy: Strategy, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Replay the captured step for this batch; None when there is none (the caller steps eagerly)."""
        entry = self.captured.get(self.key(batch)) if self.covers(strategy, batch) else None
        if entry is None:
            return None
        if entry.indices is not None:
            entry.indices.copy_(batch.indices)
        entry.graph.replay()
        return entry.pred, entry.loss

    def core(self, strategy: Strategy, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A step after its selection, without zeroing the gradients (the captured backward writes them anew)."""
        x, y = self.task.training_pairs(batch)
        pred = self.task.predict(x)
        loss = strategy.loss(pred, y, batch, step)
        loss.backward()
        self.optimizer.step()
        return pred, loss

    def capture(self, strategy: Strategy, batch: Batch, step: int) -> CapturedStep:
        """Warm up on a side stream, capture, then put the parameters and Adam's state back in place, so the
        fit starts from exactly the state it would have had without the capture."""
        opt = self.optimizer
        params = [p for group in opt.param_groups for p in group["params"]]
        saved = [p.detach().clone() for p in params]
        saved_state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
                       for p in params if p in opt.state}
        static = Batch(indices=None if batch.indices is None else batch.indices.clone())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                opt.zero_grad(set_to_none=True)
                self.core(strategy, static, step)
        torch.cuda.current_stream().wait_stream(side)
        opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            pred, loss = self.core(strategy, static, step)
        grads = [p.grad for p in params]
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
            for p in params:
                before = saved_state.get(p)
                for name, value in opt.state[p].items():
                    if torch.is_tensor(value):
                        # a state the optimizer did not have yet is a fresh one: zeros, step 0
                        value.copy_(before[name]) if before is not None else value.zero_()
        return CapturedStep(graph, static.indices, pred, loss, grads)
