"""The engine's design choices, each timed against the alternative it replaced, in one run on one machine.

Run as `.venv/bin/python bench/design_choices.py [--quick] [--rounds N] [--data-dir DIR] [--threads N]`.

The comments in search/engine/ say why each choice exists and point here for how much it buys, since
that depends on the CPU, its cache, the BLAS and the thread count. Every case runs the engine's own code
(MLPStep, SparseRows, weight_grad, fused_update) on the 784-64-64-10 tanh MLP with Adam, as the search
trains it:
  (a) a full-batch step over the inputs' sparse rows vs the dense full-batch step, on MNIST's 60,000
      training images and on 60,000 random MNIST-like images with a fifth and with half of the pixels
      lit (either side of sparse_rows.MAX_DENSITY);
  (b) rows per chunk in that sparse step (sparse_rows.CHUNK_ROWS);
  (c) the first layer's two full-batch products three ways: dense BLAS, torch's sparse CSR matmul, and
      the embedding_bag sums the sparse step uses;
  (d) the optimizer over one flat parameter tensor vs one per weight and bias (flatten_parameters), for
      the update alone and for a whole batch-128 step, both through Optimizer.step;
  (e) weight_grad's split-batch product vs one torch.mm, for 60,000 x 784 inputs;
  (f) the bare fused kernel (fused.fused_update) vs Optimizer.step, per call, for Adam and SGD;
  (g) log-softmax with classes as rows, as MLPStep computes it, vs the usual classes as columns;
  (h) tanh in place as 2 sigmoid(2z) - 1 (trainer.tanh_) vs torch's tanh_, for one batch-128 layer, a
      pack of 8 such layers and a 60,000-row full batch;
  (i) a pack's Adam update (search/engine/packed/) for 8 members with their own learning rates: torch's
      fused kernel per group of members with the same values, as a CPU pack takes it, vs one kernel pass
      for the whole pack and a step along each member's rate, as a GPU pack takes it.
Each time is the best of `--rounds` repeats after a warm-up; the variants of a case take turns within
each round, so a burst of other work on a shared box hits them alike. "speed" is the case's first row's
time over the row's time: above 1 is faster than that first row, always an alternative the engine does
not take. `*` marks what the engine does. Nothing is asserted: this is a benchmark, not a test.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.budget import CLASSES, INPUTS
from models.mlp import build_mlp
from search.cli import Parser
from search.engine import packed, sparse_rows
from search.engine.config import TrainConfig
from search.engine.data import PIXEL_LEVELS, Split, load_data, scaled_pixels
from search.engine.fused import fused_update
from search.engine.sparse_rows import SparseRows
from search.engine.trainer import MLPStep, flatten_parameters, make_optimizer, tanh_, weight_grad
from search.errors import UsageError

WIDTHS = (64, 64)
ADAM = TrainConfig(optimizer="adam", lr=1e-3, device="cpu")
SGD = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, device="cpu")
ROWS = 60_000  # the synthetic inputs' rows, as many as MNIST's training images
DENSITIES = (0.2, 0.5)
CHUNK_SIZES = (1024, 2048, 4096, 8192, 16384, ROWS)
QUICK_CHUNK_SIZES = (2048, 4096, 8192)
SMALL_BATCH = 128
STEPS_PER_REPEAT = 100  # batch-128 steps per timed repeat: one step is too short to time alone
UPDATES_PER_REPEAT = 500  # bare optimizer updates per timed repeat


@dataclass(frozen=True)
class Variant:
    label: str
    run: Callable[[], object]
    calls: int = 1  # calls per timed repeat; the time reported is per call
    ours: bool = False


@dataclass(frozen=True)
class Row:
    case: str
    label: str
    seconds: float
    speed: float
    ours: bool


def best_times(variants: list[Variant], rounds: int) -> list[float]:
    """Each variant's best time per call over `rounds` rounds, after one warm-up call of each; turns interleave."""
    for variant in variants:
        variant.run()
    best = [float("inf")] * len(variants)
    for _ in range(rounds):
        for index, variant in enumerate(variants):
            start = time.perf_counter()
            for _ in range(variant.calls):
                variant.run()
            best[index] = min(best[index], (time.perf_counter() - start) / variant.calls)
    return best


def compare(case: str, variants: list[Variant], rounds: int) -> list[Row]:
    """Time the variants and print them: the first one is the alternative the others are compared with."""
    times = best_times(variants, rounds)
    rows = [Row(case, v.label, t, times[0] / t, v.ours) for v, t in zip(variants, times, strict=True)]
    for index, row in enumerate(rows):
        name = row.case if index == 0 else ""
        print(f"  {name:<34} {'*' if row.ours else ' '} {row.label:<40} {duration(row.seconds):>10} {row.speed:>7.2f}x")
    sys.stdout.flush()
    return rows


def duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def section(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'case':<34}   {'variant':<40} {'time':>10} {'speed':>8}")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def mnist_like(rows: int, density: float, seed: int = 0) -> Split:
    """Pixels/255 - 0.5 with `density` of them lit at random, as tests/test_sparse_rows.py makes them."""
    generator = torch.Generator().manual_seed(seed)
    lit = torch.rand(rows, INPUTS, generator=generator) < density
    pixels = torch.randint(1, PIXEL_LEVELS + 1, (rows, INPUTS), generator=generator, dtype=torch.uint8) * lit
    return Split(scaled_pixels(pixels.float()), torch.randint(0, CLASSES, (rows,), generator=generator))


def mlp_step(config: TrainConfig = ADAM) -> MLPStep:
    """The trainer's step for the 784-64-64-10 tanh MLP: parameters flattened, the bare fused update."""
    torch.manual_seed(0)
    step = MLPStep.build(build_mlp(list(WIDTHS)), config)
    assert step is not None
    return step


@contextlib.contextmanager
def any_density() -> Iterator[None]:
    """Build sparse rows whatever their density, to time the sparse step where the engine would not take it."""
    kept = sparse_rows.MAX_DENSITY
    sparse_rows.MAX_DENSITY = 1.0
    try:
        yield
    finally:
        sparse_rows.MAX_DENSITY = kept


def build_sparse(x: torch.Tensor, chunk_rows: int = sparse_rows.CHUNK_ROWS) -> tuple[SparseRows, float]:
    sparse_rows._cache = None  # SparseRows.of keeps its last result: time a fresh build
    with any_density():
        start = time.perf_counter()
        sparse = SparseRows.of(x, chunk_rows=chunk_rows)
        seconds = time.perf_counter() - start
    assert sparse is not None
    return sparse, seconds


def density(sparse: SparseRows, x: torch.Tensor) -> float:
    return sum(len(chunk.values) for chunk in sparse.chunks) / x.numel()


def full_batch_step(inputs: list[tuple[str, Split]], rounds: int) -> None:
    section("(a) full-batch step, 784-64-64-10 tanh, Adam: dense vs sparse rows (sparse_rows.py)")
    for name, split in inputs:
        sparse, built = build_sparse(split.x)
        share = density(sparse, split.x)
        taken = "sparse" if share <= sparse_rows.MAX_DENSITY else "dense"
        dense_step, sparse_step = mlp_step(), mlp_step()
        compare(
            f"{name}, {share:.0%} lit",
            [
                Variant(
                    "dense step (MLPStep on all rows)", lambda s=dense_step, d=split: s(d.x, d.y), ours=taken == "dense"
                ),
                Variant(
                    "sparse step (MLPStep.full_batch)",
                    lambda s=sparse_step, r=sparse, d=split: s.full_batch(r, d.x, d.y),
                    ours=taken == "sparse",
                ),
            ],
            rounds,
        )
        print(f"  {'':<34}   {'(sparse rows built once, untimed)':<40} {duration(built):>10}")


def chunk_rows(split: Split, sizes: tuple[int, ...], rounds: int) -> None:
    section(f"(b) rows per chunk in the sparse step, MNIST (CHUNK_ROWS = {sparse_rows.CHUNK_ROWS})")
    variants = []
    for rows in sizes:
        sparse, _ = build_sparse(split.x, rows)
        step = mlp_step()
        variants.append(
            Variant(
                f"{rows:,} rows per chunk ({len(sparse.chunks)} chunk{'s' if len(sparse.chunks) > 1 else ''})",
                lambda s=step, r=sparse: s.full_batch(r, split.x, split.y),
                ours=rows == sparse_rows.CHUNK_ROWS,
            )
        )
    compare("sparse full-batch step", variants, rounds)


