"""No strategy makes the host wait for the GPU inside a timed step.

A step that reads a GPU value on the host (`.item()`, `float(t)`, a boolean mask, `nonzero`) or writes a Python
scalar through an index (`x[idx] = True` copies the scalar to the GPU and waits for the stream) stalls the
pipeline: on an H100 two such writes cost NINT about 2 ms per step. The CPU test spots those ops with a dispatch
mode, so it runs in CI. It cannot see a copy of new host data to the GPU (`torch.tensor([...], device=...)` in a
step, which also waits): the CUDA test asks the GPU itself (torch.cuda.set_sync_debug_mode) where one is present.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import strategies
from benchmark.fit import train_step
from conftest import make_task, tiny_image

# Ops that need a device-to-host read on a GPU.
READS_ON_HOST = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive"}
INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}
STEPS = 140  # past NINT's NTK phase (refreshes at u = 1, 10, ..., 50) and one EVOS fitness step after step 0


class HostSyncOps(TorchDispatchMode):
    """Records the ops that would wait for the GPU: host reads, boolean-mask indexing, scalar index writes."""

    def __init__(self):
        super().__init__()
        self.found: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in READS_ON_HOST:
            self.found.add(name)
        elif name in INDEX_OPS:
            if any(i is not None and i.dtype == torch.bool for i in args[1]):
                self.found.add(f"{name} with a boolean mask")
            if name != "index" and args[2].dim() == 0:
                self.found.add(f"{name} of a scalar")
        return func(*args, **(kwargs or {}))


def may_sync(strategy, step: int) -> bool:
    """EVOS's crossover (its fitness steps, every few dozen) sizes its parts from the data on the host."""
    return hasattr(strategy, "is_fitness") and strategy.is_fitness(step)


def build(name: str, device: str = "cpu"):
    task = make_task(tiny_image(32, 32), iters=300, device=device)
    cls, params = strategies.resolve(name)
    strategy = cls(task, **params)
    # SGD: Adam reads its step count on the host on a CPU (on a GPU that count is a CPU tensor, no wait)
    return strategy, torch.optim.SGD(task.model.parameters(), lr=1e-4)


@pytest.mark.parametrize("name", sorted(strategies.STRATEGIES))
def test_no_host_sync_in_a_step(name):
    strategy, opt = build(name)
    syncing = {}
    for t in range(STEPS):
        allowed = may_sync(strategy, t)
        with HostSyncOps() as ops:
            train_step(strategy, opt, t)
        if ops.found and not allowed:
            syncing[t] = sorted(ops.found)
    assert not syncing, f"{name} waits for the GPU at steps {list(syncing)[:5]}: {next(iter(syncing.values()))}"


def test_detector_sees_the_writes_it_forbids():
    """The check can fail: the pre-fix NINT write `taken[idx] = True` and a mask read are both spotted."""
    taken = torch.zeros(10, dtype=torch.bool)
    with HostSyncOps() as ops:
        taken[torch.tensor([1, 2])] = True
        torch.arange(10.0)[taken]
    assert ops.found == {"index_put_ of a scalar", "index with a boolean mask"}
    with HostSyncOps() as ops:
        taken.index_fill_(0, torch.tensor([3]), True)
    assert not ops.found


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", sorted(strategies.STRATEGIES))
def test_no_host_sync_on_a_gpu(name):
    strategy, opt = build(name, "cuda")
    for t in range(STEPS):
        allowed = may_sync(strategy, t)
        torch.cuda.set_sync_debug_mode(0 if allowed else "error")
        try:
            train_step(strategy, opt, t)
        finally:
            torch.cuda.set_sync_debug_mode(0)
