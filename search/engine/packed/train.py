"""train_pack: K models trained in one pack, each as trainer.train would train it alone."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from search.engine.config import TrainConfig
from search.engine.data import Split
from search.engine.denormals import denormals_flushed
from search.engine.packed.layout import Entrant, Member
from search.engine.packed.pack import Pack
from search.engine.trainer import Diverged, EpochRecord, Scores, TrainResult

OnPackEpoch = Callable[[int, EpochRecord], None]

Refill = Callable[[int], Sequence[Entrant]]
OnPackEnd = Callable[[int, "TrainResult | Exception"], None]


@denormals_flushed()  # as train() is: search/engine/denormals.py
def train_pack(
    models: Sequence[nn.Sequential],
    configs: Sequence[TrainConfig],
    train_split: Split,
    validation: Split | None = None,
    test: Split | None = None,
    on_epoch: OnPackEpoch | None = None,
    dropout_states: Sequence[torch.Tensor] | None = None,
    refill: Refill | None = None,
    on_end: OnPackEnd | None = None,
    slots: int | None = None,
) -> list[TrainResult | Exception]:
    """Train every model in place, all in one pack: one result per model, in order.

    A model's slot holds its TrainResult, filled as train() fills it, or the exception that ended its
    training: Diverged where train() would raise it, or whatever `on_epoch(index, record)` raised for it
    (an Optuna prune), `index` being the model's position in `models`. Each model holds its trained
    weights at the end, or at its last epoch for one that left early. The epochs' validation scores come
    from one pass for the whole pack (Pack.evaluate), and so do the final scores of the members that end
    together (final_scores).

    Each model must be a stack as build_mlp makes it, built by the caller (after torch.manual_seed, as
    train_trial does), and `configs[i]` its settings. `dropout_states[i]` is the state of the device's
    default generator (torch.get_rng_state(), or torch.cuda.get_rng_state() on CUDA) right after model i
    was built: training alone, its dropout masks would be drawn from there. Without it, a member's masks
    come from a generator seeded with its config's seed: as random, but not the masks train() would draw.

    A pack keeps its `slots` (at least len(models)) busy: at each epoch boundary where members have
    left, `refill(free)` may return up to `free` Entrants, which join with indices counted on from
    len(models) and train from their own first epoch, each on its own step count and schedule, so each
    still trains as it would alone. `on_end(index, outcome)` hears each model's end as it happens (its
    slot's final value), so a caller can record it before the pack goes on.

    A record's `seconds` is the pack's wall time for that epoch, every member's validation included, and
    a result's `seconds` the time from the model's first epoch to its last: what the trial waited, shared
    with the other members (its share of the machine is that over the pack's size).

    Raises ValueError where the models cannot share a pack: another shape than build_mlp's, or different
    depths, activations or SHARED_SETTINGS (an entrant included).
    """
    pack = Pack.build(models, configs, train_split, dropout_states)
    results: list[TrainResult | Exception | None] = [None] * len(models)
    slots = max(slots or 0, len(models))

    def end(member: Member, outcome: TrainResult | Exception) -> None:
        results[member.index] = outcome
        if on_end is not None:
            on_end(member.index, outcome)

    while pack.members:
        epoch_start = time.perf_counter()
        train_losses = pack.train_epoch(train_split)
        pack.write_back()  # on_epoch sees each model as train() would show it: as of this epoch
        scores = pack.evaluate(validation) if validation is not None else [None] * len(pack.members)
        seconds = time.perf_counter() - epoch_start
        leaving, finishing = [], []
        for position, (member, loss, score) in enumerate(zip(pack.members, train_losses, scores, strict=True)):
            member.epochs += 1
            try:
                check_finite(member.epochs, loss, score)
                record = EpochRecord(
                    member.epochs, loss, score.loss if score else None, score.accuracy if score else None, seconds
                )
                member.result.history.append(record)
                if on_epoch is not None:
                    on_epoch(member.index, record)
            except Exception as error:  # a prune or a divergence ends this member only
                end(member, error)
                leaving.append(position)
                continue
            if member.epochs == member.config.epochs:
                member.result.seconds = time.perf_counter() - member.started
                member.result.validation = score  # of the weights it ends with: train() takes it again
                finishing.append(position)
        for position, outcome in zip(finishing, final_scores(pack, finishing, train_split, test), strict=True):
            end(pack.members[position], outcome)
        leaving = sorted(leaving + finishing)
        free = slots - len(pack.members) + len(leaving)
        entrants = list(refill(free)) if refill is not None and free > 0 else []
        if len(entrants) > free:
            raise ValueError(f"refill returned {len(entrants)} models for {free} free slots")
        joining = pack.enter(entrants, first_index=len(results), train_split=train_split)
        results.extend([None] * len(joining))
        pack.regroup(leaving, joining)
    return results


def check_finite(epoch: int, train_loss: float, validation: Scores | None) -> None:
    """Raise Diverged where train() raises it at the end of an epoch."""
    if not math.isfinite(train_loss):
        raise Diverged(epoch, train_loss)
    if validation is not None and not math.isfinite(validation.loss):
        raise Diverged(epoch, validation.loss)


def final_scores(
    pack: Pack, positions: list[int], train_split: Split, test: Split | None
) -> list[TrainResult | Exception]:
    """The scores train() takes after its last epoch for the members at these positions, or the Diverged it
    would raise there: each split evaluated once for all of them (Pack.evaluate), not once per member with a
    wait for the device each. Their validation scores are their last epoch's, of the same weights."""
    if not positions:
        return []
    train_scores = pack.evaluate(train_split, positions)
    test_scores = pack.evaluate(test, positions) if test is not None else [None] * len(positions)
    outcomes: list[TrainResult | Exception] = []
    for position, train_score, test_score in zip(positions, train_scores, test_scores, strict=True):
        member = pack.members[position]
        result = member.result
        result.train = train_score
        if not math.isfinite(train_score.loss):
            outcomes.append(Diverged(member.config.epochs, train_score.loss))
            continue
        result.test = test_score
        outcomes.append(result)
    return outcomes
