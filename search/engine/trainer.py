"""Training on device-resident tensors: no DataLoader, no host sync inside the step loop.

The MLPs searched here are small, so on a CPU a step costs little more than its matmuls only when the
Python and allocation overhead around them is cut: bench/train_speed.py measures the whole trainer, and
bench/design_choices.py each choice below against its alternative. Two helpers do the rest:
search/engine/fused.py calls the optimizer's fused kernel without Optimizer.step's Python, and
search/engine/sparse_rows.py lets a full-batch CPU step skip the inputs' background pixels.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from models.mlp import split_input_dropout
from search.engine.config import DEFAULT_DEVICE, TrainConfig
from search.engine.data import Split
from search.engine.denormals import denormals_flushed
from search.engine.fused import fused_update
from search.engine.sparse_rows import FirstLayer, SparseRows
from search.errors import UsageError, worded

EVAL_BATCH = 16_384
SPLIT_BATCH = 8_192  # batches from this size on split their weight-gradient products by thread

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Diverged(RuntimeError):
    """Training produced a NaN or infinite loss."""

    def __init__(self, epoch: int, loss: float):
        super().__init__(f"training diverged at epoch {epoch}: loss became {loss}")
        self.epoch = epoch
        self.loss = loss


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float


@dataclass
class Scores:
    loss: float
    accuracy: float


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    train: Scores | None = None
    validation: Scores | None = None
    test: Scores | None = None
    seconds: float = 0.0
    device: str = "cpu"


def resolve_device(name: str, worker: int = 0) -> torch.device:
    """`auto` is CUDA where present, else the CPU; asking for CUDA where there is none is bad input.

    On CUDA, worker k of a run's processes (its --worker-index) trains on visible GPU k mod their number, so
    workers spread over a machine's GPUs instead of all landing on the first; one GPU, or worker 0, keeps
    torch's current device."""
    if name == DEFAULT_DEVICE:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        asked, instead = (
            worded(cli="--device cuda", api="device='cuda'"),
            worded(cli="--device cpu", api="device='cpu'"),
        )
        raise UsageError(f"{asked}: torch finds no usable CUDA device here; use {instead} (or auto)")
    if name == "cuda":
        index = worker % torch.cuda.device_count()
        return torch.device("cuda", index) if index else torch.device("cuda")
    return torch.device(name)


def tanh_(z: torch.Tensor) -> torch.Tensor:
    """tanh of z, in place, as 2 sigmoid(2z) - 1.

    torch's CPU tanh is several times slower than its sigmoid on some CPUs (bench/design_choices.py times
    both); four cheap passes beat one slow one. The result differs from torch.tanh by float rounding: at
    most a few units in the last place of 1, so about 1e-7 absolute."""
    if z.device.type != "cpu":
        return z.tanh_()
    return z.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


