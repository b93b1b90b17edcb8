"""The Pack: the members' parameters, gradients and optimizer state as (K, n) tensors, and their epochs."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

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
