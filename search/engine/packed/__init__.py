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

On CUDA a pack captures its step, the batch's gather included, as a CUDA graph once per layout and replays
it for every full batch (StepGraph): one launch per step instead of dozens of tiny ones. A pack with dropout
registers each member's own generator with the graph, so its masks are still the ones it would draw alone.

Modules: layout (the members and what they share), inputs (pixel bytes), step (forward and backward), update
(the optimizers' steps), graphs (CUDA graphs), pack (the Pack), train (train_pack), sizing (`--pack auto`).
"""

from search.engine.packed.graphs import GRAPH_WARM_UP_STEPS, CudaGraph, StepGraph, captures_steps, new_graph
from search.engine.packed.inputs import PIXEL_LEVELS, PIXEL_OFFSET, center_pixels, pixel_bytes, scale_pixels
from search.engine.packed.layout import (
    ACTIVATIONS,
    SHARED_SETTINGS,
    Entrant,
    Layer,
    Member,
    MemberShape,
    check_pack,
    default_generator_state,
    dropout_generator,
    schedule_key,
)
from search.engine.packed.pack import EVAL_ACTIVATIONS, EVAL_ROWS, Pack
from search.engine.packed.sizing import (
    DOUBLING_GAIN,
    NEAR_FASTEST,
    SIZING_ROUNDS,
    SIZING_SECONDS,
    SIZING_STEPS,
    WARM_UP_SECONDS,
    WARM_UP_STEPS,
    PackTimings,
    StepTimer,
    alone_step_timer,
    copies_pack,
    fitting_pack_size,
    pack_step_timer,
)
from search.engine.packed.step import weight_product
from search.engine.packed.train import OnPackEnd, OnPackEpoch, Refill, check_finite, final_scores, train_pack
from search.engine.packed.update import KernelGroup, ScheduleValues, kernel_per_member_group

__all__ = [
    "ACTIVATIONS",
    "DOUBLING_GAIN",
    "EVAL_ACTIVATIONS",
    "EVAL_ROWS",
    "GRAPH_WARM_UP_STEPS",
    "NEAR_FASTEST",
    "PIXEL_LEVELS",
    "PIXEL_OFFSET",
    "SHARED_SETTINGS",
    "SIZING_ROUNDS",
    "SIZING_SECONDS",
    "SIZING_STEPS",
    "WARM_UP_SECONDS",
    "WARM_UP_STEPS",
    "CudaGraph",
    "Entrant",
    "KernelGroup",
    "Layer",
    "Member",
    "MemberShape",
    "OnPackEnd",
    "OnPackEpoch",
    "Pack",
    "PackTimings",
    "Refill",
    "ScheduleValues",
    "StepGraph",
    "StepTimer",
    "alone_step_timer",
    "captures_steps",
    "center_pixels",
    "check_finite",
    "check_pack",
    "copies_pack",
    "default_generator_state",
    "dropout_generator",
    "final_scores",
    "fitting_pack_size",
    "kernel_per_member_group",
    "new_graph",
    "pack_step_timer",
    "pixel_bytes",
    "scale_pixels",
    "schedule_key",
    "train_pack",
    "weight_product",
]
