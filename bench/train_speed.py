"""Training throughput on MNIST: the original study's loop, a plain mini-batch loop, and our trainer.

Run as `.venv/bin/python bench/train_speed.py [--epochs N] [--rounds N] [--data-dir DIR]`; `--threads N`
and `--cpu-time` are for shared boxes (below).

Every loop trains the same model from the same seed on the same 60,000 images with the same optimizer
and learning rate. (a) and (b) build it as plain PyTorch code does and the study did,
`torch.optim.SGD(model.parameters(), lr=0.2)`; (b') is (b) with the fused optimizer our trainer uses, a
stronger reference, shown for information. Only epoch time is timed: our trainer runs without validation
and its final scoring pass is outside the timed epochs, so it does the same work as the loops it is
compared with. Each rate is the best of the timed epochs after a warm-up epoch, over several rounds that
interleave the loops, since the best epoch is the one least disturbed by other work; the large-matmul
reference is taken the same way, once per round and at the end, in the same run and on the same threads.

On a shared box, other processes make two-thread timings swing by 10x and more (a descheduled OpenMP
thread stalls every parallel op). `--cpu-time` measures one thread's CPU time instead, which other
processes barely touch, so the ratios still compare like with like.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stamp import command, markdown_table, write_table
from models.mlp import build_mlp
from search.cli import Parser
from search.engine.config import TrainConfig
from search.engine.data import Split, load_data
from search.engine.sparse_rows import SparseRows
from search.engine.trainer import EpochRecord, make_optimizer, train
from search.errors import UsageError

MATMUL_SIZE = 4096
FULL = 0
SPEEDUP_OVER_STUDY = 10.0
SPEEDUP_OVER_MINIBATCH = 2.5
MATMUL_FRACTION = 0.6
STUDY = "(a) study: DataLoader, full batch"
MINIBATCH = "(b) DataLoader, batch 128"
MINIBATCH_FUSED = "(b') (b) with a fused optimizer"
FUSED_HEADER = "vs (b')"
OURS_FULL = "(c) ours, full batch"
OURS_128 = "(c) ours, batch 128"
OURS_512 = "(c) ours, batch 512"

Clock = Callable[[], float]


@dataclass(frozen=True)
class Case:
    """One model with the optimizer every loop uses for it."""

    name: str
    widths: tuple[int, ...]
    optimizer: str
    lr: float

    def build(self) -> nn.Module:
        torch.manual_seed(0)
        return build_mlp(list(self.widths))

    def config(self, batch_size: int, epochs: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=self.optimizer, lr=self.lr, device="cpu")


LINEAR = Case("linear 784-10, SGD lr 0.2", (), "sgd", 0.2)
MLP = Case("MLP 784-64-64-10 tanh, Adam lr 1e-3", (64, 64), "adam", 1e-3)


@dataclass(frozen=True)
class Rate:
    samples_per_second: float
    parameters: int

    @property
    def gflops(self) -> float:
        """Training cost counted as the usual 6 x parameters per sample (forward 2, backward 4) of dense products.

        Our full-batch CPU step skips the inputs' common value (MNIST's background: search/engine/sparse_rows.py), so
        its rate in these units can pass the large matmul's."""
        return 6 * self.parameters * self.samples_per_second / 1e9


