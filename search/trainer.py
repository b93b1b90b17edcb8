"""Training on device-resident tensors: no DataLoader, no host sync inside the step loop."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from search.config import TrainConfig
from search.data import Split

EVAL_BATCH = 16_384


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

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Fused kernels where the device has them: one launch per step instead of one per tensor."""
    params = list(model.parameters())
    fused = {"fused": True}
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, **fused)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay, **fused)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
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
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    size = len(train_split)
    batch = size if config.batch_size in (0, None) or config.batch_size >= size else config.batch_size
    steps_per_epoch = math.ceil(size / batch)
    schedule = make_schedule(optimizer, config, steps_per_epoch * config.epochs)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    result = TrainResult(device=str(device))
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        if batch == size:
            xs, ys = train_split.x, train_split.y
        else:
            order = torch.randperm(size, device=device, generator=generator)
            xs, ys = train_split.x[order], train_split.y[order]
        loss_sum = torch.zeros((), device=device)
        for start in range(0, size, batch):
            loss = F.cross_entropy(model(xs[start : start + batch]), ys[start : start + batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            loss_sum += loss.detach()
        train_loss = loss_sum.item() / steps_per_epoch
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