def first_layer_products(split: Split, rounds: int) -> None:
    section("(c) first layer's full-batch products, MNIST, 784 -> 64: dense, sparse CSR, embedding_bag")
    x = split.x
    sparse, _ = build_sparse(x)
    torch.manual_seed(0)
    linear = nn.Linear(INPUTS, WIDTHS[0])
    linear.weight.requires_grad_(False)
    linear.bias.requires_grad_(False)
    linear.weight.grad = torch.zeros_like(linear.weight)
    linear.bias.grad = torch.zeros_like(linear.bias)
    weight_t = linear.weight.t().contiguous()
    s = x - sparse.common
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        s_csr = s.to_sparse_csr()  # rows of s, for s W^T
        s_t_csr = s.t().contiguous().to_sparse_csr()  # rows of s^T, for s^T G
    del s
    grad = torch.randn(len(x), WIDTHS[0])  # d loss / d output, (rows, outputs) as the step has it
    out = torch.empty(WIDTHS[0], INPUTS)
    first = sparse.step_view(linear)

    def sparse_forward() -> None:
        for chunk in sparse.chunks:
            first.chunk = chunk
            first.project()

    def sparse_weight_grad() -> None:
        linear.weight.grad.zero_()
        linear.bias.grad.copy_(grad.sum(dim=0))
        for chunk in sparse.chunks:
            first.chunk = chunk
            first.add_weight_grad(grad[chunk.start : chunk.stop])
        first.finish()

    compare(
        "forward x W^T + b",
        [
            Variant("dense: torch.addmm", lambda: torch.addmm(linear.bias, x, weight_t)),
            Variant("torch sparse CSR matmul", lambda: (s_csr @ weight_t).add_(first.bias)),
            Variant("embedding_bag over chunks", sparse_forward, ours=True),
        ],
        rounds,
    )
    compare(
        "weight gradient G^T x",
        [
            Variant("dense: weight_grad", lambda: weight_grad(grad.t(), x, out)),
            Variant(
                "torch sparse CSR matmul",
                lambda: (s_t_csr @ grad).t().add_(linear.bias.grad.unsqueeze(1), alpha=sparse.common),
            ),
            Variant("embedding_bag over chunks", sparse_weight_grad, ours=True),
        ],
        rounds,
    )


def flat_parameters(split: Split, rounds: int) -> None:
    section("(d) optimizer over one flat tensor vs per weight and bias (flatten_parameters), Adam, Optimizer.step")
    torch.manual_seed(0)
    per_tensor = build_mlp(list(WIDTHS))
    flat_model = copy.deepcopy(per_tensor)
    for param in per_tensor.parameters():
        param.grad = torch.randn_like(param)
    per_tensor_optimizer = make_optimizer(per_tensor.parameters(), ADAM)
    flat = flatten_parameters(flat_model)
    flat.grad.copy_(torch.randn_like(flat))
    flat_optimizer = make_optimizer([flat], ADAM)
    compare(
        "update alone",
        [
            Variant(f"{len(list(per_tensor.parameters()))} tensors", per_tensor_optimizer.step, UPDATES_PER_REPEAT),
            Variant("1 flat tensor", flat_optimizer.step, UPDATES_PER_REPEAT, ours=True),
        ],
        rounds,
    )

    torch.manual_seed(0)
    per_tensor = build_mlp(list(WIDTHS))
    for param in per_tensor.parameters():
        param.grad = torch.zeros_like(param)
    modules = list(per_tensor)
    per_tensor_step = MLPStep(modules[0::2], modules[1::2], 0.0, make_optimizer(per_tensor.parameters(), ADAM))
    flat_step = mlp_step()
    flat_step.update = flat_step.optimizer.step  # the same Optimizer.step on both sides; (f) times the bare kernel
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:SMALL_BATCH]
    x, y = split.x[index], split.y[index]
    compare(
        f"batch-{SMALL_BATCH} step (MLPStep)",
        [
            Variant(f"{len(modules[0::2]) * 2} tensors", lambda: per_tensor_step(x, y), STEPS_PER_REPEAT),
            Variant("1 flat tensor", lambda: flat_step(x, y), STEPS_PER_REPEAT, ours=True),
        ],
        rounds,
    )


def split_weight_grad(split: Split, rounds: int) -> None:
    threads = torch.get_num_threads()
    note = "" if threads > 1 else "; one thread: weight_grad is torch.mm"
    section(f"(e) weight gradient over all {len(split):,} rows of {INPUTS} inputs, {threads} thread(s){note}")
    torch.manual_seed(0)
    out = torch.empty(WIDTHS[0], INPUTS)
    grad = torch.randn(len(split), WIDTHS[0])  # (rows, outputs); the step passes its transpose
    compare(
        "grad_t @ x, 64 x 784 out",
        [
            Variant("one torch.mm", lambda: torch.mm(grad.t(), split.x, out=out)),
            Variant("weight_grad: batch split by thread", lambda: weight_grad(grad.t(), split.x, out), ours=True),
        ],
        rounds,
    )