def make_optimizer(parameters: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Fused kernels where the device has them: one launch per step instead of one per tensor."""
    params = list(parameters)
    fused = {"fused": True}
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, **fused
        )
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay, **fused)


def make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """None for a constant rate, so the step loop skips the scheduler entirely."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    return None


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> Scores:
    """Mean cross-entropy and accuracy, in large chunks, one host sync at the end."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for start in range(0, len(split), EVAL_BATCH):
        logits = model(split.x[start : start + EVAL_BATCH])
        labels = split.y[start : start + EVAL_BATCH]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
    model.train(was_training)
    count = max(len(split), 1)
    return Scores(loss_sum.item() / count, correct.item() / count)


def autograd_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Step:
    """The general step, for any model: returns the detached loss so the caller never syncs."""
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        for p in params:  # what zero_grad(set_to_none=True) does, without its per-call bookkeeping
            p.grad = None
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


class MLPStep:
    """Forward and backward of a [Dropout] Linear/activation(/dropout) stack written out, as build_mlp makes it.

    Autograd dispatches about twice the ops a step needs (views, graph nodes, fresh gradient tensors);
    at these sizes that overhead is a large share of a CPU step. Here the gradients go into buffers that
    live across steps, tanh and ReLU run in place, the first layer's input gradient is never formed, and
    the loss works on logits with classes as rows: on CPU, log-softmax runs along a batch-wide first
    dimension much better than along a 10-wide last one (bench/design_choices.py measures it). Results
    match autograd's up to float rounding (with dropout, for the same masks: drawn as nn.Dropout would,
    from torch's global generator).
    """

    def __init__(
        self,
        linears: list[nn.Linear],
        activations: list[nn.Module],
        dropout: float,
        optimizer: torch.optim.Optimizer,
        input_dropout: float = 0.0,
    ):
        """Gradients are written into each parameter's `.grad`, which must already exist (flatten_parameters)."""
        self.hidden = [
            (linear, linear.weight.t(), activation)
            for linear, activation in zip(linears[:-1], activations, strict=True)
        ]
        self.first = linears[0]
        self.last = linears[-1]
        self.last_bias_column = self.last.bias.unsqueeze(1)
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.optimizer = optimizer
        self.update = fused_update(optimizer)
        self.minus_ones = self.last.weight.new_full((1, 0), -1.0)

    @classmethod
    def build(cls, model: nn.Module, config: TrainConfig) -> MLPStep | None:
        """The step and its optimizer, over the model's parameters flattened into one tensor.

        None unless `model` is exactly [Dropout] Linear (activation [Dropout] Linear)*, with biases, all
        trainable and hook-free: anything else trains through autograd_step."""
        if type(model) is not nn.Sequential:
            return None
        input_dropout, modules = split_input_dropout(list(model))
        dropouts = [m for m in modules if type(m) is nn.Dropout]
        rates = {m.p for m in dropouts}
        core = [m for m in modules if type(m) is not nn.Dropout]
        linears, activations = core[0::2], core[1::2]
        if len(core) % 2 == 0 or len(rates) > 1 or (dropouts and len(dropouts) != len(activations)):
            return None
        if dropouts and any(type(a) is not nn.Dropout for a in modules[2::3]):
            return None  # dropout sits right after each activation, as build_mlp puts it
        if any(type(m) is not nn.Linear or m.bias is None for m in linears):
            return None
        if any(type(m) not in (nn.Tanh, nn.ReLU, nn.GELU) for m in activations):
            return None
        hooks = ((m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks) for m in model)
        if any(any(kinds) for kinds in hooks) or model._forward_hooks or model._forward_pre_hooks:
            return None
        if not all(p.requires_grad for p in model.parameters()):
            return None
        optimizer = make_optimizer([flatten_parameters(model)], config)
        return cls(linears, activations, rates.pop() if rates else 0.0, optimizer, input_dropout)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on the batch x: the mean loss, detached."""
        loss = self.forward_backward(x, None, y, len(y))
        self.update()
        return loss

    @torch.no_grad()
    def full_batch(self, sparse: SparseRows, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on all of x, held as `sparse`, chunk by chunk; without dropout (its masks would differ)."""
        first = sparse.step_view(self.first)
        (flat,) = self.optimizer.param_groups[0]["params"]  # every gradient is a view into flat.grad
        flat.grad.zero_()
        loss = x.new_zeros(())
        for chunk in sparse.chunks:
            first.chunk = chunk
            loss += self.forward_backward(None, first, y[chunk.start : chunk.stop], len(y))
        first.finish()
        self.update()
        return loss

    def forward_backward(
        self, x: torch.Tensor | None, first: FirstLayer | None, y: torch.Tensor, count: int
    ) -> torch.Tensor:
        """Gradients of the loss summed over y's rows / count: written for a batch x, added for a chunk of `first`."""
        accumulate = first is not None
        saved: list[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]] = []  # (input, activation, mask)
        if self.input_dropout:  # the first layer's input gradient is never formed, so the mask is not kept
            x = x * torch.empty_like(x).bernoulli_(1 - self.input_dropout).div_(1 - self.input_dropout)
        h = x
        for linear, weight_t, activation in self.hidden:
            z = first.project() if h is None else torch.addmm(linear.bias, h, weight_t)
            layer_input = h
            if type(activation) is nn.Tanh:
                h = tanh_(z)
            elif type(activation) is nn.ReLU:
                h = z.relu_()
            else:
                h = F.gelu(z, approximate=activation.approximate)
            mask = None
            if self.dropout:
                mask = torch.empty_like(h).bernoulli_(1 - self.dropout).div_(1 - self.dropout)
                h = h * mask
            saved.append((layer_input, z, mask))
        logits_t = first.project().t() if h is None else torch.addmm(self.last_bias_column, self.last.weight, h.t())
        log_probs_t = torch.log_softmax(logits_t, dim=0)  # a contiguous (classes, batch) result
        if accumulate:
            loss = F.nll_loss(log_probs_t.t(), y, reduction="sum").div_(count)
        else:
            loss = F.nll_loss(log_probs_t.t(), y)
        grad_t = log_probs_t.exp_()  # d loss / d logits = (softmax - one_hot) / count
        grad_t.scatter_add_(0, y.unsqueeze(0), self.minus_one_row(len(y)))
        grad_t /= count
        layer_grad(grad_t, h, self.last, accumulate, first)
        grad = grad_t.t().mm(self.last.weight) if saved else grad_t
        for index in range(len(saved) - 1, -1, -1):
            linear, _, activation = self.hidden[index]
            layer_input, z, mask = saved[index]
            if mask is not None:
                grad.mul_(mask)
            if type(activation) is nn.Tanh:
                grad = torch.ops.aten.tanh_backward.default(grad, z)
            elif type(activation) is nn.ReLU:
                grad = torch.ops.aten.threshold_backward.default(grad, z, 0)
            else:
                grad = torch.ops.aten.gelu_backward.default(grad, z, approximate=activation.approximate)
            layer_grad(grad.t(), layer_input, linear, accumulate, first)
            if index:
                grad = grad.mm(linear.weight)
        return loss

    def minus_one_row(self, length: int) -> torch.Tensor:
        """A (1, length) row of -1 for subtracting the one-hot targets, kept between steps."""
        if self.minus_ones.shape[1] < length:
            self.minus_ones = self.minus_ones.new_full((1, length), -1.0)
        return self.minus_ones[:, :length]


