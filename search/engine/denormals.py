"""Subnormal floats flushed to zero in a process that trains.

A float32 below 1.2e-38 is subnormal, and x86 and ARM CPUs take a slow path for every operation on one. A
network that stops learning (say, weight decay pulling every weight of a dead network towards zero) can
end up with nearly all its weights, activations and gradients subnormal, and from then on each of its
epochs is many times slower than a healthy one: a single such trial can take a good part of a search's
time before the pruner judges it. Flushed to zero, such values cost nothing, and nothing is lost: a
subnormal weight, activation or gradient is far below anything that moves a float32 loss.
bench/denormals.py measures both.

The mode is a register of each thread (MXCSR on x86, FPCR on ARM), set through torch's public
`torch.set_flush_denormal`, and a thread inherits it from the thread that makes it. So it is set when
the data is loaded, before torch makes its intra-op threads for the first parallel operation on it, and
again by each training for the thread that runs it. It stays set for the rest of the process: it cannot
be put back in threads that inherited it. In a Python session that ran parallel torch work before its
first archsearch training, torch's existing threads keep the CPU's default; set
`torch.set_flush_denormal(True)` first thing in such a session to have it everywhere.
"""

from __future__ import annotations

import torch

SUBNORMAL = 1e-39  # a float32 subnormal: nonzero unless the mode flushes it


def flush_denormals() -> bool:
    """Flush subnormal floats to zero in this thread, and in the threads torch makes from it after this;
    False on a CPU without the mode (an old x86), which trains as before."""
    return torch.set_flush_denormal(True)


def flushing() -> bool:
    """Whether this thread flushes subnormals now: torch has no getter, so one is made to flush."""
    return (torch.full((1,), SUBNORMAL) * 1.0).item() == 0.0
