import copy
import dataclasses

import pytest
import torch
from torch import nn

from models.mlp import Init, build_mlp
from search.engine.config import TrainConfig
from search.engine.data import load_data
from search.engine.trainer import (
    Diverged,
    MLPStep,
    autograd_step,
    evaluate,
    make_optimizer,
    resolve_device,
    tanh_,
    train,
)


@pytest.fixture()
def tiny(tiny_mnist):
    return load_data(str(tiny_mnist), "mnist", "cpu", limit=400)


def fit(data, config, widths=(32,)):
    torch.manual_seed(config.seed)
    model = build_mlp(list(widths), config.activation)
    return train(model, data.train, config, data.validation, data.test), model


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_training_lowers_the_loss(tiny, optimizer, schedule):
    config = TrainConfig(
        epochs=4,
        batch_size=64,
        optimizer=optimizer,
        lr=0.05 if optimizer == "sgd" else 3e-3,
        momentum=0.9,
        schedule=schedule,
    )
    torch.manual_seed(config.seed)
    untrained = evaluate(build_mlp([32], config.activation), tiny.validation).loss
    result, _ = fit(tiny, config)
    assert len(result.history) == 4
    assert result.validation.loss < 0.5 * untrained, (untrained, [r.val_loss for r in result.history])
    assert result.validation.accuracy > 0.5


def test_same_seed_same_losses_other_seed_differs(tiny):
    config = TrainConfig(epochs=2, batch_size=50)
    first, _ = fit(tiny, config)
    second, _ = fit(tiny, config)
    third, _ = fit(tiny, dataclasses.replace(config, seed=1))
    assert [r.train_loss for r in first.history] == [r.train_loss for r in second.history]
    assert first.validation.loss == second.validation.loss
    assert first.validation.loss != third.validation.loss


def test_full_batch_is_one_step_per_epoch(tiny):
    config = TrainConfig(epochs=3, batch_size=0, optimizer="sgd", lr=0.1)
    torch.manual_seed(0)
    model = build_mlp([], init=Init("zeros"))
    result = train(model, tiny.train, config)
    losses = [r.train_loss for r in result.history]
    assert losses[0] == pytest.approx(torch.log(torch.tensor(10.0)).item(), rel=1e-5)
    assert losses == sorted(losses, reverse=True)


def test_huge_learning_rate_raises_diverged(tiny):
    config = TrainConfig(epochs=5, batch_size=50, optimizer="sgd", lr=1e8, activation="relu")
    with pytest.raises(Diverged) as error:
        fit(tiny, config, widths=(64, 64))
    assert 1 <= error.value.epoch <= 5 and "epoch" in str(error.value)


def test_evaluate_matches_direct_computation(tiny):
    model = build_mlp([16])
    scores = evaluate(model, tiny.test)
    with torch.no_grad():
        logits = model(tiny.test.x)
    expected = torch.nn.functional.cross_entropy(logits, tiny.test.y).item()
    assert scores.loss == pytest.approx(expected, rel=1e-5)
    assert scores.accuracy == pytest.approx((logits.argmax(1) == tiny.test.y).float().mean().item())


def test_on_epoch_can_stop_training(tiny):
    class Stop(Exception):
        pass

    seen = []

    def on_epoch(record):
        seen.append(record.epoch)
        if record.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(build_mlp([8]), tiny.train, TrainConfig(epochs=5), tiny.validation, on_epoch=on_epoch)
    assert seen == [1, 2]


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
@pytest.mark.parametrize("dropout, input_dropout", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.2), (0.3, 0.2)])
@pytest.mark.parametrize("widths", [[], [24], [24, 16, 8]])
def test_fast_step_matches_autograd(activation, dropout, input_dropout, widths):
    """The hand-written step gives autograd's loss, gradients and updated weights (same dropout masks)."""
    x, y = torch.randn(96, 784), torch.randint(0, 10, (96,))
    torch.manual_seed(0)
    fast = build_mlp(widths, activation, dropout=dropout, input_dropout=input_dropout)
    slow = copy.deepcopy(fast)
    # SGD: the update is linear in the gradient, so rounding-level gradient differences stay rounding-level
    config = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01)
    step = MLPStep.build(fast, config)
    assert step is not None
    slow_step = autograd_step(slow, make_optimizer(slow.parameters(), config))
    for seed in (1, 2):  # two steps: the second starts from updated weights and optimizer state
        torch.manual_seed(seed)
        fast_loss = step(x, y)
        torch.manual_seed(seed)
        slow_loss = slow_step(x, y)
        torch.testing.assert_close(fast_loss, slow_loss)
        for a, b in zip(fast.parameters(), slow.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_tanh_through_sigmoid_is_torch_tanh_to_float_rounding():
    z = torch.cat([torch.linspace(-12, 12, 200_001), torch.logspace(-30, 2, 1001), -torch.logspace(-30, 2, 1001)])
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e30, -1e30])
    expected = torch.tanh(z)
    result = tanh_(z.clone())
    assert (result - expected).abs().max() <= 2.5e-7  # a few units in the last place of 1
    assert result.abs().max() <= 1
    assert torch.equal(tanh_(special.clone()), torch.tanh(special))
    assert tanh_(torch.tensor([float("nan")])).isnan().all()


def test_fast_step_declines_other_models():
    config = TrainConfig()
    others = [
        nn.Sequential(nn.Linear(784, 8), nn.BatchNorm1d(8), nn.Linear(8, 10)),
        nn.Sequential(nn.Linear(784, 8), nn.Tanh(), nn.Linear(8, 10, bias=False)),
        nn.Sequential(nn.Linear(784, 8), nn.Dropout(0.1), nn.Tanh(), nn.Linear(8, 10)),
        nn.Sequential(nn.Dropout(0.1), nn.Dropout(0.1), nn.Linear(784, 8), nn.Tanh(), nn.Linear(8, 10)),
        nn.Sequential(nn.Linear(784, 8), nn.Tanh()),
    ]
    for model in others:
        assert MLPStep.build(model, config) is None, model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_path(tiny_mnist):
    data = load_data(str(tiny_mnist), "mnist", "cuda", limit=400)
    result, _ = fit(data, TrainConfig(epochs=2, device="cuda"))
    assert result.device.startswith("cuda")


@pytest.mark.parametrize(
    ("name", "worker", "expected"),
    [("cuda", 0, "cuda"), ("cuda", 1, "cuda:1"), ("cuda", 5, "cuda:2"), ("auto", 3, "cuda"), ("cpu", 2, "cpu")],
)
def test_workers_spread_over_the_visible_gpus(monkeypatch, name, worker, expected):
    """A CPU stand-in for a machine of three GPUs: worker k trains on GPU k mod 3 (0 keeps the current one)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert resolve_device(name, worker) == torch.device(expected)


def test_the_full_training_set_reaches_the_device_only_when_used(tiny_mnist):
    data = load_data(str(tiny_mnist), "mnist", "cpu", limit=300, split_seed=7)
    assert "train_full" not in vars(data)  # a search reads train, validation and test alone
    full = data.train_full
    assert vars(data)["train_full"] is full and data.train_full is full  # made once
    assert len(full) == 300 and full.x.shape == (300, 784)  # its values: tests/test_data.py
