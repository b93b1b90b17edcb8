import dataclasses

import pytest
import torch

from models.mlp import Init, build_mlp
from search.config import TrainConfig
from search.data import load_data
from search.trainer import Diverged, evaluate, train


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
    result, _ = fit(tiny, config)
    assert len(result.history) == 4
    assert result.history[-1].val_loss < result.history[0].val_loss or result.validation.loss < 1.0
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_path(tiny_mnist):
    data = load_data(str(tiny_mnist), "mnist", "cuda", limit=400)
    result, _ = fit(data, TrainConfig(epochs=2, device="cuda"))
    assert result.device.startswith("cuda")
