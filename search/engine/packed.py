"""Packed training: K MLPs of one depth trained as one model of K-batched products (HFTA, MLSys 2021).

Trials trained side by side, one per core, each repeat what a pack does once for all of its members:
the dispatch of every op of a step, the first layer's products on narrow matrices, a validation pass
per model. A pack runs each layer's products for all its members as one batched product, updates all
of their parameters in one tensor, and validates them all with one wide product of the inputs they
share. bench/packing.py measures the trials per hour against the trainer's one trial per core.

Each member trains as search.engine.trainer.train would train it alone, up to float rounding: from its
own initial weights, on its own batch order, with its own learning rate and schedule, weight decay,
dropout and input dropout rates (and, given `dropout_states`, its own dropout masks); it is pruned or
diverges on its own, after which it leaves the pack and the others go on as before. A model that takes the
free slot at an epoch boundary (train_pack's `refill`) trains from its own first epoch, on its own step
count. The members share what the batched products and the one step loop need shared: depth, activation,
optimizer kind, batch size, epochs and momentum.

Layout: each layer's weights are a (K, out, in) view and its biases a (K, out) view into one (K, n)
parameter tensor, padded to the pack's widest member. Padded units start at zero and stay zero: their
weights in and out get zero gradients, and every update here keeps a zero parameter with zero gradient
at zero. Activations are held with features as rows, (K, features, batch): the first layer's product then
reads the batch as a transposed operand, which the CPU BLAS runs faster at these shapes than the
batch-major product MLPStep uses, and the logits come out with classes as rows, as MLPStep's log-softmax
wants them.

On CUDA a pack without dropout captures its step, the batch's gather included, as a CUDA graph once per
layout and replays it for every full batch (StepGraph): one launch per step instead of dozens of tiny ones.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.mlp import split_input_dropout
from search.engine.config import TrainConfig
from search.engine.data import Split
from search.engine.fused import ADAM_ARGUMENTS, kernel_takes
from search.engine.trainer import (
    Diverged,
    EpochRecord,
    Scores,
    TrainResult,
    evaluate,
    make_optimizer,
    make_schedule,
    tanh_,
)

SHARED_SETTINGS = ("optimizer", "batch_size", "epochs", "momentum", "activation")
GRAPH_WARM_UP_STEPS = 3  # steps run as they are after each layout before the step is captured
ACTIVATIONS = (nn.Tanh, nn.ReLU, nn.GELU)
# Rows per chunk of a packed evaluation: about this many activations of its widest layer (8 MB) with K
# members, within these bounds: fewer rows make the first layer's product less efficient, more spill the cache.
EVAL_ACTIVATIONS = 1 << 21
EVAL_ROWS = (256, 2048)
PIXEL_LEVELS = 255  # search/engine/data.py loads a pixel p as p / 255 - 0.5
PIXEL_OFFSET = 0.5
CHECK_ROWS = 4096

_pixel_cache: tuple[weakref.ref, int, torch.Tensor | None] | None = None

OnPackEpoch = Callable[[int, EpochRecord], None]


@dataclass(frozen=True)
class Entrant:
    """A model that joins a running pack at an epoch boundary (train_pack's `refill`): built as for
    train_pack's `models`, with its config and the dropout state it would start from alone."""

    model: nn.Sequential
    config: TrainConfig
    dropout_state: torch.Tensor | None = None


Refill = Callable[[int], Sequence[Entrant]]
OnPackEnd = Callable[[int, "TrainResult | Exception"], None]


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
    from one pass for the whole pack (Pack.evaluate), the final scores from trainer.evaluate.

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
        leaving = []
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
                elapsed = time.perf_counter() - member.started
                end(member, final_scores(member, elapsed, train_split, validation, test))
                leaving.append(position)
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
    member: Member, seconds: float, train_split: Split, validation: Split | None, test: Split | None
) -> TrainResult | Exception:
    """The scores train() takes after its last epoch, or the Diverged it would raise there."""
    result = member.result
    result.seconds = seconds
    result.train = evaluate(member.model, train_split)
    if not math.isfinite(result.train.loss):
        return Diverged(member.config.epochs, result.train.loss)
    result.validation = evaluate(member.model, validation) if validation is not None else None
    result.test = evaluate(member.model, test) if test is not None else None
    return result


@dataclass(frozen=True)
class MemberShape:
    """What a pack reads off one model: its Linear layers, its activation and its dropout rates."""

    linears: tuple[nn.Linear, ...]
    activation: nn.Module
    dropout: float
    input_dropout: float = 0.0

    @property
    def sizes(self) -> list[int]:
        """Inputs, hidden widths, classes."""
        return [self.linears[0].in_features, *(linear.out_features for linear in self.linears)]

    @staticmethod
    def of(model: nn.Module) -> MemberShape:
        """ValueError unless `model` is [Dropout] Linear (activation [Dropout] Linear)*, as build_mlp makes it."""
        input_dropout, modules = split_input_dropout(list(model) if type(model) is nn.Sequential else [])
        rates = {m.p for m in modules if type(m) is nn.Dropout}
        core = [m for m in modules if type(m) is not nn.Dropout]
        linears, activations = core[0::2], core[1::2]
        well_formed = (
            len(core) % 2 == 1
            and len(rates) <= 1
            and len(modules) == 1 + (3 if rates else 2) * len(activations)
            and all(type(m) is nn.Dropout for m in (modules[2::3] if rates else ()))
            and all(type(m) is nn.Linear and m.bias is not None for m in linears)
            and all(type(m) in ACTIVATIONS for m in activations)
            and len({repr(m) for m in activations}) <= 1
        )
        if not well_formed:
            raise ValueError(f"a pack trains MLPs as build_mlp makes them, not {model}")
        activation = activations[0] if activations else nn.Identity()
        return MemberShape(tuple(linears), activation, rates.pop() if rates else 0.0, input_dropout)


