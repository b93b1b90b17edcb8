"""Trials per hour of packed training (search/engine/packed/) against the trainer's one trial per core.

Run as `.venv/bin/python bench/packing.py [--quick] [--budgets 50000,200000] [--packs 4,8,16,32]
[--device cpu|cuda] [--dropouts 0,0.2] [--shapes depth2,depth3,mixed] [--host-work] [--timeout SECONDS]
[--data-dir DIR]`; `--quick` is a smoke run (one budget, one shape, small packs, part of the images).

For each budget P and each shape (depth 2 and depth 3 at the uniform widths models/budget.py solves for
P, and depth 2 mixing five nearby profiles from models/profiles.py, from a taper of 0.75 decreasing to
0.75 increasing, so a pack pads to the widest), every row trains on the 50,000 training images with batch
128, tanh and Adam, and scores the validation split after its epoch, as a search trial does:
  reference     search.engine.trainer.train (its fast step included), one trial at a time per process,
                in 2 processes of 1 thread each at once: one trial per core
  pack K 2x1    train_pack, a pack of K trials per process, in 2 processes of 1 thread each at once
  pack K 1x2    train_pack, one pack of K trials in one process of 2 threads
With `--device cuda` (packs 4, 16, 64 and 256 unless --packs says otherwise) every row is one process on the
one GPU, the data on the device: the reference trains its trials one after another, a pack K row trains one
pack of K (its step replayed as a CUDA graph), and each row also prints the GPU's peak memory
(torch.cuda.max_memory_allocated); the target is then the issue's 20,000 trials an hour at P = 50,000.
Every process loads the data, warms up on a slice of it (the same models, one short epoch; a pack also
finds the pixel bytes of its inputs, once per process), then waits for the others and trains for one timed
epoch (the reference: one epoch of each of its trials in turn).
Every row is measured once per dropout rate of `--dropouts` (default 0 and 0.2): every search samples dropout,
and a pack with dropout draws each member's masks from its own generator (on CUDA, registered with the
graph). `--host-work` also times, in each pack row's process after its epoch, the work a pack does per epoch
besides its steps (the coefficient table, the write-back into the models, a regroup where one member leaves,
the end's evaluations of every member) and prints each against that epoch's seconds. A row whose process
dies (a CUDA out-of-memory) or runs past `--timeout` is reported as failed, and the others go on.
Trials per hour = 3600 x trials / (10 x their epoch seconds), summed over the processes: the search's 10
epochs, each as long as the timed one. Left out, for both: building the models and the step, and the
final scoring of a finished trial (train, validation and test splits, about 1 epoch's validation x 7).
Memory: each process's peak RSS (getrusage), and their total; about 1 GB of each is the data as loaded.
Nothing is asserted: on a shared box, other work slows any row; the load average is printed.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import queue
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stamp import command, markdown_table, write_table
from models.budget import count_parameters, width_for_budget
from models.mlp import build_mlp
from models.profiles import profile_widths
from search.engine.config import TrainConfig
from search.engine.data import Split, load_data
from search.engine.packed import Pack, default_generator_state, final_scores, pixel_bytes, train_pack
from search.engine.trainer import train

EPOCHS = 10  # a search trial's, which the timed epoch stands for
BATCH = 128
WARM_UP_IMAGES = 2_560
CORES = 2
TARGET = 1.5  # the issue's: packs at 1.5x the reference's trials/hour at P = 50,000 on this 2-core CPU
GPU_TARGET = 20_000  # and 20,000 trials an hour at P = 50,000 on one H200
TARGET_BUDGET = 50_000
CPU_PACKS = "4,8,16,32"
GPU_PACKS = "4,16,64,256"
MIXED_PROFILES = (
    ("decreasing", 0.75),
    ("decreasing", 0.875),
    ("uniform", 1.0),
    ("increasing", 0.875),
    ("increasing", 0.75),
)
POLL_SECONDS = 1.0  # how often the wait for a row's processes checks whether one has died
BARRIER_SECONDS = 600  # a process waits this long for the others to load and warm up
JOIN_SECONDS = 30
ROW_SECONDS = 900  # the default limit on one row (--timeout)
REFERENCE_TRIALS = 5  # per process: enough that its timed work spans more than a few tenths of a second


@dataclass(frozen=True)
class Shape:
    name: str
    widths: tuple[tuple[int, ...], ...]  # cycled over a row's trials

    def label(self) -> str:
        counts = sorted({count_parameters(w) for w in self.widths})
        spread = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,} to {counts[-1]:,}"
        shown = ", ".join(str(list(w)) for w in self.widths)
        return f"{self.name} {shown}: {spread} parameters"


SHAPES = ("depth2", "depth3", "mixed")  # depth 2 and 3 uniform, depth 2 mixed profiles


def shapes(budget: int, quick: bool, chosen: Sequence[str] = SHAPES) -> list[Shape]:
    uniform = {f"depth{d}": Shape(f"depth {d} uniform", ((width_for_budget(budget, d),) * d,)) for d in (2, 3)}
    mixed = tuple(tuple(profile_widths(name, 2, budget, 0.01, taper)) for name, taper in MIXED_PROFILES)
    every = {**uniform, "mixed": Shape("depth 2 mixed", mixed)}
    return [every["depth2"]] if quick else [every[name] for name in chosen]


@dataclass(frozen=True)
class Job:
    """What one process trains: `trials` models, as one pack or (reference) one after another."""

    packed: bool
    widths: tuple[tuple[int, ...], ...]
    trials: int
    threads: int
    seed: int
    data_dir: str | None
    images: int | None
    device: str
    dropout: float = 0.0  # every trial's hidden dropout rate, as a search samples one
    host_work: bool = False  # also time the pack's host work per epoch (host_work)

    def models_and_configs(self) -> tuple[list[torch.nn.Sequential], list[TrainConfig]]:
        models, configs = [], []
        for index in range(self.trials):
            config = TrainConfig(
                epochs=1, batch_size=BATCH, optimizer="adam", lr=1e-3, seed=self.seed + index, dropout=self.dropout
            )
            torch.manual_seed(config.seed)
            models.append(build_mlp(list(self.widths[index % len(self.widths)]), "tanh", dropout=self.dropout))
            configs.append(config)
        return models, configs

    def dropout_states(self) -> list[torch.Tensor] | None:
        """Each trial's dropout state as a search hands it to its pack: the device generator's, as seeded."""
        if not self.dropout:
            return None
        device = torch.device(self.device)
        states = []
        for index in range(self.trials):
            torch.manual_seed(self.seed + index)
            states.append(default_generator_state(device))
        return states

    def epoch_seconds(self, train_split: Split, validation: Split) -> float:
        """Seconds of one epoch (validation included) of all of this job's trials."""
        models, configs = self.models_and_configs()
        seconds = []
        if self.packed:
            states = self.dropout_states()
            on_epoch = lambda _, r: seconds.append(r.seconds)  # noqa: E731
            train_pack(models, configs, train_split, validation, on_epoch=on_epoch, dropout_states=states)
            return seconds[0]
        for model, config in zip(models, configs, strict=True):
            train(model, train_split, config, validation, on_epoch=lambda r: seconds.append(r.seconds))
        return sum(seconds)