def layer_grad(
    grad_t: torch.Tensor, inputs: torch.Tensor | None, linear: nn.Linear, accumulate: bool, first: FirstLayer | None
) -> None:
    """A layer's weight and bias gradients from grad_t, (outputs, rows): written, or added to (chunks).

    `inputs` None means the rows of the sparse first layer, whose weight gradient `first` gathers."""
    if not accumulate:
        weight_grad(grad_t, inputs, linear.weight.grad)
        torch.sum(grad_t, dim=1, out=linear.bias.grad)
        return
    if inputs is None:
        first.add_weight_grad(grad_t.t())
    else:
        linear.weight.grad.addmm_(grad_t, inputs)
    linear.bias.grad += grad_t.sum(dim=1)


def flatten_parameters(model: nn.Module) -> nn.Parameter:
    """All of the model's parameters, and gradient buffers for them, as views into one flat tensor each.

    The optimizer then updates one tensor per step instead of one per layer's weight and bias: its
    per-tensor bookkeeping costs the same at any batch size, so it weighs most on small batches' short
    steps (bench/design_choices.py measures it). Adam, AdamW and SGD act element by element, so the
    result is the same to the bit."""
    params = list(model.parameters())
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for param in params:
        size = param.numel()
        param.data = flat.data[offset : offset + size].view_as(param)
        param.grad = flat.grad[offset : offset + size].view_as(param)
        offset += size
    return flat