def check_pack(
    shapes: Sequence[MemberShape], configs: Sequence[TrainConfig], dropout_states: Sequence[torch.Tensor] | None
) -> None:
    """ValueError unless the members can train in one pack."""
    if not shapes:
        raise ValueError("a pack needs at least one model")
    if len(configs) != len(shapes) or (dropout_states is not None and len(dropout_states) != len(shapes)):
        given = "none" if dropout_states is None else len(dropout_states)
        raise ValueError(f"{len(shapes)} models need as many configs (got {len(configs)}) and dropout states ({given})")
    for name, values in (
        ("depth", [len(shape.linears) for shape in shapes]),
        ("inputs", [shape.sizes[0] for shape in shapes]),
        ("classes", [shape.sizes[-1] for shape in shapes]),
        ("activation layer", [repr(shape.activation) for shape in shapes]),
        *((setting, [getattr(config, setting) for config in configs]) for setting in SHARED_SETTINGS),
    ):
        if len(set(values)) > 1:
            raise ValueError(
                f"the members of a pack share their {name}; got {', '.join(sorted(map(str, set(values))))}"
            )


@dataclass
class Member:
    """One model in a pack, with what it brings of its own."""

    index: int  # its position in train_pack's lists
    model: nn.Sequential
    config: TrainConfig
    shape: MemberShape
    batch_generator: torch.Generator
    dropout_generator: torch.Generator
    result: TrainResult
    started: float = 0.0  # time.perf_counter() when it joined
    epochs: int = 0  # epochs trained
    steps: int = 0  # optimizer steps taken: its own, as it may have joined a running pack
    schedule: ScheduleValues | None = None


def dropout_generator(device: torch.device, seed: int, state: torch.Tensor | None) -> torch.Generator:
    generator = torch.Generator(device=device)
    if state is None:
        return generator.manual_seed(seed)
    generator.set_state(state)
    return generator


def schedule_key(config: TrainConfig) -> tuple:
    """The settings that make a member's learning rate and beta1 or momentum, step by step."""
    return (config.optimizer, config.lr, config.momentum, config.schedule)


def pixel_bytes(x: torch.Tensor) -> torch.Tensor | None:
    """x as the bytes p it was scaled from, as search/engine/data.py scales pixels (p / 255 - 0.5), or None
    unless scaling them back gives x to the bit. The last answer is kept, for the next pack on the same x."""
    global _pixel_cache
    if _pixel_cache is not None and _pixel_cache[0]() is x and _pixel_cache[1] == x._version:
        return _pixel_cache[2]
    pixels = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    exact = x.dim() == 2
    for start in range(0, len(x) if exact else 0, CHECK_ROWS):  # chunks: no float copy of all of x at once
        chunk = x[start : start + CHECK_ROWS]
        levels = chunk.add(PIXEL_OFFSET).mul_(PIXEL_LEVELS).round_()
        if levels.min() < 0 or levels.max() > PIXEL_LEVELS:
            exact = False
            break
        pixels[start : start + CHECK_ROWS] = levels
        if not torch.equal(scale_pixels(pixels[start : start + CHECK_ROWS], levels), chunk):
            exact = False
            break
    result = pixels if exact else None
    _pixel_cache = (weakref.ref(x), x._version, result)
    return result


