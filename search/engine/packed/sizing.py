"""`--pack auto`: the pack size that trains a model's copies fastest per member on this machine."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from search.engine.config import TrainConfig
from search.engine.data import Split
from search.engine.packed.graphs import GRAPH_WARM_UP_STEPS
from search.engine.packed.pack import Pack

# Measuring stops at the first doubling that makes a member's step less than this much cheaper, and the
# smallest pack within NEAR_FASTEST of the fastest measured is taken: a trial in a pack waits for the pack,
# and a smaller pack holds less memory and, in a search, fewer trials whose results the sampler has not seen.
DOUBLING_GAIN = 0.05
NEAR_FASTEST = 0.1
SIZING_ROUNDS = 3  # timed rounds of steps for each size, the fastest taken,
SIZING_SECONDS = 0.05  # each at least this long, or one step where a step takes longer
SIZING_STEPS = 1000  # all rounds and the warm-up of one size within this many steps
WARM_UP_SECONDS = 0.05
WARM_UP_STEPS = 2  # at least, and a pack that replays its step warms up until it has replayed it (GRAPH_WARM_UP_STEPS)


@dataclass(frozen=True)
class PackTimings:
    """Seconds of one training step per member of a pack of copies of one model, by pack size (1: the
    model trained alone, by trainer.train's step), as fitting_pack_size measured them on this machine."""

    step_seconds: dict[int, float]

    def size(self, speedup: float) -> int:
        """The smallest pack within NEAR_FASTEST of the fastest, or 1 unless it trains its members at
        least `speedup` times as fast as alone."""
        fastest = min(self.step_seconds.values())
        size = min(k for k, seconds in self.step_seconds.items() if seconds <= (1 + NEAR_FASTEST) * fastest)
        return size if self.step_seconds[1] >= speedup * self.step_seconds[size] else 1


def fitting_pack_size(model: nn.Module, config: TrainConfig, train_split: Split, largest: int) -> PackTimings:
    """Time a step of `model` trained alone (trainer.train's step) and in packs of 2, 4, 8, ... up to
    `largest` copies of it, each member with its own seed, on `train_split`, until a doubling makes a
    member's step less than DOUBLING_GAIN cheaper; then time every size again, SIZING_ROUNDS rounds in all,
    taking turns, and keep each size's fastest round. A burst of other work, or a kernel's or a buffer's
    first use, slows a round of one size; taking turns spreads those over the sizes.

    The timings leave out the epoch's validation (a pack's is cheaper still) and use copies, so `model`, the
    global random generators and everything else a trial reads are left as they were."""
    device = train_split.x.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # alone, dropout draws from it
        timers = {1: alone_step_timer(model, config, train_split)}
        timings = {1: timers[1].round()}
        last, candidate = 1, 2
        while candidate <= largest:
            timers[candidate] = pack_step_timer(model, config, train_split, candidate)
            timings[candidate] = timers[candidate].round() / candidate
            if timings[candidate] > (1 - DOUBLING_GAIN) * timings[last]:
                break
            last, candidate = candidate, largest if candidate < largest < 2 * candidate else 2 * candidate
        for _ in range(SIZING_ROUNDS - 1):
            for size, timer in timers.items():
                timings[size] = min(timings[size], timer.round() / size)
    return PackTimings(timings)


class StepTimer:
    """Rounds of timed training steps of one model or pack: the first round warms up first."""

    def __init__(
        self, step: Callable[[], object], steps: int, device: torch.device, warm_up_steps: int = WARM_UP_STEPS
    ):
        self.step, self.steps, self.device, self.taken = step, steps, device, 0
        self.warm_up_steps = warm_up_steps

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def round(self) -> float:
        """Seconds per step of a round of at least SIZING_SECONDS, or of one step that takes longer (inf once
        `steps` are used up); before the first, WARM_UP_SECONDS and `warm_up_steps` of steps."""
        if self.taken == 0:
            started = time.perf_counter()
            while self.taken < self.steps - 1 and (
                self.taken < self.warm_up_steps or time.perf_counter() - started < WARM_UP_SECONDS
            ):
                self.step()
                self.taken += 1
            self.sync()
        started, timed = time.perf_counter(), 0
        while self.taken < self.steps and (timed == 0 or time.perf_counter() - started < SIZING_SECONDS):
            self.step()
            self.taken, timed = self.taken + 1, timed + 1
            if timed % 4 == 0:
                self.sync()
        self.sync()
        return (time.perf_counter() - started) / timed if timed else math.inf


def copies_pack(model: nn.Module, config: TrainConfig, train_split: Split, size: int) -> Pack:
    """A pack of `size` copies of `model`, member k with seed config.seed + k, its update coefficients loaded
    for the steps of an epoch, as Pack.epoch_steps loads them (bench/pack_ceiling.py steps it on its own)."""
    configs = [dataclasses.replace(config, seed=config.seed + index) for index in range(size)]
    pack = Pack.build([copy.deepcopy(model) for _ in configs], configs, train_split)
    pack.load_coefficients(pack.steps_per_epoch)
    return pack


def pack_step_timer(model: nn.Module, config: TrainConfig, train_split: Split, size: int) -> StepTimer:
    """The steps training runs for `size` copies of `model` (copies_pack) on their own batches of
    `train_split`, epoch after epoch (Pack.epoch_steps: on CUDA, replays of the captured step), warmed up
    until the step has been captured and replayed where it will be."""
    pack = copies_pack(model, config, train_split, size)
    epoch: Iterator[None] = iter(())

    def step() -> None:
        nonlocal epoch
        if next(epoch, EPOCH_END) is EPOCH_END:
            epoch = pack.epoch_steps(train_split)
            next(epoch)

    replays = pack.replays_steps(train_split)
    warm_up = max(WARM_UP_STEPS, GRAPH_WARM_UP_STEPS + 2) if replays else WARM_UP_STEPS  # + the capture, a replay
    return StepTimer(step, SIZING_STEPS, train_split.x.device, warm_up)


def alone_step_timer(model: nn.Module, config: TrainConfig, train_split: Split) -> StepTimer:
    """The step trainer.train takes for a copy of `model` alone, on its batches of `train_split`, epoch after
    epoch (a full-batch epoch is one step)."""
    from search.engine.trainer import batches, make_step

    device = train_split.x.device
    step, _, batch = make_step(copy.deepcopy(model), train_split, config)
    order = torch.Generator(device=device).manual_seed(config.seed)
    loader: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(())

    def next_step() -> None:
        nonlocal loader
        inputs = next(loader, None)
        if inputs is None:
            loader = batches(train_split, batch, order)
            inputs = next(loader)
        step(*inputs)

    return StepTimer(next_step, SIZING_STEPS, device)


EPOCH_END = object()  # what next() gives for an epoch's generator of steps that has run out
