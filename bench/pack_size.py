"""The pack size `--pack auto` chooses for a few networks on this machine, and the timings behind it.

Run as `.venv/bin/python bench/pack_size.py [--largest 8] [--threads 1] [--device cuda] [--data-dir DIR]`.
For each row (a budget, a uniform depth at the width models/budget.py solves for it, a batch size; tanh,
Adam), it calls search.engine.packed.fitting_pack_size on the 50,000 training images, as `--pack auto` does
for a pack's first trial, and prints the microseconds of one step per member for each size it tried (1: the
trainer's own step, alone) and the size a search and a grid take from them (search/engine/config.py: a pack
at least SEARCH_PACK_SPEEDUP or GRID_PACK_SPEEDUP times as fast per member as alone, else 1). One thread by
default, as each of 2 workers on this 2-core machine has. Nothing is asserted: the timings are a few tenths
of a second each, so a busy machine moves them; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stamp import command, markdown_table, write_table
from models.budget import width_for_budget
from models.mlp import build_mlp
from search.engine.config import GRID_PACK_SPEEDUP, SEARCH_PACK_SPEEDUP, TrainConfig
from search.engine.data import load_data
from search.engine.packed import fitting_pack_size, pixel_bytes

ROWS = (  # budget, depth, batch size
    (20_000, 2, 16),
    (50_000, 2, 128),
    (50_000, 3, 128),
    (100_000, 1, 64),
    (100_000, 3, 128),
    (200_000, 2, 128),
)


def row_network(budget: int, depth: int, batch: int) -> tuple[list[int], TrainConfig, nn.Sequential]:
    """A row's network: `depth` layers of the width models/budget.py solves for `budget`, tanh, trained by
    Adam at 1e-3 in batches of `batch`, seed 1; its widths and config too. bench/pack_ceiling.py uses it."""
    widths = [width_for_budget(budget, depth)] * depth
    config = TrainConfig(epochs=10, batch_size=batch, optimizer="adam", lr=1e-3, activation="tanh", seed=1)
    torch.manual_seed(config.seed)
    return widths, config, build_mlp(widths, config.activation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--largest", type=int, default=256, help="the largest pack to try (default 256, as auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default cpu)")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ARCHSEARCH_DATA or ./data)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "bench: --device cuda, but torch sees no CUDA device here\n")
    data = load_data(args.data_dir, device=args.device)
    pixel_bytes(data.train.x)  # once per process, as the first pack of a search finds them
    print(
        f"{args.device}, {args.threads} thread(s); a search packs from {SEARCH_PACK_SPEEDUP}x, "
        f"a grid from {GRID_PACK_SPEEDUP}x; load {os.getloadavg()[0]:.2f}"
    )
    rows = []
    for budget, depth, batch in ROWS:
        widths, config, model = row_network(budget, depth, batch)
        started = time.perf_counter()
        timings = fitting_pack_size(model, config, data.train, args.largest)
        shown = ", ".join(f"{size}: {seconds * 1e6:,.0f}" for size, seconds in timings.step_seconds.items())
        rows.append((f"{budget:,}, {widths}, {batch}", timings))
        print(
            f"P = {budget:>7,} {widths!s:<16} batch {batch:>3}: search {timings.size(SEARCH_PACK_SPEEDUP)}, "
            f"grid {timings.size(GRID_PACK_SPEEDUP)}  (us per member-step by pack size: {shown}; "
            f"measured in {time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    sizes = sorted({size for _, timings in rows for size in timings.step_seconds})
    table = markdown_table(
        [
            "P, network, batch",
            *("alone" if size == 1 else str(size) for size in sizes),
            "a search takes",
            "a grid takes",
        ],
        [
            [
                label,
                *(f"{timings.step_seconds[s] * 1e6:,.0f}" if s in timings.step_seconds else "" for s in sizes),
                timings.size(SEARCH_PACK_SPEEDUP),
                timings.size(GRID_PACK_SPEEDUP),
            ]
            for label, timings in rows
        ],
        right=[False, *(True for _ in sizes), True, True],
    )
    name = "pack_size" if args.device == "cpu" else f"pack_size-{args.device}"
    write_table(
        name, "µs per member-step by pack size.\n\n" + table, command("pack_size.py"), args.threads, args.device
    )


if __name__ == "__main__":
    main()
