"""Subnormal floats flushed to zero in a process that trains.

A float32 below 1.2e-38 is subnormal, and x86 and ARM CPUs take a slow path for every operation on one. A
network that stops learning (say, weight decay pulling every weight of a dead network towards zero) can
end up with nearly all its weights, activations and gradients subnormal, and from then on each of its
epochs is many times slower than a healthy one: a single such trial can take a good part of a search's
time before the pruner judges it. Flushed to zero, such values cost nothing, and nothing is lost: a
subnormal weight, activation or gradient is far below anything that moves a float32 loss.
bench/denormals.py measures both.

The mode is a register of each thread (MXCSR on x86, FPCR on ARM), set through torch's public
`torch.set_flush_denormal`, and a thread inherits it from the thread that makes it. So it is set while
the data is loaded, when torch makes its intra-op threads for the first parallel operation on it (they
keep it: only torch's kernels run on them), and while a model trains, in the thread that trains it. The
calling thread gets its own mode back after each: Python code around a training (a notebook's, a test
library's) still sees IEEE floats. In a session whose torch made its threads before its first archsearch
training, those threads keep the CPU's default; `torch.set_flush_denormal(True)` first thing in such a
session has them flush too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SUBNORMAL = 1e-39  # a float32 subnormal: nonzero unless the mode flushes it


def flushing() -> bool:
    """Whether this thread flushes subnormals now: torch has no getter, so one is made to flush."""
    return (torch.full((1,), SUBNORMAL) * 1.0).item() == 0.0


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Flush subnormal floats to zero in this thread, and in the threads torch makes in the block, then put
    this thread's mode back; a CPU without the mode (an old x86) runs the block as before."""
    if flushing() or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