def matmul_gflops(clock: Clock, repeats: int = 5) -> float:
    """Best rate of a large float32 matmul: what this CPU's BLAS reaches when overhead does not matter."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        a @ b
        best = min(best, clock() - start)
    return 2 * MATMUL_SIZE**3 / best / 1e9


def loader_loop(
    model: nn.Module, split: Split, case: Case, batch_size: int, epochs: int, clock: Clock, fused: bool = False
) -> list[float]:
    """A DataLoader over a TensorDataset and the classic step with `loss.item()` each step; epoch seconds."""
    size = batch_size or len(split)
    if fused:
        optimizer = make_optimizer(model.parameters(), case.config(size, epochs))
    elif case.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=case.lr)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=case.lr)
    loader = DataLoader(TensorDataset(split.x, split.y), batch_size=size, shuffle=True)
    seconds = []
    for _ in range(epochs):
        start = clock()
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        seconds.append(clock() - start)
    return seconds


def fused_loader_loop(*args) -> list[float]:
    return loader_loop(*args, fused=True)


def trainer_loop(model: nn.Module, split: Split, case: Case, batch_size: int, epochs: int, clock: Clock) -> list[float]:
    """search.engine.trainer.train without validation; epoch seconds between on_epoch callbacks."""
    stamps = [clock()]

    def on_epoch(_: EpochRecord) -> None:
        stamps.append(clock())

    train(model, split, case.config(batch_size, epochs), on_epoch=on_epoch)
    return [after - before for before, after in itertools.pairwise(stamps)]


LOOPS: tuple[tuple[str, Callable[..., list[float]], int], ...] = (
    (STUDY, loader_loop, FULL),
    (MINIBATCH, loader_loop, 128),
    (MINIBATCH_FUSED, fused_loader_loop, 128),
    (OURS_FULL, trainer_loop, FULL),
    (OURS_128, trainer_loop, 128),
    (OURS_512, trainer_loop, 512),
)


def measure(case: Case, split: Split, epochs: int, clock: Clock, rates: dict[str, Rate]) -> None:
    """One round over every loop for `case`, keeping each loop's best rate so far in `rates`."""
    for label, loop, batch_size in LOOPS:
        model = case.build()
        seconds = loop(model, split, case, batch_size, 1 + epochs, clock)[1:]
        rate = Rate(len(split) / min(seconds), sum(p.numel() for p in model.parameters()))
        if label not in rates or rate.samples_per_second > rates[label].samples_per_second:
            rates[label] = rate


def report(case: Case, rates: dict[str, Rate], reference: float) -> None:
    study = rates[STUDY].samples_per_second
    minibatch, fused = rates[MINIBATCH].samples_per_second, rates[MINIBATCH_FUSED].samples_per_second
    print(f"\n{case.name} ({rates[STUDY].parameters:,} parameters)")
    columns = ("vs (a)", "vs (b)", FUSED_HEADER, "GFLOP/s")
    print(f"  {'loop':<36} {'samples/s':>11} " + " ".join(f"{c:>8}" for c in columns) + f" {'of matmul':>10}")
    for label, rate in rates.items():
        speed = rate.samples_per_second
        print(
            f"  {label:<36} {speed:>11,.0f} {speed / study:>7.1f}x {speed / minibatch:>7.2f}x "
            f"{speed / fused:>7.2f}x {rate.gflops:>8.1f} {rate.gflops / reference:>9.0%}"
        )


def table_rows(case: Case, rates: dict[str, Rate], reference: float) -> list[list[str]]:
    """`report`'s rows for the performance page's table: the model named on its first row only."""
    study = rates[STUDY].samples_per_second
    minibatch, fused = rates[MINIBATCH].samples_per_second, rates[MINIBATCH_FUSED].samples_per_second
    return [
        [
            case.name if index == 0 else "",
            label,
            f"{rate.samples_per_second:,.0f}",
            f"{rate.samples_per_second / study:.1f}x",
            f"{rate.samples_per_second / minibatch:.2f}x",
            f"{rate.samples_per_second / fused:.2f}x",
            f"{rate.gflops:.1f}",
            f"{rate.gflops / reference:.0%}",
        ]
        for index, (label, rate) in enumerate(rates.items())
    ]