def head(split: Split, count: int | None) -> Split:
    return split if count is None else Split(split.x[:count], split.y[:count])


def run_job(job: Job, barrier, results) -> None:
    """In a fresh process: load, warm up, wait for the other processes, time one epoch, report."""
    torch.set_num_threads(job.threads)
    data = load_data(job.data_dir, device=job.device)
    train_split = head(data.train, job.images)
    validation = head(data.validation, job.images and job.images // 5)
    job.epoch_seconds(head(train_split, WARM_UP_IMAGES), head(validation, WARM_UP_IMAGES))
    if job.packed:
        pixel_bytes(train_split.x)  # once per process and split, like SparseRows.of for a full-batch trainer
    barrier.wait(timeout=BARRIER_SECONDS)
    seconds = job.epoch_seconds(train_split, validation)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the whole process's, loading included
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if job.device == "cuda" else 0.0
    host = host_work(job, train_split, validation) if job.packed and job.host_work else {}
    results.put((seconds, peak, gpu_peak, host))


def host_work(job: Job, train_split: Split, validation: Split) -> dict[str, float]:
    """Seconds of the per-epoch work a pack of the job's trials does besides its steps, on this pack after
    one epoch: the coefficient table for an epoch, the write-back into the models, a regroup where one
    member leaves, and the end's evaluations of every member (training and test splits; the test stands in
    for it here with the validation split). Each is waited for on the device."""
    models, configs = job.models_and_configs()
    pack = Pack.build(models, configs, train_split, job.dropout_states())
    pack.train_epoch(head(train_split, WARM_UP_IMAGES))

    def timed(work) -> float:
        sync(job.device)
        started = time.perf_counter()
        work()
        sync(job.device)
        return time.perf_counter() - started

    return {
        "coefficients": timed(lambda: pack.load_coefficients(pack.steps_per_epoch)),
        "write-back": timed(pack.write_back),
        "end evaluations": timed(lambda: final_scores(pack, list(range(len(pack.members))), train_split, validation)),
        "regroup": timed(lambda: pack.regroup([0], [])),
    }


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Row:
    label: str
    trials_per_hour: float
    epoch_seconds: list[float]
    peaks: list[float]
    gpu_peak: float  # MB, the largest of its processes'; 0 on a CPU
    host: dict[str, float]  # seconds of a pack's host work per epoch (host_work), of its first process


class ChildFailed(Exception):
    """A benchmark process died or ran past its time: the row cannot be measured."""


def measure(label: str, jobs: list[Job], timeout: float) -> Row:
    """Run the jobs in parallel processes, each timed from the same start, waiting at most `timeout` seconds
    for all of their reports; a process that dies first (a CUDA out-of-memory, say) ends the wait at once."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(jobs))
    results = context.Queue()
    processes = [context.Process(target=run_job, args=(job, barrier, results)) for job in jobs]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout
    reports = []
    try:
        while len(reports) < len(jobs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildFailed(f"a {label} process gave no result within {timeout:.0f} s")
            try:
                reports.append(results.get(timeout=min(left, POLL_SECONDS)))
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise ChildFailed(f"a {label} process failed with exit code {dead[0]}") from None
    finally:
        for process in processes:
            if len(reports) < len(jobs) and process.is_alive():
                process.terminate()
            process.join(timeout=JOIN_SECONDS)
    rate = sum(3600 * job.trials / (EPOCHS * seconds) for job, (seconds, *_) in zip(jobs, reports, strict=True))
    return Row(label, rate, [r[0] for r in reports], [r[1] for r in reports], max(r[2] for r in reports), reports[0][3])


def rows_for(shape: Shape, packs: list[int], dropout: float, args: argparse.Namespace) -> list[Row]:
    """Every row for one shape and dropout rate, best of `args.rounds` rounds that each run all rows in turn;
    a row whose process failed or ran past `args.timeout` is printed as failed and left out."""

    def job(packed: bool, trials: int, threads: int, seed: int) -> Job:
        return Job(
            packed,
            shape.widths,
            trials,
            threads,
            seed,
            args.data_dir,
            args.images,
            args.device,
            dropout,
            args.host_work,
        )

    tag = f" d{dropout:g}" if dropout else ""
    if args.device == "cuda":  # one process drives the GPU; its host threads only launch work
        threads = os.cpu_count() or 1
        runs = [(f"reference GPU{tag}", [job(False, REFERENCE_TRIALS, threads, 0)])]
        runs += [(f"pack {size} GPU{tag}", [job(True, size, threads, 0)]) for size in packs]
    else:
        runs = [(f"reference 2x1{tag}", [job(False, REFERENCE_TRIALS, 1, 1000 * core) for core in range(CORES)])]
        for size in packs:
            runs.append((f"pack {size} 2x1{tag}", [job(True, size, 1, 1000 * core) for core in range(CORES)]))
            runs.append((f"pack {size} 1x2{tag}", [job(True, size, CORES, 0)]))
    best: dict[str, Row] = {}
    for _ in range(args.rounds):
        for label, jobs in runs:
            try:
                row = measure(label, jobs, args.timeout)
            except ChildFailed as failure:
                print(f"  {label:<18} failed: {failure}", flush=True)
                continue
            if label not in best or row.trials_per_hour > best[label].trials_per_hour:
                best[label] = row
    return list(best.values())


def print_rows(rows: list[Row], gpu: bool) -> None:
    """The rows, each against the first (the reference) where it was measured."""
    reference = rows[0].trials_per_hour if rows and rows[0].label.startswith("reference") else math.nan
    print(
        f"  {'row':<18} {'trials/h':>9} {'vs ref':>7} {'epoch s':>13} {'peak RSS MB':>13} {'total MB':>9}"
        + (f" {'GPU MB':>8}" if gpu else "")
    )
    for row in rows:
        seconds = " ".join(f"{s:.2f}" for s in row.epoch_seconds)
        peaks = " ".join(f"{p:.0f}" for p in row.peaks)
        print(
            f"  {row.label:<18} {row.trials_per_hour:>9,.0f} {row.trials_per_hour / reference:>6.2f}x "
            f"{seconds:>13} {peaks:>13} {sum(row.peaks):>9.0f}" + (f" {row.gpu_peak:>8.0f}" if gpu else ""),
            flush=True,
        )
    for row in rows:
        if row.host:  # each against the epoch it comes with, measured in the same process
            epoch = row.epoch_seconds[0]
            shares = ", ".join(
                f"{name} {seconds * 1e3:.1f} ms ({seconds / epoch:.1%})" for name, seconds in row.host.items()
            )
            print(f"  {row.label}: host work per epoch against its {epoch:.2f} s epoch: {shares}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="50000,200000", help="comma-separated parameter budgets")
    parser.add_argument(
        "--packs", default=None, help=f"comma-separated pack sizes (default {CPU_PACKS}; on CUDA {GPU_PACKS})"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default cpu)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all rows of a shape; each keeps its best")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ARCHSEARCH_DATA or ./data)")
    parser.add_argument(
        "--dropouts", default="0,0.2", help="comma-separated hidden dropout rates, each its own rows (default 0,0.2)"
    )
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help=f"comma-separated shapes of {', '.join(SHAPES)} (default all)"
    )
    parser.add_argument(
        "--timeout", type=float, default=ROW_SECONDS, help=f"seconds a row may take (default {ROW_SECONDS})"
    )
    parser.add_argument(
        "--host-work",
        action="store_true",
        help="also time each pack's host work per epoch (coefficients, write-back, regroup, end evaluations)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: first budget, depth 2, packs up to 8, 6,400 training and 1,280 validation images",
    )
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        parser.exit(2, "bench: --device cuda, but torch sees no CUDA device here\n")
    budgets = [int(b) for b in args.budgets.split(",")]
    packs = [int(k) for k in (args.packs or (GPU_PACKS if gpu else CPU_PACKS)).split(",")]
    dropouts = [float(rate) for rate in args.dropouts.split(",")]
    chosen = args.shapes.split(",")
    if unknown := sorted(set(chosen) - set(SHAPES)):
        parser.exit(2, f"bench: --shapes: no shape {', '.join(unknown)}; choose from {', '.join(SHAPES)}\n")
    if any(not 0 <= rate < 1 for rate in dropouts):
        parser.exit(2, "bench: --dropouts: each rate from 0 up to (not including) 1\n")
    args.images = None
    if args.quick:
        budgets, packs, args.images, args.rounds = budgets[:1], [k for k in packs if k <= 8] or packs[:1], 6_400, 1
    started = time.perf_counter()
    where = f"{torch.cuda.get_device_name()}, " if gpu else ""
    layout = "GPU = 1 process on the GPU" if gpu else "2x1 = 2 processes of 1 thread, 1x2 = 1 process of 2 threads"
    print(
        f"torch {torch.__version__}, {where}{os.cpu_count()} CPU cores; {args.images or 'all'} training images, "
        f"batch {BATCH}, tanh, Adam; load average {os.getloadavg()[0]:.2f}\n"
        f"trials/h: for {EPOCHS} epochs, from 1 timed epoch per process (validation included) after a warm-up, "
        f"best of {args.rounds} round(s); {layout}\n"
        "epoch s: each process's timed epoch (the reference's: its trials' epochs added up); "
        "peak RSS: per process, loading included"
    )
    best: dict[tuple[int, str, float], tuple[float, float, str]] = {}
    table = []
    for budget in budgets:
        for shape in shapes(budget, args.quick, chosen):
            for dropout in dropouts:
                print(f"\nP = {budget:,}, {shape.label()}" + (f", dropout {dropout:g}" if dropout else ""))
                rows = rows_for(shape, packs, dropout, args)
                print_rows(rows, gpu)
                reference = rows[0].trials_per_hour if rows and rows[0].label.startswith("reference") else math.nan
                table += [
                    [
                        f"{budget:,}, {shape.label()}" + (f", dropout {dropout:g}" if dropout else "")
                        if index == 0
                        else "",
                        row.label,
                        f"{row.trials_per_hour:,.0f}",
                        f"{row.trials_per_hour / reference:.2f}x",
                        f"{sum(row.peaks):,.0f}",
                        *([f"{row.gpu_peak:,.0f}"] if gpu else []),
                    ]
                    for index, row in enumerate(rows)
                ]
                packed_rows = [row for row in rows if not row.label.startswith("reference")]
                if packed_rows and rows[0].label.startswith("reference"):
                    top = max(packed_rows, key=lambda r: r.trials_per_hour)
                    ratio = top.trials_per_hour / rows[0].trials_per_hour
                    best[budget, shape.name, dropout] = (top.trials_per_hour, ratio, top.label)
    print("\nbest pack against the reference:")
    for (budget, name, dropout), (rate, ratio, label) in best.items():
        met = rate >= GPU_TARGET if gpu else ratio >= TARGET
        wanted = f"{GPU_TARGET:,} trials/h" if gpu else f"{TARGET:g}x"
        target = f" (target {wanted}: {'reached' if met else 'not reached'})" if budget == TARGET_BUDGET else ""
        shown = f", dropout {dropout:g}" if dropout else ""
        print(f"  P = {budget:,}, {name}{shown}: {rate:,.0f} trials/h, {ratio:.2f}x, {label}{target}")
    print(f"\n{time.perf_counter() - started:.0f} s in all; load average {os.getloadavg()[0]:.2f} at the end")
    if args.quick:
        return 0  # a smoke run's numbers are not the page's table
    header = ["P, shape", "row", "trials/h", "vs reference", "peak RSS MB, all processes", *(["GPU MB"] if gpu else [])]
    intro = (
        f"Trials an hour for {EPOCHS} epochs from 1 timed epoch per process, best of {args.rounds} round(s), "
        f"{args.images or 'all'} training images, batch {BATCH}, tanh, Adam; {layout}.\n\n"
    )
    write_table(
        "packing" if not gpu else "packing-cuda",
        intro + markdown_table(header, table, right=[False, False, *(True for _ in header[2:])]),
        command("packing.py", argv),
        "1 per process (2 in the 1x2 rows)" if not gpu else torch.get_num_threads(),
        args.device,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