def scale_pixels(pixels: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """p / 255 - 0.5 into `out`, by the same float ops as search/engine/data.py."""
    return out.copy_(pixels).div_(float(PIXEL_LEVELS)).sub_(PIXEL_OFFSET)


def center_pixels(pixels: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """p - 127.5 into `out`: 255 times the input p / 255 - 0.5, in one pass and exact in floats."""
    return out.copy_(pixels).sub_(PIXEL_LEVELS * PIXEL_OFFSET)


class ScheduleValues:
    """One config's learning rate and beta1 (Adam) or momentum (SGD), step by step, as torch gives them.

    Read off a real optimizer and schedule (trainer.make_optimizer, make_schedule) stepped over a dummy
    parameter, so every schedule, one-cycle's cycled beta1 or momentum included, is torch's own; an
    epoch's worth at a time, so a long run holds no table of all its steps."""

    def __init__(self, config: TrainConfig, total_steps: int):
        self.optimizer = make_optimizer([nn.Parameter(torch.zeros(1))], config)
        self.group = self.optimizer.param_groups[0]
        self.schedule = make_schedule(self.optimizer, config, total_steps)
        self.optimizer.step()  # no gradient, so no change; a schedule warns if it steps before its optimizer has
        self.taken: tuple[list[float], list[float]] = ([], [])
        self.at = -1  # the step of `taken`'s first values

    def first_value(self) -> float:
        """beta1 or momentum, as the group holds it now."""
        return self.group["betas"][0] if "betas" in self.group else self.group["momentum"]

    def take(self, start: int, count: int) -> tuple[list[float], list[float]]:
        """The values of steps start .. start + count - 1, counted from 0; steps come in order."""
        if self.at != start:  # members sharing a config share this, and ask for each epoch once each
            rates, firsts = [], []
            for _ in range(count):
                rates.append(self.group["lr"])
                firsts.append(self.first_value())
                if self.schedule is not None:
                    self.schedule.step()
            self.taken, self.at = (rates, firsts), start
        return self.taken


def weight_product(grad: torch.Tensor, inputs_t: torch.Tensor, scale: float, out: torch.Tensor) -> None:
    """out = scale * grad @ inputs_t, a layer's weight gradients for the pack: (K, out, B) @ (K, B, in)."""
    if scale == 1.0:
        torch.bmm(grad, inputs_t, out=out)
    else:
        out.baddbmm_(grad, inputs_t, beta=0.0, alpha=scale)


def captures_steps(device: torch.device) -> bool:
    """Whether a pack replays a captured step (Pack.graph_epoch): on CUDA, where a step of a small pack
    is dozens of launches of microseconds each, and one graph replay launches them all at once."""
    return device.type == "cuda"


class StepGraph:
    """A pack's training step, captured once as a CUDA graph with tensors of its own for what each step
    reads anew (its rows, labels and update coefficients) and replayed for each full batch of a layout.

    Replaying it is one launch for the step's gather, products, loss, gradients and update; the losses add
    up into a (K,) total on the device, which Pack.graph_epoch zeroes at each epoch's start."""

    def __init__(self, pack: Pack, source: torch.Tensor, scale: float, rows: torch.Tensor, labels: torch.Tensor):
        self.rows = rows.clone()
        self.labels = labels.clone()
        self.coefficients = pack.table[pack.step_index].clone()
        self.total = pack.param.new_zeros(len(pack.members))
        self.graph = new_graph(pack.device)
        pack.graph = self  # the step reads its coefficients from here from now on

        def step() -> None:
            x = pack.gather(source, self.rows, self.labels.shape)
            self.total += pack.step(x, self.labels, scale)

        self.graph.capture(step)

    def run(self, rows: torch.Tensor, labels: torch.Tensor) -> None:
        """One step on these rows and labels (the caller copies this step's coefficients in first); its
        losses are added to `total`."""
        self.rows.copy_(rows)
        self.labels.copy_(labels)
        self.graph.replay()


class CudaGraph:
    """torch.cuda.CUDAGraph behind the two calls StepGraph makes."""

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, step: Callable[[], None]) -> None:
        with torch.cuda.graph(self.graph):
            step()

    def replay(self) -> None:
        self.graph.replay()


def new_graph(device: torch.device) -> CudaGraph:
    """A graph to capture a step on `device` (CUDA): one place for the tests' CPU stand-in to take."""
    return CudaGraph()


def kernel_per_member_group(device: torch.device) -> bool:
    """Whether Adam's update runs torch's fused kernel once per group of members with the same values.

    On a CPU that is one pass over the parameters (weight decay and the step included) for a call's small
    cost, against three or more passes of one update for the whole pack; on a GPU each call is a launch,
    and a pack of hundreds of members with their own learning rates would make hundreds per step."""
    return device.type == "cpu"


@dataclass(frozen=True)
class KernelGroup:
    """Members whose Adam steps this epoch take the same learning rates, beta1 values and weight decay: their
    values step by step, and their rows of the parameters, gradients, moments and step counts."""

    rows: tuple[int, ...]
    rates: tuple[float, ...]
    firsts: tuple[float, ...]
    decay: float
    tensors: list[list[torch.Tensor]]


@dataclass
class Layer:
    """One layer's views into the pack's flat tensors: (K, out, in) weights, (K, out) biases, padded."""

    weight: torch.Tensor
    bias: torch.Tensor
    weight_grad: torch.Tensor
    bias_grad: torch.Tensor


class Pack:
    """The members' parameters, gradients and optimizer state as (K, n) tensors, and the packed step.

    Row k of every per-member tensor is member k. Members leave and join at epoch boundaries (regroup),
    where every per-member tensor is laid out anew and each staying member's rows are copied as they were,
    so its trajectory goes on as it was."""

    @classmethod
    def build(
        cls,
        models: Sequence[nn.Sequential],
        configs: Sequence[TrainConfig],
        train_split: Split,
        dropout_states: Sequence[torch.Tensor] | None = None,
    ) -> Pack:
        """The pack of these models (moved to the split's device), to train on `train_split` (see train_pack)."""
        shapes = [MemberShape.of(model) for model in models]
        check_pack(shapes, configs, dropout_states)
        size = len(train_split)
        batch_size = configs[0].batch_size
        batch = size if batch_size in (0, None) or batch_size >= size else batch_size
        pack = cls(batch, math.ceil(size / batch), configs[0], shapes[0], train_split.x.device)
        states = dropout_states if dropout_states is not None else [None] * len(models)
        entrants = [Entrant(*entry) for entry in zip(models, configs, states, strict=True)]
        pack.regroup([], pack.enter(entrants, first_index=0, train_split=train_split))
        return pack

    def __init__(self, batch: int, steps_per_epoch: int, config: TrainConfig, shape: MemberShape, device: torch.device):
        self.members: list[Member] = []
        self.batch = batch
        self.steps_per_epoch = steps_per_epoch
        self.device = device
        self.activation = shape.activation
        self.optimizer = config.optimizer
        self.first = (config, shape)  # what every member must share with the first (check_pack)
        self.sizes: list[int] = []
        self.spans: list[tuple[int, int, int]] = []  # each layer's (offset, out, in): its weights, then its biases
        self.param = torch.zeros((0, 0), device=device)
        self.state: list[torch.Tensor] = []
        self.epochs_trained = 0
        self.schedules: dict[tuple, ScheduleValues] = {}
        self.fused_kernel = self.optimizer != "sgd" and kernel_takes("_fused_adam_", ADAM_ARGUMENTS)
        kernel = "_fused_adamw_" if self.optimizer == "adamw" else "_fused_adam_"
        self.kernel_groups: list[KernelGroup] | None = None
        grouped = self.optimizer != "sgd" and kernel_per_member_group(device) and kernel_takes(kernel, ADAM_ARGUMENTS)
        self.group_kernel = getattr(torch, kernel) if grouped else None  # what adam_update calls per KernelGroup
        self.step_index = 0  # the step within the current epoch

    def enter(self, entrants: Sequence[Entrant], first_index: int, train_split: Split) -> list[Member]:
        """Members for these models, numbered from `first_index`, checked against the pack; not yet in it."""
        if not entrants:
            return []
        shapes = [MemberShape.of(entrant.model) for entrant in entrants]
        config, shape = self.first
        check_pack([shape, *shapes], [config, *(entrant.config for entrant in entrants)], None)
        device, now = self.device, time.perf_counter()
        members = []
        for index, (entrant, shape) in enumerate(zip(entrants, shapes, strict=True), start=first_index):
            entrant.model.to(device).train()
            seed = entrant.config.seed
            batches = torch.Generator(device=device).manual_seed(seed)
            dropout = dropout_generator(device, seed, entrant.dropout_state)
            result = TrainResult(device=str(device))
            members.append(Member(index, entrant.model, entrant.config, shape, batches, dropout, result, now))
        # Members joining together with one config share its schedule's values (ScheduleValues.take).
        total_steps = self.steps_per_epoch * config.epochs
        for member in members:
            key = (*schedule_key(member.config), self.epochs_trained)
            if key not in self.schedules:
                self.schedules[key] = ScheduleValues(member.config, total_steps)
            member.schedule = self.schedules[key]
        return members

    def regroup(self, leaving: list[int], joining: list[Member]) -> None:
        """Drop the members at these positions and add `joining`: every per-member tensor laid out anew.

        Each staying member's rows are copied as they were (parameters and optimizer state), a joining
        member's weights come from its model with zero optimizer state, as torch's optimizer starts. The
        padding shrinks to the widest member left, so a wide member that leaves leaves no wasted work."""
        gone = set(leaving)
        staying = [(position, m) for position, m in enumerate(self.members) if position not in gone]
        if not leaving and not joining:
            return
        members = [m for _, m in staying] + joining
        self.members = members
        if not members:
            return
        old_spans, old_tensors = self.spans, [self.param, *self.state]
        self.sizes = [max(sizes) for sizes in zip(*(m.shape.sizes for m in members), strict=True)]
        self.spans = []
        offset = 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            self.spans.append((offset, fan_out, fan_in))
            offset += fan_out * fan_in + fan_out
        count = len(members)
        self.param = torch.zeros((count, offset), device=self.device)
        self.grad = torch.zeros_like(self.param)
        self.state = [torch.zeros_like(self.param) for _ in range(1 if self.optimizer == "sgd" else 2)]
        elementwise = self.group_kernel is None or captures_steps(self.device)  # Adam's elementwise form may run
        self.scratch = torch.empty_like(self.param) if self.optimizer != "sgd" and elementwise else None
        with torch.no_grad():
            for new, old in zip((self.param, *self.state), old_tensors, strict=True) if staying else ():
                for layer, ((weight, bias), (old_weight, old_bias)) in enumerate(
                    zip(self.views(new), self.views(old, old_spans), strict=True)
                ):
                    for row, (old_row, member) in enumerate(staying):
                        fan_in, fan_out = member.shape.sizes[layer], member.shape.sizes[layer + 1]
                        weight[row, :fan_out, :fan_in] = old_weight[old_row, :fan_out, :fan_in]
                        bias[row, :fan_out] = old_bias[old_row, :fan_out]
            for row, member in enumerate(joining, start=len(staying)):
                for (weight, bias), linear in zip(self.views(self.param), member.shape.linears, strict=True):
                    weight[row, : linear.out_features, : linear.in_features] = linear.weight
                    bias[row, : linear.out_features] = linear.bias
        self.layers = self.bind()
        self.keep = torch.tensor([1 - m.shape.dropout for m in members], device=self.device).view(count, 1, 1)
        self.graph: StepGraph | None = None  # captured for this layout (graph_epoch)
        self.warm_steps = 0  # steps run since this layout, before a capture
        self.input_buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.masks: dict[int, list[torch.Tensor]] = {}
        self.input_masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.buffers: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self.minus_ones = self.param.new_full((count, 1, 0), -1.0)
        self.refresh_flags()
        self.start_update()

    def start_update(self) -> None:
        """The constants the members' updates share, checked, and the schedules still in use."""
        self.schedules = {key: values for key, values in self.schedules.items() if any(
            m.schedule is values for m in self.members)}  # fmt: skip
        groups = [values.group for values in self.schedules.values()]
        if any(group.get("nesterov") or group.get("dampening") for group in groups):
            raise ValueError("a pack's SGD has neither Nesterov momentum nor dampening")
        constants = {(group.get("betas", (0, 0))[1], group.get("eps")) for group in groups}
        if len(constants) > 1:
            raise ValueError(f"the members of a pack share beta2 and eps; got {sorted(constants)}")
        self.beta2, self.eps = constants.pop()
        # SGD with momentum 0 throughout keeps no buffer, as torch's (one-cycle turns momentum on from the start)
        self.uses_momentum = self.optimizer != "sgd" or any(v.first_value() for v in self.schedules.values())
        self.table = self.param.new_empty((0,))
        self.fused_betas: list[float] | None = None

    def views(self, flat: torch.Tensor, spans: list | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (K, out, in) weights and (K, out) biases in a (K, n) tensor laid out as self.param
        (or as `spans` lay it out)."""
        count = len(flat)
        return [
            (flat[:, offset : offset + fan_out * fan_in].view(count, fan_out, fan_in),
             flat[:, offset + fan_out * fan_in : offset + fan_out * fan_in + fan_out])
            for offset, fan_out, fan_in in (self.spans if spans is None else spans)
        ]  # fmt: skip

    def bind(self) -> list[Layer]:
        return [
            Layer(weight, bias, weight_grad, bias_grad)
            for (weight, bias), (weight_grad, bias_grad) in zip(
                self.views(self.param), self.views(self.grad), strict=True
            )
        ]

    def load_coefficients(self, count: int) -> None:
        """The update's per-member coefficients for the next `count` steps, as a (steps, columns, K, 1) table.

        Computed in float64 from the values torch's optimizer would use at each of the member's own steps
        (ScheduleValues); a step then reads its row, with no host work per member. Where this torch has the
        fused Adam kernel (search/engine/fused.py checks it), a CPU pack's Adam steps are that kernel's, called
        once per group of members with the same values (KernelGroup), so each member's update is torch's own;
        elsewhere Adam's moments go through the kernel in epochs where every member has the same beta1 at
        every step (all but packs mixing one-cycle with other schedules, or one-cycle members that joined at
        other epochs)."""
        columns, rates_by_member, firsts_by_member = [], [], []
        for member in self.members:
            config, start = member.config, member.steps
            rates, firsts = member.schedule.take(start, count)
            decay = config.weight_decay
            if self.optimizer == "sgd":
                columns.append([[-lr for lr in rates], firsts, [decay] * count])
            else:
                steps = range(start + 1, start + count + 1)
                columns.append(
                    [
                        [1 - beta1 for beta1 in firsts],
                        [math.sqrt(1 - self.beta2**step) for step in steps],
                        [-lr / (1 - beta1**step) for step, lr, beta1 in zip(steps, rates, firsts, strict=True)],
                        [1 - lr * decay for lr in rates] if self.optimizer == "adamw" else [decay] * count,
                        [-lr for lr in rates],
                    ]
                )
            rates_by_member.append(rates)
            firsts_by_member.append(firsts)
        table = torch.tensor(columns, dtype=torch.float64).permute(2, 1, 0).unsqueeze(3)
        self.table = table.to(device=self.device, dtype=self.param.dtype).contiguous()
        self.step_index = 0
        shared = all(firsts == firsts_by_member[0] for firsts in firsts_by_member)
        self.fused_betas = firsts_by_member[0] if self.fused_kernel and shared else None
        # the fused kernel's steps, floats as Adam keeps them, one per member
        self.step_counts = torch.tensor([float(m.steps) for m in self.members], device=self.device)
        # one step tensor for the whole pack while its members are in step (the fused kernel then makes one
        # pass over it), else one per member's row
        self.in_step = len({m.steps for m in self.members}) == 1
        if self.group_kernel is not None:
            self.kernel_groups = self.member_groups(rates_by_member, firsts_by_member)

    def member_groups(
        self, rates_by_member: list[list[float]], firsts_by_member: list[list[float]]
    ) -> list[KernelGroup]:
        """The members grouped by the learning rates, beta1 values and weight decay of their next steps, each
        group's rows as the lists of tensors torch's fused Adam kernel takes."""
        rows_by_values: dict[tuple, list[int]] = {}
        values = zip(self.members, rates_by_member, firsts_by_member, strict=True)
        for row, (member, rates, firsts) in enumerate(values):
            rows_by_values.setdefault((tuple(rates), tuple(firsts), member.config.weight_decay), []).append(row)
        exp_avg, exp_avg_sq = self.state
        return [
            KernelGroup(
                tuple(rows),
                rates,
                firsts,
                decay,
                [[tensor[row] for row in rows] for tensor in (self.param, self.grad, exp_avg, exp_avg_sq)]
                + [[], [self.step_counts[row] for row in rows]],
            )
            for (rates, firsts, decay), rows in rows_by_values.items()
        ]

    def coefficients(self) -> tuple[torch.Tensor, ...]:
        """This step's row of the table, or of a captured step's own copy: one (K, 1) column per coefficient."""
        row = self.table[self.step_index] if self.graph is None else self.graph.coefficients
        return row.unbind(0)

    def refresh_flags(self) -> None:
        """The passes the step can skip for the members it has: dropout masks, weight decay."""
        self.dropout = any(m.shape.dropout for m in self.members)
        self.input_dropout = any(m.shape.input_dropout for m in self.members)
        self.uses_decay = any(m.config.weight_decay for m in self.members)

    @torch.no_grad()
    def evaluate(self, split: Split) -> list[Scores]:
        """Every member's mean cross-entropy and accuracy on `split`, as trainer.evaluate takes them, in one pass.

        The members share the inputs, so the first layer is one product of all their weights, stacked
        (K x out, in), with each chunk of inputs: a product wide enough to run near the BLAS's peak, where
        evaluating each model alone runs K narrow ones."""
        count, first = len(self.members), self.layers[0]
        stacked = first.weight.reshape(count * self.sizes[1], self.sizes[0])
        loss_sum = self.param.new_zeros(count)
        correct = torch.zeros(count, dtype=torch.long, device=self.device)
        low, high = EVAL_ROWS
        rows = min(max(EVAL_ACTIVATIONS // (count * max(self.sizes[1:])), low), high)
        for start in range(0, len(split), rows):
            x, labels = split.x[start : start + rows], split.y[start : start + rows]
            h = torch.mm(stacked, x.t()).view(count, self.sizes[1], len(x)).add_(first.bias.unsqueeze(2))
            for layer in self.layers[1:]:
                h = self.activate(h)
                h = torch.baddbmm(layer.bias.unsqueeze(2), layer.weight, h)
            targets = labels.expand(count, 1, len(labels))
            predicted = h.max(dim=1, keepdim=True).indices  # the first of tied maxima, as argmax; faster here
            correct += (predicted == targets).sum(dim=(1, 2))
            loss_sum -= torch.log_softmax(h, dim=1).gather(1, targets).sum(dim=(1, 2))
        size = max(len(split), 1)
        return [
            Scores(loss / size, right / size) for loss, right in zip(loss_sum.tolist(), correct.tolist(), strict=True)
        ]

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """The activation, in place where it can be."""
        if type(self.activation) is nn.Tanh:
            return tanh_(z)
        if type(self.activation) is nn.ReLU:
            return z.relu_()
        return torch.nn.functional.gelu(z, approximate=self.activation.approximate)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy every member's weights into its own model, unpadded."""
        for row, member in enumerate(self.members):
            for layer, linear in zip(self.layers, member.shape.linears, strict=True):
                linear.weight.copy_(layer.weight[row, : linear.out_features, : linear.in_features])
                linear.bias.copy_(layer.bias[row, : linear.out_features])

    def train_epoch(self, split: Split) -> list[float]:
        """One epoch of every member on its own batches: their mean training losses, as train() takes them."""
        count = math.ceil(len(split) / self.batch)
        self.load_coefficients(count)
        if self.replays_steps(split):
            totals = self.graph_epoch(split)
        else:
            losses = []
            for batch in self.batches(split):
                losses.append(self.step(*batch))
                self.step_index += 1
            totals = torch.stack(losses).sum(dim=0)
        for member in self.members:
            member.steps += count
        self.epochs_trained += 1
        return [total / count for total in totals.tolist()]

    def replays_steps(self, split: Split) -> bool:
        """Whether this epoch's full batches replay one captured step (graph_epoch): on CUDA, for a pack
        without dropout (its masks come from each member's generator, step by step) and with batches
        smaller than the split."""
        return captures_steps(self.device) and not (self.dropout or self.input_dropout) and self.batch < len(split)

    def graph_epoch(self, split: Split) -> torch.Tensor:
        """One epoch whose full batches replay one captured step: the summed training losses, (K,).

        The captured step reads everything that changes from step to step from tensors it owns: the batch's
        rows of the split (it gathers them itself), the labels and the row of update coefficients, copied
        in before each replay; Adam takes its elementwise form, whose coefficients are tensors (the fused
        kernel takes its beta1 as a number, which a graph would keep). The first steps after each layout
        run as they are, to warm up, and the partial last batch too."""
        self.fused_betas = None
        self.kernel_groups = None
        source, scale = self.input_source(split)
        total = self.param.new_zeros(len(self.members))
        if self.graph is not None:
            self.graph.total.zero_()
        for rows, labels in self.batch_rows(split):
            full = labels.shape[1] == self.batch
            if self.graph is None and full and self.warm_steps >= GRAPH_WARM_UP_STEPS:
                self.graph = StepGraph(self, source, scale, rows, labels)
            if self.graph is not None:  # it reads its own copy of the coefficients, also in a step it does not run
                self.graph.coefficients.copy_(self.table[self.step_index])
            if self.graph is not None and full:
                self.graph.run(rows, labels)
            else:
                with self.warm_up_stream():
                    total += self.step(self.gather(source, rows, labels.shape), labels, scale)
                self.warm_steps += 1
            self.step_index += 1
        return total if self.graph is None else total + self.graph.total

    def batches(self, split: Split) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """One epoch of every member's batches, stacked: (K, B, features) inputs, (K, B) labels, and the
        scale that makes the inputs the split's.

        Each member's order is drawn from its own generator exactly as trainer.batches draws it, so it
        sees the batches it would see alone. The inputs are gathered step by step into one buffer, with
        one index_select for the whole pack (gather)."""
        size, count = len(split), len(self.members)
        if self.batch >= size:
            yield split.x.expand(count, *split.x.shape), split.y.expand(count, size), 1.0
            return
        source, scale = self.input_source(split)
        for rows, labels in self.batch_rows(split):
            yield self.gather(source, rows, labels.shape), labels, scale

    def batch_rows(self, split: Split) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of every member's batches as rows of the split, (K x B,), member by member, and
        labels, (K, B); batches smaller than the split."""
        size, batch = len(split), self.batch
        device = split.x.device
        order = torch.stack([torch.randperm(size, device=device, generator=m.batch_generator) for m in self.members])
        labels = split.y[order]
        for start in range(0, size, batch):
            yield order[:, start : start + batch].reshape(-1), labels[:, start : start + batch]

    def input_source(self, split: Split) -> tuple[torch.Tensor, float]:
        """What batches are gathered from, and the scale that makes them the split's inputs: the pixel bytes
        the inputs were scaled from where there are such (pixel_bytes), a quarter of the memory to fetch
        from rows all over the split, centered as they are gathered (center_pixels), with the remaining
        1/255 taken by the first layer's products for free, where dividing would be another pass; else the
        split's inputs as they are."""
        pixels = pixel_bytes(split.x)
        return (split.x, 1.0) if pixels is None else (pixels, 1.0 / PIXEL_LEVELS)

    def gather(self, source: torch.Tensor, rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The rows of `source` as float inputs, (K, B, features), in buffers kept between steps."""
        buffers = self.input_buffers.get(len(rows))
        if buffers is None:
            x = self.param.new_empty((len(rows), source.shape[1]))
            buffers = self.input_buffers[len(rows)] = (x, source.new_empty(x.shape) if source.dtype != x.dtype else x)
        x, gathered = buffers
        torch.index_select(source, 0, rows, out=gathered)
        if gathered is not x:
            center_pixels(gathered, x)
        return x.view(*shape, -1)

    @contextlib.contextmanager
    def warm_up_stream(self) -> Iterator[None]:
        """Where the steps before a capture run: a side stream on CUDA, as torch asks of a graph's warm-up."""
        if self.device.type != "cuda":
            yield
            return
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            yield
        torch.cuda.current_stream(self.device).wait_stream(stream)

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """One step of every member k on its own batch scale * x[k], labels y[k]: their mean losses, (K,),
        detached."""
        loss = self.forward_backward(x, y, scale)
        if self.optimizer == "sgd":
            self.sgd_update()
        else:
            self.adam_update()
        return loss

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Each member's mean loss, and its gradients in self.grad: MLPStep.forward_backward, batched over K,
        on the inputs scale * x (the first layer's products scale theirs)."""
        count, batch = y.shape
        activation = self.activation
        buffers = self.activation_buffers(batch)
        if self.input_dropout:
            x = self.drop_inputs(x)
        masks = self.dropout_masks(batch) if self.dropout else None
        saved = []  # (layer input as (K, in, B), activation output (input for GELU), mask)
        h_t = x.transpose(1, 2)
        for index, (layer, (z, out, _)) in enumerate(zip(self.layers, buffers, strict=False)):
            torch.baddbmm(layer.bias.unsqueeze(2), layer.weight, h_t, alpha=1.0 if index else scale, out=z)
            layer_input = h_t
            if type(activation) is nn.Tanh:
                h_t = tanh_(z)
            elif type(activation) is nn.ReLU:
                h_t = z.relu_()
            else:
                h_t = torch.ops.aten.gelu.out(z, approximate=activation.approximate, out=out)
            mask = masks[index] if masks else None
            if mask is not None:
                h_t = torch.mul(h_t, mask, out=out)
            saved.append((layer_input, z, mask))
        last = self.layers[-1]
        first_scale = 1.0 if saved else scale  # a linear model's one layer reads the inputs
        logits_t = torch.baddbmm(last.bias.unsqueeze(2), last.weight, h_t, alpha=first_scale)  # (K, classes, B)
        log_probs_t = torch.log_softmax(logits_t, dim=1)
        targets = y.unsqueeze(1)
        loss = log_probs_t.gather(1, targets).sum(dim=2).view(count).div_(-batch)
        grad_t = log_probs_t.exp_()  # d loss / d logits = (softmax - one_hot) / batch
        grad_t.scatter_add_(1, targets, self.minus_one_rows(count, batch))
        grad_t /= batch
        weight_product(grad_t, h_t.transpose(1, 2), first_scale, last.weight_grad)
        torch.sum(grad_t, dim=2, out=last.bias_grad)
        grad = grad_t
        for index in range(len(saved) - 1, -1, -1):
            grad = torch.bmm(self.layers[index + 1].weight.transpose(1, 2), grad, out=buffers[index][2])
            layer_input, z, mask = saved[index]
            if mask is not None:
                grad.mul_(mask)
            if type(activation) is nn.Tanh:
                torch.ops.aten.tanh_backward.grad_input(grad, z, grad_input=grad)
            elif type(activation) is nn.ReLU:
                torch.ops.aten.threshold_backward.grad_input(grad, z, 0, grad_input=grad)
            else:
                torch.ops.aten.gelu_backward.grad_input(grad, z, approximate=activation.approximate, grad_input=grad)
            layer = self.layers[index]
            weight_product(grad, layer_input.transpose(1, 2), 1.0 if index else scale, layer.weight_grad)
            torch.sum(grad, dim=2, out=layer.bias_grad)
        return loss

    def activation_buffers(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each hidden layer's (K, width, B) pre-activation, output and gradient, kept between steps."""
        buffers = self.buffers.get(batch)
        if buffers is None:
            shapes = [(len(self.members), width, batch) for width in self.sizes[1:-1]]
            buffers = [(self.param.new_empty(s), self.param.new_empty(s), self.param.new_empty(s)) for s in shapes]
            self.buffers[batch] = buffers
        return buffers

    def drop_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x, (K, B, inputs), with each member's input mask applied, drawn as MLPStep draws it alone.

        A member's input mask comes before its hidden masks from its own generator, as alone it comes
        first from the global one; members without input dropout keep ones."""
        batch = x.shape[1]
        if batch not in self.input_masks:
            self.input_masks[batch] = (torch.ones_like(x), torch.empty_like(x))
        mask, dropped = self.input_masks[batch]
        for row, member in enumerate(self.members):
            keep = 1 - member.shape.input_dropout
            if keep < 1:
                mask[row].bernoulli_(keep, generator=member.dropout_generator).div_(keep)
        return torch.mul(x, mask, out=dropped)

    def dropout_masks(self, batch: int) -> list[torch.Tensor]:
        """Each hidden layer's (K, width, B) mask, member k's drawn as MLPStep draws it training alone.

        Member by member, layer by layer, a (B, width) tensor of the member's own width is drawn from its
        own generator, as MLPStep draws it from the global one, and stored transposed; then all are scaled
        at once. Members without dropout keep ones, and padded units zeros (their activations are zero)."""
        masks = self.masks.get(batch)
        if masks is None:
            masks = []
            for position, width in enumerate(self.sizes[1:-1], start=1):
                mask = self.param.new_zeros((len(self.members), width, batch))
                for row, member in enumerate(self.members):
                    mask[row, : member.shape.sizes[position]] = 1.0
                masks.append(mask)
            self.masks[batch] = masks
        for row, member in enumerate(self.members):
            rate = member.shape.dropout
            if not rate:
                continue
            for position, mask in enumerate(masks, start=1):
                width = member.shape.sizes[position]
                drawn = mask.new_empty((batch, width)).bernoulli_(1 - rate, generator=member.dropout_generator)
                mask[row, :width].copy_(drawn.t())
        for mask in masks:
            mask.div_(self.keep)
        return masks

    def minus_one_rows(self, count: int, length: int) -> torch.Tensor:
        """(K, 1, length) of -1 for subtracting the one-hot targets, kept between steps."""
        if self.minus_ones.shape[2] < length:
            self.minus_ones = self.param.new_full((count, 1, length), -1.0)
        return self.minus_ones[:, :, :length]

    def adam_update(self) -> None:
        """torch.optim.Adam's or AdamW's update for every member at once, each row with its own coefficients.

        p, g, m, v: parameters, gradients, first and second moments; t: the step; lr and beta1: this
        step's. Adam first adds decay * p to g, AdamW multiplies p by 1 - lr * decay. Then
            m = lerp(m, g, 1 - beta1)        v = beta2 v + (1 - beta2) g^2
            p -= lr * d,    d = m / (1 - beta1^t) / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        On a CPU (kernel_groups) this is torch's fused kernel itself, once per group of members with the
        same values. Elsewhere, where the members share beta1, the kernel computes m, v and d in one pass
        over the whole pack: the update it makes with a learning rate of -1 to a tensor of zeros is d. Else
        it takes six passes of elementwise ops, each member's coefficients a (K, 1) column; either way each
        member then takes its own learning rate's step along d.
        """
        beta2, eps = self.beta2, self.eps
        if self.kernel_groups is not None:
            self.step_counts += 1
            for group in self.kernel_groups:
                self.group_kernel(
                    *group.tensors,
                    amsgrad=False,
                    lr=group.rates[self.step_index],
                    beta1=group.firsts[self.step_index],
                    beta2=beta2,
                    weight_decay=group.decay,
                    eps=eps,
                    maximize=False,
                    grad_scale=None,
                    found_inf=None,
                )
            return
        exp_avg_weight, bias2_root, minus_step, decay, minus_lr = self.coefficients()
        param, grad, direction = self.param, self.grad, self.scratch
        exp_avg, exp_avg_sq = self.state
        if self.uses_decay:
            if self.optimizer == "adamw":
                param.mul_(decay)
            else:
                grad.addcmul_(param, decay)
        if self.fused_betas is not None:
            direction.zero_()
            self.step_counts += 1
            if self.in_step:
                tensors = [[direction], [grad], [exp_avg], [exp_avg_sq], [], [self.step_counts[0]]]
            else:
                tensors = [list(t.unbind()) for t in (direction, grad, exp_avg, exp_avg_sq)]
                tensors += [[], list(self.step_counts.unbind())]
            torch._fused_adam_(
                *tensors,
                amsgrad=False,
                lr=-1.0,
                beta1=self.fused_betas[self.step_index],
                beta2=beta2,
                weight_decay=0.0,
                eps=eps,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
            param.addcmul_(direction, minus_lr)
            return
        exp_avg.lerp_(grad, exp_avg_weight)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch.sqrt(exp_avg_sq, out=direction).div_(bias2_root).add_(eps)
        torch.div(exp_avg, direction, out=direction)
        param.addcmul_(direction, minus_step)

    def sgd_update(self) -> None:
        """torch.optim.SGD's update (without dampening or Nesterov momentum) for every member at once.

        g += decay * p; the momentum buffer b starts as g, then b = momentum * b + g; p -= lr * b."""
        minus_lr, momentum, decay = self.coefficients()
        param, grad = self.param, self.grad
        if self.uses_decay:
            grad.addcmul_(param, decay)
        if not self.uses_momentum:
            param.addcmul_(grad, minus_lr)
            return
        (buffer,) = self.state  # zero until a member's first step, where b = g + momentum * 0 = g, as torch starts it
        torch.addcmul(grad, buffer, momentum, out=buffer)
        param.addcmul_(buffer, minus_lr)


# Measuring stops at the first doubling that makes a member's step less than this much cheaper, and the
# smallest pack within NEAR_FASTEST of the fastest measured is taken: a trial in a pack waits for the pack,
# and a smaller pack holds less memory and, in a search, fewer trials whose results the sampler has not seen.
DOUBLING_GAIN = 0.05
NEAR_FASTEST = 0.1
SIZING_ROUNDS = 3  # timed rounds of steps for each size, the fastest taken,
SIZING_SECONDS = 0.05  # each at least this long
SIZING_STEPS = (3, 1000)  # and at least this many steps; all rounds and the warm-up within the second number
WARM_UP_SECONDS = 0.05
WARM_UP_STEPS = 2


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

    def __init__(self, step: Callable[[], object], steps: int, device: torch.device):
        self.step, self.steps, self.device, self.taken = step, steps, device, 0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def round(self) -> float:
        """Seconds per step of a round of at least SIZING_SECONDS and SIZING_STEPS[0] steps (inf once the
        epoch's steps are used up); before the first, WARM_UP_SECONDS and WARM_UP_STEPS of steps."""
        if self.taken == 0:
            started = time.perf_counter()
            while self.taken < self.steps - 1 and (
                self.taken < WARM_UP_STEPS or time.perf_counter() - started < WARM_UP_SECONDS
            ):
                self.step()
                self.taken += 1
            self.sync()
        started, timed = time.perf_counter(), 0
        while self.taken < self.steps and (timed < SIZING_STEPS[0] or time.perf_counter() - started < SIZING_SECONDS):
            self.step()
            self.taken, timed = self.taken + 1, timed + 1
            if timed % 4 == 0:
                self.sync()
        self.sync()
        return (time.perf_counter() - started) / timed if timed else math.inf


def copies_pack(model: nn.Module, config: TrainConfig, train_split: Split, size: int) -> Pack:
    """A pack of `size` copies of `model`, member k with seed config.seed + k, its update coefficients loaded
    for the steps a timing may take."""
    configs = [dataclasses.replace(config, seed=config.seed + index) for index in range(size)]
    pack = Pack.build([copy.deepcopy(model) for _ in configs], configs, train_split)
    pack.load_coefficients(min(pack.steps_per_epoch, SIZING_STEPS[1]))
    return pack


def pack_step_timer(model: nn.Module, config: TrainConfig, train_split: Split, size: int) -> StepTimer:
    """The packed step of `size` copies of `model` (copies_pack), on their own batches of `train_split`."""
    pack = copies_pack(model, config, train_split, size)
    steps = min(pack.steps_per_epoch, SIZING_STEPS[1])
    batches = pack.batches(train_split)

    def step() -> None:
        pack.step(*next(batches))
        pack.step_index += 1

    return StepTimer(step, steps, train_split.x.device)


def alone_step_timer(model: nn.Module, config: TrainConfig, train_split: Split) -> StepTimer:
    """The step trainer.train takes for a copy of `model` alone, on its batches of `train_split`."""
    from search.engine.trainer import batches, make_step

    device = train_split.x.device
    step, _, batch = make_step(copy.deepcopy(model), train_split, config)
    loader = iter(batches(train_split, batch, torch.Generator(device=device).manual_seed(config.seed)))
    steps = min(math.ceil(len(train_split) / batch), SIZING_STEPS[1])
    return StepTimer(lambda: step(*next(loader)), steps, device)
