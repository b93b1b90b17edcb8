"""The bare fused kernels update exactly as Optimizer.step does, under every optimizer and schedule we use."""

import pytest
import torch

from search.engine import fused
from search.engine.config import TrainConfig
from search.engine.fused import _AdamUpdate, _SGDUpdate, fused_update
from search.engine.trainer import make_optimizer, make_schedule

CONFIGS = [
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0),
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01, schedule="cosine"),
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, schedule="onecycle"),  # one-cycle turns momentum on
    TrainConfig(optimizer="adam", lr=1e-2, weight_decay=0.0),
    TrainConfig(optimizer="adam", lr=1e-2, weight_decay=0.05, schedule="onecycle"),
    TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=0.05, schedule="cosine"),
]


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c.optimizer}-m{c.momentum}-wd{c.weight_decay}-{c.schedule}"
)
def test_fused_update_equals_optimizer_step(config, device):
    torch.manual_seed(0)
    start = torch.randn(500, device=device)
    reference = torch.nn.Parameter(start.clone())
    direct = torch.nn.Parameter(start.clone())
    steps = 6
    optimizers = [make_optimizer([p], config) for p in (reference, direct)]
    schedules = [make_schedule(o, config, steps) for o in optimizers]
    update = fused_update(optimizers[1])
    assert isinstance(update, _SGDUpdate if config.optimizer == "sgd" else _AdamUpdate)
    for _ in range(steps):
        grad = torch.randn(500, device=device)
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


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_a_param_group_without_a_key_we_read_falls_back_to_optimizer_step(optimizer):
    """Older torch versions lack keys such as Adam's `decoupled_weight_decay` (a KeyError before)."""
    param = torch.nn.Parameter(torch.zeros(4))
    built = make_optimizer([param], TrainConfig(optimizer=optimizer, lr=0.1))
    assert fused_update(built) != built.step
    missing = "decoupled_weight_decay" if optimizer != "sgd" else "nesterov"
    del built.param_groups[0][missing]
    assert fused_update(built) == built.step  # chosen without reading the missing key (a KeyError before)


def test_a_kernel_with_another_signature_falls_back_to_optimizer_step(monkeypatch):
    param = torch.nn.Parameter(torch.zeros(4))
    built = make_optimizer([param], TrainConfig(optimizer="adam", lr=0.1))
    monkeypatch.setattr(fused, "ADAM_ARGUMENTS", fused.ADAM_ARGUMENTS | {"an_argument_torch_never_had"})
    assert fused_update(built) == built.step
    monkeypatch.setattr(torch, "_fused_adam_", None, raising=False)
    monkeypatch.delattr(torch, "_fused_adam_")
    assert not fused.kernel_takes("_fused_adam_", set())
