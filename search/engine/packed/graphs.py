"""A pack's step captured as a CUDA graph once per layout and replayed for every full batch (StepGraph)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING

import torch

from search.engine.data import Split

if TYPE_CHECKING:
    from search.engine.packed.pack import Pack

GRAPH_WARM_UP_STEPS = 3  # steps run as they are after each layout before the step is captured


def captures_steps(device: torch.device) -> bool:
    """Whether a pack replays a captured step (Pack.graph_steps): on CUDA, where a step of a small pack
    is dozens of launches of microseconds each, and one graph replay launches them all at once."""
    return device.type == "cuda"


class StepGraph:
    """A pack's training step, captured once as a CUDA graph with tensors of its own for what each step
    reads anew (its rows, labels and update coefficients) and replayed for each full batch of a layout.

    Replaying it is one launch for the step's gather, products, loss, gradients and update; the losses add
    up into a (K,) total on the device, which Pack.graph_steps zeroes at each epoch's start. The graph
    gathers from `source` at the address it had at capture, so it holds `source` (kept alive) and replays
    only on it. Each member that draws dropout masks has its generator registered with the graph: a replay
    draws from it where the step itself would, and moves it on as the step would, so its masks stay those
    it would draw alone. A capture that fails leaves the pack without a graph."""

    def __init__(self, pack: Pack, source: torch.Tensor, scale: float, rows: torch.Tensor, labels: torch.Tensor):
        self.source = source
        self.rows = rows.clone()
        self.labels = labels.clone()
        self.coefficients = pack.table[pack.step_index].clone()
        self.total = pack.param.new_zeros(len(pack.members))
        self.graph = new_graph(pack.device)
        for member in pack.members:
            if member.shape.dropout or member.shape.input_dropout:
                self.graph.register_generator(member.dropout_generator)

        def step() -> None:
            x = pack.gather(source, self.rows, self.labels.shape)
            self.total += pack.step(x, self.labels, scale)

        pack.graph = self  # the step reads its coefficients from here from now on
        try:
            self.graph.capture(step)
        except BaseException:
            pack.graph = None
            raise

    def run(self, source: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor) -> None:
        """One step on these rows of `source` and labels (the caller copies this step's coefficients in
        first); its losses are added to `total`. RuntimeError for another source than the captured one."""
        if source is not self.source:
            raise RuntimeError("a captured step replays only on the inputs it gathered from at its capture")
        self.rows.copy_(rows)
        self.labels.copy_(labels)
        self.graph.replay()


class CudaGraph:
    """torch.cuda.CUDAGraph behind the three calls StepGraph makes."""

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    def register_generator(self, generator: torch.Generator) -> None:
        self.graph.register_generator_state(generator)

    def capture(self, step: Callable[[], None]) -> None:
        with torch.cuda.graph(self.graph):
            step()

    def replay(self) -> None:
        self.graph.replay()


def new_graph(device: torch.device) -> CudaGraph:
    """A graph to capture a step on `device` (CUDA): one place for the tests' CPU stand-in to take."""
    return CudaGraph()


def graphs_take_generators() -> bool:
    """Whether this torch's CUDA graphs take generators of one's own (CUDAGraph.register_generator_state),
    which a pack with dropout needs for its members' own masks; without it such a pack runs as it is."""
    return hasattr(torch.cuda.CUDAGraph, "register_generator_state")


class PackGraphs:
    """Pack's epochs of replayed steps (mixed into Pack), and its one side stream on CUDA."""

    def replays_steps(self, split: Split) -> bool:
        """Whether this epoch's full batches replay one captured step (graph_steps): on CUDA, with batches
        smaller than the split, and for a pack with dropout where graphs take the members' generators."""
        drops = self.dropout or self.input_dropout
        return captures_steps(self.device) and self.batch < len(split) and (not drops or graphs_take_generators())

    def graph_steps(self, split: Split) -> Generator[None, None, torch.Tensor]:
        """One epoch whose full batches replay one captured step, yielding after each step: returns the
        summed training losses, (K,).

        The captured step reads everything that changes from step to step from tensors it owns: the batch's
        rows of the split (it gathers them itself), the labels and the row of update coefficients, copied
        in before each replay; Adam takes its elementwise form, whose coefficients are tensors (the fused
        kernel takes its beta1 as a number, which a graph would keep). The first steps after each layout
        run as they are, to warm up, and the partial last batch too. A graph captured on other inputs (the
        pack trains on another split) is captured again."""
        self.fused_betas = None
        self.kernel_groups = None
        source, scale = self.input_source(split)
        if self.graph is not None and self.graph.source is not source:
            self.graph, self.warm_steps = None, 0
        total = self.param.new_zeros(len(self.members))
        if self.graph is not None:
            self.graph.total.zero_()
        for rows, labels in self.batch_rows(split):
            full = labels.shape[1] == self.batch
            if self.graph is None and full and self.warm_steps >= GRAPH_WARM_UP_STEPS:
                StepGraph(self, source, scale, rows, labels)  # sets self.graph
            if self.graph is not None:  # it reads its own copy of the coefficients, also in a step it does not run
                self.graph.coefficients.copy_(self.table[self.step_index])
            if self.graph is not None and full:
                self.graph.run(source, rows, labels)
            else:
                with self.warm_up_stream():
                    total += self.step(self.gather(source, rows, labels.shape), labels, scale)
                self.warm_steps += 1
            self.step_index += 1
            yield
        return total if self.graph is None else total + self.graph.total

    @contextlib.contextmanager
    def warm_up_stream(self) -> Iterator[None]:
        """Where the steps before a capture run: the pack's one side stream on CUDA, as torch asks of a
        graph's warm-up (made once: a stream is a driver object, not a buffer)."""
        if self.device.type != "cuda":
            yield
            return
        if self.side_stream is None:
            self.side_stream = torch.cuda.Stream(self.device)
        stream = self.side_stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            yield
        torch.cuda.current_stream(self.device).wait_stream(stream)
