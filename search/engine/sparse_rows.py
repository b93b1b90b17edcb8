"""A full-batch input whose entries are mostly one value, kept as its other entries, for the CPU step.

A full-batch CPU step spends most of its time on the first layer's two products with the whole input:
x W^T forward and G^T x for the weight gradient. MNIST's inputs are 81% background (pixels/255 - 0.5 =
-0.5), so with x = c + s, where c is that common value and s holds the rest:
    x W^T + b = s W^T + (b + c W 1)        G^T x = G^T s + c (G^T 1) 1^T
and G^T 1 is the bias gradient. Both products with s are sums of weighted table rows over s's entries, which
is what F.embedding_bag computes, with multiply-adds for s's entries only (about a fifth of the dense
products' on MNIST); bench/design_choices.py times it against the dense products and torch's sparse CSR
matmul. The rows come in chunks that keep each chunk's activations and gradients in cache, which also
speeds up everything after the first layer. The chunks' index lists are built once per input tensor and
process; the results match the dense step up to float rounding (tests/test_sparse_rows.py).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

# Rows per chunk: more rows push a chunk's activations and gradients out of cache, fewer pay the per-chunk
# op overhead more often (bench/design_choices.py measures a range of sizes).
CHUNK_ROWS = 4096
# The largest share of other entries kept sparse: the sparse step's work grows with that share and the
# dense step's does not, so past it the dense step is as fast (bench/design_choices.py measures both).
MAX_DENSITY = 0.5
SAMPLE_ROWS = 1024  # rows in which the common value is looked for

_cache: tuple[weakref.ref, int, SparseRows | None] | None = None


@dataclass(frozen=True)
class Chunk:
    """Rows [start, stop) of s: its entries row by row (forward) and column by column (weight gradient)."""

    start: int
    stop: int
    columns: torch.Tensor
    values: torch.Tensor
    row_offsets: torch.Tensor
    rows: torch.Tensor
    values_by_column: torch.Tensor
    column_offsets: torch.Tensor


@dataclass(frozen=True)
class SparseRows:
    common: float
    chunks: tuple[Chunk, ...]

    @staticmethod
    def of(x: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> SparseRows | None:
        """The sparse form of a 2-D CPU tensor, or None where it does not pay; the last one is kept."""
        global _cache
        if _cache is not None and _cache[0]() is x and _cache[1] == x._version and chunk_rows == CHUNK_ROWS:
            return _cache[2]
        result = _build(x, chunk_rows)
        if chunk_rows == CHUNK_ROWS:
            _cache = (weakref.ref(x), x._version, result)
        return result

    def step_view(self, linear: nn.Linear) -> FirstLayer:
        """The first layer's products for one step: its weights are fixed until the step ends."""
        weight = linear.weight
        return FirstLayer(linear, weight.t().contiguous(), linear.bias + self.common * weight.sum(dim=1), self.common)


class FirstLayer:
    """The first layer of one full-batch step, chunk by chunk: project forward, add up the weight gradient.

    The gradients start at zero (MLPStep.full_batch zeroes them) and every chunk adds its share."""

    def __init__(self, linear: nn.Linear, table: torch.Tensor, bias: torch.Tensor, common: float):
        self.linear = linear
        self.table = table
        self.bias = bias
        self.common = common
        self.chunk: Chunk | None = None

    def project(self) -> torch.Tensor:
        chunk = self.chunk
        z = F.embedding_bag(chunk.columns, self.table, chunk.row_offsets, mode="sum", per_sample_weights=chunk.values)
        return z.add_(self.bias)

    def add_weight_grad(self, grad: torch.Tensor) -> None:
        """grad: d loss / d output for this chunk's rows, (rows, outputs); adds G^T s."""
        chunk = self.chunk
        self.linear.weight.grad.t().add_(
            F.embedding_bag(
                chunk.rows,
                grad.contiguous(),
                chunk.column_offsets,
                mode="sum",
                per_sample_weights=chunk.values_by_column,
            )
        )

    def finish(self) -> None:
        """Add c (G^T 1) 1^T, once the bias gradient holds every chunk's G^T 1."""
        self.linear.weight.grad.add_(self.linear.bias.grad.unsqueeze(1), alpha=self.common)


def _build(x: torch.Tensor, chunk_rows: int) -> SparseRows | None:
    if x.device.type != "cpu" or x.dim() != 2 or not len(x):
        return None
    values, counts = torch.unique(x[:SAMPLE_ROWS], return_counts=True)
    common = values[counts.argmax()]
    features = x.shape[1]
    chunks = []
    kept = 0
    for start in range(0, len(x), chunk_rows):
        part = x[start : start + chunk_rows]
        rows, columns = (part != common).nonzero(as_tuple=True)
        kept += len(rows)
        if kept > MAX_DENSITY * x.numel():
            return None
        values = part[rows, columns] - common
        order = torch.argsort(columns, stable=True)
        chunks.append(
            Chunk(
                start,
                start + len(part),
                columns.int(),
                values,
                _offsets(rows, len(part)),
                rows[order].int(),
                values[order],
                _offsets(columns, features),
            )
        )
    return SparseRows(common.item(), tuple(chunks))


def _offsets(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Where each key's run starts in a list sorted by key (embedding_bag's offsets), as int32."""
    sizes = torch.bincount(keys, minlength=count)
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]).int()