def weight_grad(grad_t: torch.Tensor, inputs: torch.Tensor, out: torch.Tensor) -> None:
    """out = grad_t @ inputs, a sum over the batch.

    When the batch dwarfs the output (full-batch steps), a CPU BLAS runs this product on one thread, bound
    by how fast one core streams the inputs; split the batch into one slice per thread as a batched
    product and add the slices, so every thread streams its share (bench/design_choices.py measures it).
    """
    batch, parts = inputs.shape[0], torch.get_num_threads()
    if inputs.device.type != "cpu" or parts < 2 or batch < SPLIT_BATCH:
        torch.mm(grad_t, inputs, out=out)
        return
    size = batch // parts
    end = size * parts
    slices = torch.bmm(
        grad_t[:, :end].reshape(len(grad_t), parts, size).transpose(0, 1), inputs[:end].reshape(parts, size, -1)
    )
    torch.sum(slices, dim=0, out=out)
    if end < batch:
        out.addmm_(grad_t[:, end:], inputs[end:])


def batches(split: Split, batch: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches, or the whole split when the batch is full.

    On CPU each batch of inputs is gathered just before its step: it is still in cache when the first layer
    reads it, and no 190 MB shuffled copy is allocated and faulted in every epoch. The labels are small, so
    they are shuffled once per epoch and sliced. On a GPU one gather per epoch is one kernel instead of one
    per step.
    """
    size = len(split)
    if batch >= size:
        yield split.x, split.y
        return
    order = torch.randperm(size, device=split.x.device, generator=generator)
    ys = split.y.index_select(0, order)
    if split.x.device.type == "cpu":
        for start in range(0, size, batch):
            yield split.x.index_select(0, order[start : start + batch]), ys[start : start + batch]
        return
    xs = split.x.index_select(0, order)
    for start in range(0, size, batch):
        yield xs[start : start + batch], ys[start : start + batch]


def make_step(model: nn.Module, train_split: Split, config: TrainConfig) -> tuple[Step, torch.optim.Optimizer, int]:
    """The step train() takes for this model (moved to the split's device), its optimizer, and its batch size."""
    model.to(train_split.x.device).train()
    size = len(train_split)
    batch = size if config.batch_size in (0, None) or config.batch_size >= size else config.batch_size
    fast = MLPStep.build(model, config)
    optimizer = fast.optimizer if fast else make_optimizer(model.parameters(), config)
    step = fast or autograd_step(model, optimizer)
    if fast is not None and batch == size and not (fast.dropout or fast.input_dropout):
        sparse = SparseRows.of(train_split.x)
        if sparse is not None:
            step = functools.partial(fast.full_batch, sparse)
    return step, optimizer, batch


@denormals_flushed()  # a network that stops learning goes subnormal: search/engine/denormals.py
def train(
    model: nn.Module,
    train_split: Split,
    config: TrainConfig,
    validation: Split | None = None,
    test: Split | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train in place; `on_epoch` may raise (an Optuna prune) to stop early."""
    device = train_split.x.device
    step, optimizer, batch = make_step(model, train_split, config)
    steps_per_epoch = math.ceil(len(train_split) / batch)
    schedule = make_schedule(optimizer, config, steps_per_epoch * config.epochs)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    result = TrainResult(device=str(device))
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        losses = []  # summed once per epoch: an add per step costs more than the list
        for x, y in batches(train_split, batch, generator):
            losses.append(step(x, y))
            if schedule is not None:
                schedule.step()
        train_loss = torch.stack(losses).sum().item() / steps_per_epoch
        if not math.isfinite(train_loss):
            raise Diverged(epoch, train_loss)
        scores = evaluate(model, validation) if validation is not None else None
        if scores is not None and not math.isfinite(scores.loss):
            raise Diverged(epoch, scores.loss)
        record = EpochRecord(
            epoch,
            train_loss,
            scores.loss if scores else None,
            scores.accuracy if scores else None,
            time.perf_counter() - epoch_start,
        )
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    result.seconds = time.perf_counter() - started
    result.train = evaluate(model, train_split)
    if not math.isfinite(result.train.loss):
        raise Diverged(config.epochs, result.train.loss)
    result.validation = evaluate(model, validation) if validation is not None else None
    result.test = evaluate(model, test) if test is not None else None
    return result
