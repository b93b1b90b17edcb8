"""The bare fused kernels update exactly as Optimizer.step does, under every optimizer and schedule we use."""

import pytest
import torch

from search.config import TrainConfig
from search.fused import _AdamUpdate, _SGDUpdate, fused_update
from search.trainer import make_optimizer, make_schedule

CONFIGS = [
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0),
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01, schedule="cosine"),
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, schedule="onecycle"),  # one-cycle turns momentum on
    TrainConfig(optimizer="adam", lr=1e-2, weight_decay=0.0),
    TrainConfig(optimizer="adam", lr=1e-2, weight_decay=0.05, schedule="onecycle"),
    TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=0.05, schedule="cosine"),
]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c.optimizer}-m{c.momentum}-wd{c.weight_decay}-{c.schedule}"
)
def test_fused_update_equals_optimizer_step(config):
    torch.manual_seed(0)
    start = torch.randn(500)
    reference = torch.nn.Parameter(start.clone())
    direct = torch.nn.Parameter(start.clone())
    steps = 6
    optimizers = [make_optimizer([p], config) for p in (reference, direct)]
    schedules = [make_schedule(o, config, steps) for o in optimizers]
    update = fused_update(optimizers[1])
    assert isinstance(update, _SGDUpdate if config.optimizer == "sgd" else _AdamUpdate)
    for _ in range(steps):
        grad = torch.randn(500)
        reference.grad, direct.grad = grad.clone(), grad.clone()
        optimizers[0].step()
        update()
        for schedule in schedules:
            if schedule is not None:
                schedule.step()
        assert torch.equal(reference, direct)
    assert not torch.equal(reference, start)
    for key, value in optimizers[0].state[reference].items():
        assert torch.equal(value, optimizers[1].state[direct][key]), key


def test_other_optimizers_keep_their_own_step():
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))]
    two_tensors = torch.optim.Adam(params, fused=True)
    unfused = torch.optim.Adam(params[:1])
    amsgrad = torch.optim.Adam(params[:1], amsgrad=True, fused=True)
    for optimizer in (two_tensors, unfused, amsgrad, torch.optim.RMSprop(params[:1])):
        assert fused_update(optimizer) == optimizer.step
