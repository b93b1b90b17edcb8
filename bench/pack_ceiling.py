"""The most any pack can gain on this machine: a member's share of a pack's matrix products and update, against
the trainer's step alone.

Run as `.venv/bin/python bench/pack_ceiling.py [--packs 4,8] [--threads 1] [--rounds 5] [--data-dir DIR]`.

Packing saves what a step costs per operation (dispatch, small kernels, passes over small tensors), never the
multiply-adds of its matrix products, nor the bytes its optimizer update reads and writes: every member still
does all of those. So a pack's step per member can cost no less than its share of the pack's products and of
its Adam update, and `alone / floor` bounds what any pack, however it is built, gains on this machine at that
shape. For each row of bench/pack_size.py (a budget, a uniform depth at the width models/budget.py solves for
it, a batch size; tanh, Adam) it prints microseconds per member-step:
  alone     the trainer's own step (packed.alone_step_timer, as `--pack auto` times it);
  pack K    the packed step (packed.pack_step_timer) for each K of --packs;
  products K  pack K's matrix products alone: each layer's forward product, weight product, and input
              gradient but the first layer's, on the pack's own weights and gradients (Pack.layers), as
              Pack.forward_backward calls them (the fastest K's rate is printed);
  update K    pack K's Adam update alone (Pack.adam_update);
then floor = the least products K + update K, the ceiling alone / floor, and the best pack's alone / pack K.
The rate of one 1024 x 1024 x 1024 product, printed first, gives a second floor: the products at that rate
(the core's, with no shape of ours to slow it) plus the update. Each time is the best of --rounds rounds,
taking turns. Nothing is asserted: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pack_size import ROWS, row_network
from bench.stamp import command, markdown_table, write_table
from search.engine.data import load_data
from search.engine.packed import Pack, alone_step_timer, copies_pack, pack_step_timer, pixel_bytes


def seconds_per_call(call: Callable[[], object], calls: int = 30) -> Callable[[], float]:
    """A round: `calls` calls of `call`, timed; warmed up with a few calls first."""
    for _ in range(3):
        call()

    def round_() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - started) / calls

    return round_


def products(pack: Pack) -> tuple[Callable[[], None], float]:
    """The pack's matrix products of one step, on its own weights and gradients, and their FLOPs per member."""
    count, batch = len(pack.members), pack.batch
    inputs = [pack.param.new_empty((count, fan_in, batch)).normal_() for fan_in in pack.sizes[:-1]]
    outputs = [pack.param.new_empty((count, fan_out, batch)).normal_() for fan_out in pack.sizes[1:]]
    input_grads = [torch.empty_like(x) for x in inputs]
    layers = pack.layers

    def run() -> None:
        for layer, x, z in zip(layers, inputs, outputs, strict=True):
            torch.baddbmm(layer.bias.unsqueeze(2), layer.weight, x, out=z)
        for index in range(len(layers) - 1, -1, -1):
            layer = layers[index]
            torch.bmm(outputs[index], inputs[index].transpose(1, 2), out=layer.weight_grad)
            if index:  # the first layer's inputs are the data: no gradient
                torch.bmm(layer.weight.transpose(1, 2), outputs[index], out=input_grads[index])

    flops = sum(
        2 * batch * fan_in * fan_out * (3 if index else 2)
        for index, (fan_in, fan_out) in enumerate(pairwise(pack.sizes))
    )
    return run, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", default="4,8", help="pack sizes to time (default 4,8)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as each of 2 workers)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per timing, best kept (default 5)")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ARCHSEARCH_DATA or ./data)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.packs.split(",")]
    torch.set_num_threads(args.threads)
    data = load_data(args.data_dir)
    pixel_bytes(data.train.x)  # once per process, as the first pack of a search finds them
    square = torch.randn(1024, 1024)
    peak = 2 * 1024**3 / min(seconds_per_call(lambda: square @ square, 5)() for _ in range(args.rounds))
    print(f"{args.threads} thread(s), load {os.getloadavg()[0]:.2f}; 1024^3 product: {peak / 1e9:.0f} GFLOP/s")
    rows = []
    for budget, depth, batch in ROWS:
        widths, config, model = row_network(budget, depth, batch)
        timers = {"alone": (alone_step_timer(model, config, data.train).round, 1)}
        for size in sizes:
            # Products and updates with made-up values on a pack of their own, not the timed pack's: its training
            # goes on as it would.
            pack = copies_pack(model, config, data.train, size)
            product_call, member_flops = products(pack)
            timers[f"pack {size}"] = (pack_step_timer(model, config, data.train, size).round, size)
            timers[f"products {size}"] = (seconds_per_call(product_call), size)
            timers[f"update {size}"] = (seconds_per_call(pack.adam_update), size)
        best = dict.fromkeys(timers, float("inf"))
        for _ in range(args.rounds):
            for name, (round_, members) in timers.items():
                best[name] = min(best[name], round_() / members)
        floor = min(best[f"products {size}"] + best[f"update {size}"] for size in sizes)
        at_peak = member_flops / peak + min(best[f"update {size}"] for size in sizes)
        rate = member_flops / min(best[f"products {size}"] for size in sizes)
        fastest = min(best[f"pack {size}"] for size in sizes)
        shown = ", ".join(f"{name} {seconds * 1e6:,.0f}" for name, seconds in best.items())
        print(
            f"P = {budget:>7,} {widths!s:<16} batch {batch:>3}: {shown} (products at {rate / 1e9:.0f} GFLOP/s); "
            f"floor {floor * 1e6:,.0f} "
            f"(at the 1024^3 rate {at_peak * 1e6:,.0f}); ceiling {best['alone'] / floor:.2f}x "
            f"({best['alone'] / at_peak:.2f}x), best pack {best['alone'] / fastest:.2f}x",
            flush=True,
        )
        floor_size = min(sizes, key=lambda size: best[f"products {size}"] + best[f"update {size}"])
        rows.append(
            [
                f"{budget:,}, {widths}, {batch}",
                f"{best['alone'] * 1e6:,.0f}",
                *(f"{best[f'pack {size}'] * 1e6:,.0f}" for size in sizes),
                f"{floor * 1e6:,.0f} ({best[f'products {floor_size}'] * 1e6:,.0f} + "
                f"{best[f'update {floor_size}'] * 1e6:,.0f})",
                f"{rate / 1e9:.0f}",
                f"{best['alone'] / floor:.2f}x",
                f"{best['alone'] / fastest:.2f}x",
            ]
        )
    header = ["P, network, batch", "alone", *(f"pack {size}" for size in sizes), "floor: products + update"]
    table = markdown_table(
        [*header, "products GFLOP/s", "ceiling", "best pack"],
        rows,
        right=[False, *(True for _ in header[1:]), True, True, True],
    )
    intro = f"µs per member-step; the 1024 x 1024 x 1024 product ran at {peak / 1e9:.0f} GFLOP/s.\n\n"
    write_table("pack_ceiling", intro + table, command("pack_ceiling.py"), args.threads)


if __name__ == "__main__":
    main()
