"""Ablation of candidate additions to the search space, same budget, same seeds, with and without.

A searched winner (by default the P = 100,000 winner of `studies/profiles-100k.toml`, README:
decreasing [116, 73], AdamW lr 9.0e-4, weight decay 0.047, dropout 0.19, GELU, one-cycle, batch 64;
`--widths` and the training flags name another) is trained on all 60,000 training images and tested,
once per seed, as it is ("baseline") and with one candidate switched on:

- label smoothing 0.1 (the targets mix 10% of a uniform distribution into the one-hot labels);
- input dropout, 0.2 unless `--input-dropout` says (Srivastava et al. 2014 drop 20% of the input pixels);
- an exponential moving average of the weights (decay 0.999, Polyak averaging), used for testing;
- twice the epochs (what a longer schedule buys, for comparison).

Every arm runs the same plain PyTorch loop (the engine's fast step has only input dropout of them),
so the differences are the candidates' alone. Each counts only the MLP's own parameters: smoothing
and averaging add none, input dropout none.

    ARCHSEARCH_DATA=DIR .venv/bin/python bench/ablation.py [--seeds 3] [--epochs 30]
        [--widths 254,254 --lr 1.29e-3 --weight-decay 0.089 --dropout 0.23 --batch 128]
        [--optimizer adam --schedule cosine --input-dropout 0.26]
        [--arms baseline,smoothing,input-dropout,ema,both,double-epochs]  (one arm per process, on many cores)
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

ARM_NAMES = ("baseline", "smoothing", "input-dropout", "ema", "both", "double-epochs")


def arms(input_dropout: float) -> dict[str, tuple[str, dict]]:
    """Each arm's printed name and what it switches on, with the input-dropout arms at `--input-dropout`."""
    return {
        "baseline": ("baseline", {}),
        "smoothing": ("label smoothing 0.1", {"label_smoothing": 0.1}),
        "input-dropout": (f"input dropout {input_dropout:g}", {"input_dropout": input_dropout}),
        "ema": ("weight EMA 0.999", {"ema": 0.999}),
        "both": ("smoothing and input dropout", {"label_smoothing": 0.1, "input_dropout": input_dropout}),
        "double-epochs": ("twice the epochs", {"epoch_factor": 2}),
    }


def run(
    data,
    args: argparse.Namespace,
    seed: int,
    label_smoothing: float = 0.0,
    input_dropout: float = 0.0,
    ema: float = 0.0,
    epoch_factor: int = 1,
):
    torch.manual_seed(seed)
    model = build_mlp(args.widths, "gelu", dropout=args.dropout)
    averaged = copy.deepcopy(model) if ema else None
    kind = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    optimizer = kind(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    x, y = data.train_full.x, data.train_full.y
    batch, epochs = args.batch, args.epochs * epoch_factor
    steps = (len(y) + batch - 1) // batch
    if args.schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps * epochs)
    else:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps * epochs)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch):
            index = order[start : start + batch]
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
    parser.add_argument("--widths", type=lambda text: [int(w) for w in text.split(",")], default=[116, 73])
    parser.add_argument("--lr", type=float, default=9.0e-4)
    parser.add_argument("--weight-decay", type=float, default=0.047)
    parser.add_argument("--dropout", type=float, default=0.19)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--optimizer", choices=("adamw", "adam"), default="adamw")
    parser.add_argument("--schedule", choices=("onecycle", "cosine"), default="onecycle")
    parser.add_argument("--input-dropout", type=float, default=0.2, help="the rate of the input-dropout arms")
    parser.add_argument(
        "--arms", type=lambda text: text.split(","), default=["baseline", "smoothing", "input-dropout", "ema"]
    )
    args = parser.parse_args()
    unknown = [arm for arm in args.arms if arm not in ARM_NAMES]
    if unknown or not args.arms:
        parser.error(f"--arms takes any of {', '.join(ARM_NAMES)}; got {','.join(args.arms)}")
    data = load_data(args.data_dir, "mnist", "cpu")
    print(
        f"P = {count_parameters(args.widths):,}: {args.widths}, GELU, {args.optimizer} lr {args.lr:g}, weight decay "
        f"{args.weight_decay:g}, dropout {args.dropout:g}, batch {args.batch}, {args.schedule}, {args.epochs} epochs "
        f"on all {len(data.train_full):,} training images, seeds 0..{args.seeds - 1}; test error per seed"
    )
    results = {}
    chosen = arms(args.input_dropout)
    for arm in args.arms:
        name, extra = chosen[arm]
        started = time.perf_counter()
        errors = [run(data, args, seed, **extra) for seed in range(args.seeds)]
        results[name] = errors
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        print(
            f"{name:<22} mean {statistics.fmean(errors):.2%}  std {spread:.2%}"
            f"  ({', '.join(f'{e:.2%}' for e in errors)})  {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    if "baseline" not in results:
        return  # arms run in separate processes (one per core): compare their printed lines
    base = statistics.fmean(results["baseline"])
    for name, errors in results.items():
        if name != "baseline":
            change = statistics.fmean(errors) - base
            wins = sum(e < b for e, b in zip(errors, results["baseline"], strict=True))
            print(f"{name}: {change:+.2%} against the baseline, lower on {wins} of {len(errors)} seeds")


if __name__ == "__main__":
    main()