def bare_kernel(rounds: int) -> None:
    torch.manual_seed(0)
    size = sum(p.numel() for p in build_mlp(list(WIDTHS)).parameters())
    section(f"(f) one optimizer update of {size:,} parameters in one flat tensor: bare fused kernel (fused.py)")
    for name, config in (("Adam, fused", ADAM), (f"SGD momentum {SGD.momentum:g}, fused", SGD)):
        param = nn.Parameter(torch.randn(size))
        param.grad = torch.randn(size)
        optimizer = make_optimizer([param], config)
        optimizer.step()  # the first step makes the state; the bare kernel needs it
        update = fused_update(optimizer)
        kind = "bare kernel" if update != optimizer.step else "Optimizer.step (no bare kernel in this torch)"
        compare(
            name,
            [
                Variant("Optimizer.step()", optimizer.step, UPDATES_PER_REPEAT),
                Variant(f"fused_update(): {kind}", update, UPDATES_PER_REPEAT, ours=True),
            ],
            rounds,
        )


def classes_as_rows(rounds: int) -> None:
    section("(g) log-softmax over 10 classes (MLPStep.forward_backward)")
    for batch, calls in ((SMALL_BATCH, UPDATES_PER_REPEAT), (sparse_rows.CHUNK_ROWS, 50), (ROWS, 5)):
        torch.manual_seed(0)
        logits = torch.randn(batch, CLASSES)
        logits_t = logits.t().contiguous()
        compare(
            f"batch {batch:,}",
            [
                Variant("classes as columns: (batch, 10), dim 1", lambda z=logits: torch.log_softmax(z, dim=1), calls),
                Variant(
                    "classes as rows: (10, batch), dim 0",
                    lambda z=logits_t: torch.log_softmax(z, dim=0),
                    calls,
                    ours=True,
                ),
            ],
            rounds,
        )


def tanh_in_place(rounds: int) -> None:
    section("(h) tanh in place (MLPStep, Pack), on values as a hidden layer sees them")
    for name, shape, calls in (
        (f"batch {SMALL_BATCH}, width {WIDTHS[0]}", (SMALL_BATCH, WIDTHS[0]), UPDATES_PER_REPEAT),
        (f"pack of 8, batch {SMALL_BATCH}", (8, WIDTHS[0], SMALL_BATCH), 100),
        (f"batch {ROWS:,}", (ROWS, WIDTHS[0]), 5),
    ):
        z = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        work = torch.empty_like(z)
        compare(
            name,
            [
                Variant("torch's tanh_", lambda z=z, w=work: w.copy_(z).tanh_(), calls),
                Variant("2 sigmoid(2z) - 1 (trainer.tanh_)", lambda z=z, w=work: tanh_(w.copy_(z)), calls, ours=True),
            ],
            rounds,
        )


def pack_adam_update(split: Split, rounds: int) -> None:
    members = 8
    configs = [dataclasses.replace(ADAM, lr=1e-3 * (1 + index / 10), seed=index) for index in range(members)]
    size = sum(p.numel() for p in build_mlp(list(WIDTHS)).parameters())
    section(f"(i) a pack's Adam update, {members} members of {size:,} parameters with their own learning rates")
    updates = []
    for per_group in (False, True):
        with mock.patch.object(packed.pack, "kernel_per_member_group", lambda device, per_group=per_group: per_group):
            models = [build_mlp(list(WIDTHS)) for _ in configs]
            pack = packed.Pack.build(models, configs, Split(split.x[:SMALL_BATCH], split.y[:SMALL_BATCH]))
        pack.load_coefficients(1)
        pack.grad.normal_()
        updates.append(pack.adam_update)
    compare(
        "Adam, 8 learning rates",
        [
            Variant("one kernel pass, then each member's step", updates[0], UPDATES_PER_REPEAT),
            Variant("fused kernel per group of members", updates[1], UPDATES_PER_REPEAT, ours=True),
        ],
        rounds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed repeats per variant (default 10, 2 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="a short run: 2 rounds, MNIST only in (a), 3 chunk sizes")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ARCHSEARCH_DATA or ./data)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else 2 if args.quick else 10
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    try:
        mnist = load_data(args.data_dir).train_full
    except UsageError as error:
        parser.error(str(error))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {cpu_model()} "
        f"({os.cpu_count()} CPUs visible); best of {rounds} rounds after a warm-up; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    inputs = [("MNIST", mnist)]
    if not args.quick:
        inputs += [("random", mnist_like(ROWS, d)) for d in DENSITIES]
    full_batch_step(inputs, rounds)
    del inputs
    chunk_rows(mnist, QUICK_CHUNK_SIZES if args.quick else CHUNK_SIZES, rounds)
    first_layer_products(mnist, rounds)
    flat_parameters(mnist, rounds)
    split_weight_grad(mnist, rounds)
    bare_kernel(rounds)
    classes_as_rows(rounds)
    tanh_in_place(rounds)
    pack_adam_update(mnist, rounds)
    print(f"\n{time.perf_counter() - started:.0f} s in all; load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
