"""Training throughput on MNIST: the original study's loop, a plain mini-batch loop, and our trainer.

Run as `.venv/bin/python bench/train_speed.py [--epochs N] [--data-dir DIR]`. Every loop trains the same
model from the same seed on the same 60,000 images with the same optimizer, and only epoch time is timed
(our trainer runs without validation, so it does the same work as the loops it is compared with). Each
rate is the best of the timed epochs after a warm-up epoch, because this box is shared and the best epoch
is the one least disturbed by other work; the large-matmul reference is taken the same way, in the same run.
"""

from __future__ import annotations

import argparse
import itertools
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

from models.mlp import build_mlp
from search.config import TrainConfig
from search.data import Split, load_data
from search.trainer import EpochRecord, make_optimizer, train

MATMUL_SIZE = 4096
FULL = 0
SPEEDUP_OVER_STUDY = 10.0
SPEEDUP_OVER_MINIBATCH = 2.5
MATMUL_FRACTION = 0.6


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


CASES = (
    Case("linear 784-10, SGD lr 0.2", (), "sgd", 0.2),
    Case("MLP 784-64-64-10 tanh, Adam lr 1e-3", (64, 64), "adam", 1e-3),
)


@dataclass
class Rate:
    label: str
    samples_per_second: float
    parameters: int

    @property
    def gflops(self) -> float:
        """Training cost as the usual 6 x parameters per sample (forward 2, backward 4)."""
        return 6 * self.parameters * self.samples_per_second / 1e9


def matmul_gflops(repeats: int = 5) -> float:
    """Best rate of a large float32 matmul: what this CPU's BLAS reaches when overhead does not matter."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIZE**3 / best / 1e9


def loader_loop(model: nn.Module, split: Split, case: Case, batch_size: int, epochs: int) -> list[float]:
    """A DataLoader over a TensorDataset with the classic step and `loss.item()` every step; epoch seconds."""
    optimizer = make_optimizer(model, case.config(batch_size or len(split), epochs))
    loader = DataLoader(TensorDataset(split.x, split.y), batch_size=batch_size or len(split), shuffle=True)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        seconds.append(time.perf_counter() - start)
    return seconds


def trainer_loop(model: nn.Module, split: Split, case: Case, batch_size: int, epochs: int) -> list[float]:
    """search.trainer.train without validation; epoch seconds from the on_epoch callback's clock."""
    stamps = [time.perf_counter()]

    def on_epoch(_: EpochRecord) -> None:
        stamps.append(time.perf_counter())

    train(model, split, case.config(batch_size, epochs), on_epoch=on_epoch)
    return [after - before for before, after in itertools.pairwise(stamps)]


def measure(
    label: str, loop: Callable[..., list[float]], case: Case, split: Split, batch_size: int, warmup: int, epochs: int
) -> Rate:
    model = case.build()
    seconds = loop(model, split, case, batch_size, warmup + epochs)[warmup:]
    parameters = sum(p.numel() for p in model.parameters())
    return Rate(label, len(split) / min(seconds), parameters)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per loop, after one warm-up epoch")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ARCHSEARCH_DATA or ./data)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")

    started = time.perf_counter()
    split = load_data(args.data_dir).train_full
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(split):,} training images, "
        f"best of {args.epochs} timed epochs after 1 warm-up"
    )
    reference = matmul_gflops()
    results: dict[str, dict[str, Rate]] = {}
    for case in CASES:
        runs = [
            ("(a) study: DataLoader, full batch", loader_loop, FULL),
            ("(b) DataLoader, batch 128", loader_loop, 128),
            ("(c) ours, full batch", trainer_loop, FULL),
            ("(c) ours, batch 128", trainer_loop, 128),
            ("(c) ours, batch 512", trainer_loop, 512),
        ]
        results[case.name] = {
            label: measure(label, loop, case, split, batch, 1, args.epochs) for label, loop, batch in runs
        }
    reference = max(reference, matmul_gflops())

    print(f"\nlarge matmul ({MATMUL_SIZE}x{MATMUL_SIZE} float32): {reference:.1f} GFLOP/s")
    checks = []
    for case in CASES:
        rates = results[case.name]
        study = rates["(a) study: DataLoader, full batch"].samples_per_second
        minibatch = rates["(b) DataLoader, batch 128"].samples_per_second
        print(f"\n{case.name} ({rates['(a) study: DataLoader, full batch'].parameters:,} parameters)")
        print(f"  {'loop':<36} {'samples/s':>11} {'vs (a)':>8} {'vs (b)':>8} {'GFLOP/s':>8} {'of matmul':>10}")
        for rate in rates.values():
            print(
                f"  {rate.label:<36} {rate.samples_per_second:>11,.0f} {rate.samples_per_second / study:>7.1f}x "
                f"{rate.samples_per_second / minibatch:>7.2f}x {rate.gflops:>8.1f} {rate.gflops / reference:>9.0%}"
            )
        full = rates["(c) ours, full batch"].samples_per_second / study
        small = rates["(c) ours, batch 128"].samples_per_second / minibatch
        checks.append(
            (f"{case.name}: ours at full batch >= {SPEEDUP_OVER_STUDY:g}x (a)", full, full >= SPEEDUP_OVER_STUDY)
        )
        checks.append(
            (
                f"{case.name}: ours at batch 128 >= {SPEEDUP_OVER_MINIBATCH:g}x (b)",
                small,
                small >= SPEEDUP_OVER_MINIBATCH,
            )
        )
    mlp = results[CASES[1].name]["(c) ours, batch 512"]
    fraction = mlp.gflops / reference
    checks.append(
        (
            f"{CASES[1].name}: ours at batch 512 >= {MATMUL_FRACTION:.0%} of matmul",
            fraction,
            fraction >= MATMUL_FRACTION,
        )
    )

    print()
    for text, value, passed in checks:
        shown = f"{value:.0%}" if "matmul" in text else f"{value:.1f}x"
        print(f"{verdict(passed)}  {text}: {shown}")
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0 if all(passed for _, _, passed in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
