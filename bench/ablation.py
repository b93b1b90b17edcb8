"""Ablation of candidate additions to the search space, same budget, same seeds, with and without.

The P = 100,000 winner of `studies/profiles-100k.toml` (README: decreasing [116, 73], AdamW lr 9.0e-4,
weight decay 0.047, dropout 0.19, GELU, one-cycle, batch 64) is trained on all 60,000 training images
and tested, once per seed, as it is ("baseline") and with one candidate switched on:

- label smoothing 0.1 (the targets mix 10% of a uniform distribution into the one-hot labels);
- input dropout 0.2 (Srivastava et al. 2014 drop 20% of the input pixels);
- an exponential moving average of the weights (decay 0.999, Polyak averaging), used for testing.

Every arm runs the same plain PyTorch loop (the engine's fast step has none of the candidates yet),
so the differences are the candidates' alone. Each counts only the MLP's own parameters: smoothing
and averaging add none, input dropout none.

    ARCHSEARCH_DATA=../shared/data .venv/bin/python bench/ablation.py [--seeds 3] [--epochs 30]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.nn import functional as F

from models.budget import count_parameters
from models.mlp import build_mlp
from search.engine.data import load_data

WIDTHS = [116, 73]
LR, WEIGHT_DECAY, DROPOUT, BATCH = 9.0e-4, 0.047, 0.19, 64
ARMS = {
    "baseline": {},
    "label smoothing 0.1": {"label_smoothing": 0.1},
    "input dropout 0.2": {"input_dropout": 0.2},
    "weight EMA 0.999": {"ema": 0.999},
}


def run(data, seed: int, epochs: int, label_smoothing: float = 0.0, input_dropout: float = 0.0, ema: float = 0.0):
    torch.manual_seed(seed)
    model = build_mlp(WIDTHS, "gelu", dropout=DROPOUT)
    averaged = copy.deepcopy(model) if ema else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    x, y = data.train_full.x, data.train_full.y
    steps = (len(y) + BATCH - 1) // BATCH
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps * epochs)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), BATCH):
            index = order[start : start + BATCH]
            inputs = F.dropout(x[index], input_dropout, training=True) if input_dropout else x[index]
            loss = F.cross_entropy(model(inputs), y[index], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if averaged is not None:
                with torch.no_grad():
                    for mean, current in zip(averaged.parameters(), model.parameters(), strict=True):
                        mean.lerp_(current, 1 - ema)
    tested = averaged if averaged is not None else model
    tested.eval()
    with torch.no_grad():
        return (tested(data.test.x).argmax(dim=1) != data.test.y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    data = load_data(args.data_dir, "mnist", "cpu")
    print(
        f"P = {count_parameters(WIDTHS):,}: decreasing {WIDTHS}, {args.epochs} epochs on all "
        f"{len(data.train_full):,} training images, seeds 0..{args.seeds - 1}; test error per seed"
    )
    results = {}
    for name, extra in ARMS.items():
        started = time.perf_counter()
        errors = [run(data, seed, args.epochs, **extra) for seed in range(args.seeds)]
        results[name] = errors
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        print(
            f"{name:<22} mean {statistics.fmean(errors):.2%}  std {spread:.2%}"
            f"  ({', '.join(f'{e:.2%}' for e in errors)})  {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    base = statistics.fmean(results["baseline"])
    for name, errors in results.items():
        if name != "baseline":
            change = statistics.fmean(errors) - base
            wins = sum(e < b for e, b in zip(errors, results["baseline"], strict=True))
            print(f"{name}: {change:+.2%} against the baseline, lower on {wins} of {len(errors)} seeds")


if __name__ == "__main__":
    main()
