"""A network that stops learning, trained with subnormal floats as the CPU leaves them and flushed to zero.

    ARCHSEARCH_DATA=DIR .venv/bin/python bench/denormals.py --epochs 6 --threads 1

The network and settings are those of a real trial of the default frontier's search at 636,010 parameters
(decreasing [381, 347, 316, 288], Adam with weight decay 0.011, GELU, seed 11): its validation loss stays at
chance and its weights decay until nearly all of them are subnormal. The same trainer (search.engine.trainer)
trains it twice from the same seed, each in a fresh process (the mode is a thread's, and torch's threads
inherit it when they are made): first with the flush that loading the data and training now set switched
off (the reference: what archsearch did before), then as it is. It prints each epoch's seconds and validation loss and
the count of subnormal weights after it, then the ratio of the two arms' times, and writes the table to
docs/bench/denormals.md. The validation losses of the two arms agree: flushing changes no result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.stamp import command, markdown_table, write_table  # noqa: E402
from models.mlp import build_mlp  # noqa: E402
from search.engine import data as data_module  # noqa: E402
from search.engine import trainer  # noqa: E402
from search.engine.config import TrainConfig  # noqa: E402

WIDTHS = [381, 347, 316, 288]
CONFIG = TrainConfig(
    epochs=30,
    batch_size=128,
    optimizer="adam",
    lr=0.0009885766143163074,
    weight_decay=0.011050154492124785,
    dropout=0.1981076567727988,
    input_dropout=0.28764200800277606,
    schedule="cosine",
    activation="gelu",
    seed=11,
    device="cpu",
)
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


class Enough(Exception):
    """Stops a training after the epochs measured (the real trial went on to its pruning at epoch 15)."""


def run(args: argparse.Namespace) -> list[tuple[float, float, int]]:
    """One arm, in this process: (seconds, validation loss, subnormal weights) per epoch."""
    if args.arm == "plain":  # the reference: nothing flushes, as before (as on a CPU without the mode)
        torch.set_flush_denormal = lambda mode: False
    torch.set_num_threads(args.threads)
    data = data_module.load_data(args.data_dir)
    torch.manual_seed(CONFIG.seed)
    model = build_mlp(WIDTHS, CONFIG.activation, dropout=CONFIG.dropout, input_dropout=CONFIG.input_dropout)
    rows = []

    def on_epoch(record: trainer.EpochRecord) -> None:
        with torch.no_grad():
            tiny = sum(int(((p.abs() < SMALLEST_NORMAL) & (p != 0)).sum()) for p in model.parameters())
        rows.append((record.seconds, record.val_loss, tiny))
        if record.epoch >= args.epochs:
            raise Enough

    with contextlib.suppress(Enough):
        trainer.train(model, data.train, CONFIG, data.validation, on_epoch=on_epoch)
    return rows


def arm(argv: list[str], name: str) -> list[tuple[float, float, int]]:
    done = subprocess.run([sys.executable, __file__, *argv, "--arm", name], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--no-table", action="store_true", help="print only; leave docs/bench/denormals.md")
    parser.add_argument("--arm", choices=("plain", "flushed"), help=argparse.SUPPRESS)  # one arm, in a child
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run(args)))
        return 0
    given = sys.argv[1:] if argv is None else list(argv)
    plain = arm(given, "plain")
    flushed = arm(given, "flushed")
    header = ["epoch", "seconds, as the CPU leaves them", "seconds, flushed", "val loss", "val loss, flushed"]
    header.append("subnormal weights (of 635,793)")
    cells = [
        [epoch, f"{a[0]:.1f}", f"{b[0]:.1f}", f"{a[1]:.4f}", f"{b[1]:.4f}", f"{a[2]:,} / {b[2]:,}"]
        for epoch, (a, b) in enumerate(zip(plain, flushed, strict=True), start=1)
    ]
    total_plain, total_flushed = sum(r[0] for r in plain), sum(r[0] for r in flushed)
    cells.append(["all", f"{total_plain:.1f}", f"{total_flushed:.1f}", "", "", ""])
    ratio = total_plain / total_flushed
    last = plain[-1][0] / flushed[-1][0]
    table = markdown_table(header, cells, right=[True] * 5 + [False])
    text = (
        f"The collapsing trial, {args.epochs} epochs on 50,000 images, {args.threads} thread(s): "
        f"flushed subnormals make its epochs {ratio:.1f} times faster over all, {last:.1f} times at the last "
        f"epoch.\n\n{table}"
    )
    print(text)
    if not args.no_table:
        write_table("denormals", text, command("denormals.py", argv), args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
