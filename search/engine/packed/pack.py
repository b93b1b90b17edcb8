"""The Pack: the members' parameters, gradients and optimizer state as (K, n) tensors, and their epochs."""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Iterator, Sequence

import torch
from torch import nn

from search.engine.config import TrainConfig
from search.engine.data import Split
from search.engine.fused import ADAM_ARGUMENTS, kernel_takes
from search.engine.packed import graphs
from search.engine.packed.graphs import PackGraphs, StepGraph
from search.engine.packed.inputs import PIXEL_LEVELS, center_pixels, pixel_bytes
from search.engine.packed.layout import Entrant, Layer, Member, MemberShape, check_pack, dropout_generator, schedule_key
from search.engine.packed.step import PackStep
from search.engine.packed.update import KernelGroup, PackUpdate, ScheduleValues, kernel_per_member_group
from search.engine.trainer import Scores, TrainResult, tanh_

# Rows per chunk of a packed evaluation: about this many activations of its widest layer (8 MB) with K
# members, within these bounds: fewer rows make the first layer's product less efficient, more spill the cache.
EVAL_ACTIVATIONS = 1 << 21
EVAL_ROWS = (256, 2048)


class Pack(PackStep, PackUpdate, PackGraphs):
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
        self.side_stream: torch.cuda.Stream | None = None  # made at the first warm-up step on CUDA

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
        elementwise = self.group_kernel is None or graphs.captures_steps(self.device)  # Adam's elementwise form may run
        self.scratch = torch.empty_like(self.param) if self.optimizer != "sgd" and elementwise else None
        with torch.no_grad():
            if staying:
                self.copy_staying(staying, old_spans, old_tensors)
            for row, member in enumerate(joining, start=len(staying)):
                for (weight, bias), linear in zip(self.views(self.param), member.shape.linears, strict=True):
                    weight[row, : linear.out_features, : linear.in_features] = linear.weight
                    bias[row, : linear.out_features] = linear.bias
        self.layers = self.bind()
        self.shape_groups = shape_groups(members, self.device)
        self.keep = torch.tensor([1 - m.shape.dropout for m in members], device=self.device).view(count, 1, 1)
        self.graph: StepGraph | None = None  # captured for this layout (graph_steps)
        self.warm_steps = 0  # steps run since this layout, before a capture
        self.input_buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.masks: dict[int, list[torch.Tensor]] = {}
        self.input_masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.buffers: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self.minus_ones = self.param.new_full((count, 1, 0), -1.0)
        self.refresh_flags()
        self.start_update()

    def copy_staying(
        self, staying: list[tuple[int, Member]], old_spans: list[tuple[int, int, int]], old_tensors: list[torch.Tensor]
    ) -> None:
        """The staying members' rows of the old parameters and optimizer state into the first rows of the
        new ones: per tensor one gather of their rows, and per layer one copy of the block both layouts hold
        (each member's own units lie within it), its units beyond the member's own zeroed."""
        old_rows = torch.tensor([old_row for old_row, _ in staying], device=self.device)
        kept = len(staying)
        sizes = torch.tensor([member.shape.sizes for _, member in staying], device=self.device)  # (kept, layers + 1)
        for new, old in zip((self.param, *self.state), old_tensors, strict=True):
            taken = old.index_select(0, old_rows)
            for layer, ((weight, bias), (old_weight, old_bias)) in enumerate(
                zip(self.views(new), self.views(taken, old_spans), strict=True)
            ):
                fan_out, fan_in = min(weight.shape[1], old_weight.shape[1]), min(weight.shape[2], old_weight.shape[2])
                outs = torch.arange(fan_out, device=self.device) < sizes[:, layer + 1 : layer + 2]  # (kept, out)
                ins = torch.arange(fan_in, device=self.device) < sizes[:, layer : layer + 1]  # (kept, in)
                own = outs.unsqueeze(2) & ins.unsqueeze(1)
                weight[:kept, :fan_out, :fan_in] = torch.where(own, old_weight[:, :fan_out, :fan_in], 0.0)
                bias[:kept, :fan_out] = torch.where(outs, old_bias[:, :fan_out], 0.0)

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

    def refresh_flags(self) -> None:
        """The passes the step can skip for the members it has: dropout masks, weight decay."""
        self.dropout = any(m.shape.dropout for m in self.members)
        self.input_dropout = any(m.shape.input_dropout for m in self.members)
        self.uses_decay = any(m.config.weight_decay for m in self.members)

    @torch.no_grad()
    def evaluate(self, split: Split, positions: Sequence[int] | None = None) -> list[Scores]:
        """Every member's (or those at `positions`') mean cross-entropy and accuracy on `split`, as
        trainer.evaluate takes them, in one pass, read back from the device at once.

        The members share the inputs, so the first layer is one product of all their weights, stacked
        (K x out, in), with each chunk of inputs: a product wide enough to run near the BLAS's peak, where
        evaluating each model alone runs K narrow ones."""
        weights = [layer.weight for layer in self.layers]
        biases = [layer.bias for layer in self.layers]
        if positions is not None:
            chosen = torch.tensor(list(positions), device=self.device)
            weights = [weight.index_select(0, chosen) for weight in weights]
            biases = [bias.index_select(0, chosen) for bias in biases]
        count = len(weights[0])
        stacked = weights[0].reshape(count * self.sizes[1], self.sizes[0])
        loss_sum = self.param.new_zeros(count)
        correct = torch.zeros(count, dtype=torch.long, device=self.device)
        low, high = EVAL_ROWS
        rows = min(max(EVAL_ACTIVATIONS // (count * max(self.sizes[1:])), low), high)
        for start in range(0, len(split), rows):
            x, labels = split.x[start : start + rows], split.y[start : start + rows]
            h = torch.mm(stacked, x.t()).view(count, self.sizes[1], len(x)).add_(biases[0].unsqueeze(2))
            for weight, bias in zip(weights[1:], biases[1:], strict=True):
                h = self.activate(h)
                h = torch.baddbmm(bias.unsqueeze(2), weight, h)
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
        """Copy every member's weights into its own model, unpadded: per group of members of one shape and
        per layer, one gather of their rows and one copy into all of their models (copy_all)."""
        for rows, members in self.shape_groups:
            sizes = members[0].shape.sizes
            for index, layer in enumerate(self.layers):
                fan_in, fan_out = sizes[index], sizes[index + 1]
                weights = layer.weight.index_select(0, rows)[:, :fan_out, :fan_in].contiguous()
                biases = layer.bias.index_select(0, rows)[:, :fan_out].contiguous()
                linears = [member.shape.linears[index] for member in members]
                copy_all(
                    [t for linear in linears for t in (linear.weight, linear.bias)],
                    [t for pair in zip(weights.unbind(0), biases.unbind(0), strict=True) for t in pair],
                )

    def train_epoch(self, split: Split) -> list[float]:
        """One epoch of every member on its own batches: their mean training losses, as train() takes them."""
        count = math.ceil(len(split) / self.batch)
        steps = self.epoch_steps(split)
        while True:
            try:
                next(steps)
            except StopIteration as end:
                totals = end.value
                break
        for member in self.members:
            member.steps += count
        self.epochs_trained += 1
        return [total / count for total in totals.tolist()]

    def epoch_steps(self, split: Split) -> Generator[None, None, torch.Tensor]:
        """One epoch's steps as training runs them (replayed as a graph where replays_steps), yielding after
        each: returns the summed training losses, (K,). fitting_pack_size times these very steps."""
        self.load_coefficients(math.ceil(len(split) / self.batch))
        if self.replays_steps(split):
            return (yield from self.graph_steps(split))
        losses = []
        for batch in self.batches(split):
            losses.append(self.step(*batch))
            self.step_index += 1
            yield
        return torch.stack(losses).sum(dim=0)

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


def shape_groups(members: Sequence[Member], device: torch.device) -> list[tuple[torch.Tensor, list[Member]]]:
    """The members grouped by their sizes, each group's rows of the pack as an index tensor (write_back)."""
    grouped: dict[tuple[int, ...], list[int]] = {}
    for row, member in enumerate(members):
        grouped.setdefault(tuple(member.shape.sizes), []).append(row)
    return [(torch.tensor(rows, device=device), [members[row] for row in rows]) for rows in grouped.values()]


def copy_all(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """targets[i].copy_(sources[i]) for every i: in one call of torch._foreach_copy_ where this torch has it
    (on CUDA one launch for tensors of one shape), else one copy each."""
    foreach = getattr(torch, "_foreach_copy_", None)  # private: looked up, with the public copy as the fallback
    if foreach is not None:
        foreach(targets, sources)
        return
    for target, source in zip(targets, sources, strict=True):
        target.copy_(source)