def checks(results: dict[Case, dict[str, Rate]], reference: float) -> list[tuple[bool, str]]:
    """The targets, one line each: both speed-ups for both models, the matmul fraction for the MLP."""
    lines = []
    for case, rates in results.items():
        full = rates[OURS_FULL].samples_per_second / rates[STUDY].samples_per_second
        small = rates[OURS_128].samples_per_second / rates[MINIBATCH].samples_per_second
        lines.append(
            (
                full >= SPEEDUP_OVER_STUDY,
                f"{case.name}: full batch {full:.1f}x (a), target {SPEEDUP_OVER_STUDY:g}x",
            )
        )
        lines.append(
            (
                small >= SPEEDUP_OVER_MINIBATCH,
                f"{case.name}: batch 128 {small:.2f}x (b), target {SPEEDUP_OVER_MINIBATCH:g}x "
                f"({rates[OURS_128].samples_per_second / rates[MINIBATCH_FUSED].samples_per_second:.2f}x (b'))",
            )
        )
    fraction = results[MLP][OURS_512].gflops / reference
    lines.append(
        (
            fraction >= MATMUL_FRACTION,
            f"{MLP.name}: batch 512 at {fraction:.0%} of matmul, target {MATMUL_FRACTION:.0%}",
        )
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loop and round, after a warm-up")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all loops; each loop keeps its best")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ARCHSEARCH_DATA or ./data)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--cpu-time", action="store_true", help="time one thread's CPU time, not wall time")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.rounds < 1:
        parser.error("--epochs and --rounds must be at least 1")
    if args.cpu_time and args.threads not in (None, 1):
        parser.error("--cpu-time measures one thread; leave --threads out or set it to 1")
    threads = 1 if args.cpu_time else args.threads
    if threads:
        torch.set_num_threads(threads)
    clock: Clock = time.process_time if args.cpu_time else time.perf_counter

    started = time.perf_counter()
    try:
        split = load_data(args.data_dir).train_full
    except UsageError as error:
        parser.error(str(error))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{'CPU time' if args.cpu_time else 'wall time'}, {len(split):,} training images, "
        f"best epoch of {args.rounds} rounds x {args.epochs} timed epochs (each after a warm-up epoch); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    built = time.perf_counter()
    SparseRows.of(split.x)  # what the full-batch trainer builds once per process, before its first epoch
    print(f"sparse form of the inputs for full-batch steps: built once, in {time.perf_counter() - built:.2f} s")
    reference = 0.0
    results: dict[Case, dict[str, Rate]] = {LINEAR: {}, MLP: {}}
    for _ in range(args.rounds):
        reference = max(reference, matmul_gflops(clock))
        for case, rates in results.items():
            measure(case, split, args.epochs, clock, rates)
    reference = max(reference, matmul_gflops(clock))

    print(f"\nlarge matmul ({MATMUL_SIZE}x{MATMUL_SIZE} float32): {reference:.1f} GFLOP/s")
    print("GFLOP/s below: 6 x parameters x samples/s, the work of dense products; ours at full batch does less")
    for case, rates in results.items():
        report(case, rates, reference)
    print()
    lines = checks(results, reference)
    for passed, text in lines:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
    print(f"\n{time.perf_counter() - started:.0f} s in all; load average {os.getloadavg()[0]:.2f} at the end")
    header = ["model", "loop", "samples/s", "vs (a)", "vs (b)", "vs (b')", "GFLOP/s", "of matmul"]
    rows = [row for case, rates in results.items() for row in table_rows(case, rates, reference)]
    intro = (
        f"{'CPU time' if args.cpu_time else 'Wall time'}, best epoch of {args.rounds} rounds x {args.epochs} timed "
        f"epochs; the large matmul ran at {reference:.1f} GFLOP/s.\n\n"
    )
    targets = "".join(f"\n- {'PASS' if passed else 'FAIL'}: {text}" for passed, text in lines)
    write_table(
        "train_speed",
        intro + markdown_table(header, rows, right=[False, False, *(True for _ in header[2:])]) + targets + "\n",
        command("train_speed.py", argv),
        torch.get_num_threads(),
    )
    return 0 if all(passed for passed, _ in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
