"""The full-batch step over sparse rows gives the dense step's loss, gradients and weights."""

import copy

import pytest
import torch

from models.budget import CLASSES, INPUTS
from models.mlp import build_mlp
from search.engine import trainer
from search.engine.config import TrainConfig
from search.engine.data import PIXEL_LEVELS, Split, scaled_pixels
from search.engine.sparse_rows import SparseRows
from search.engine.trainer import MLPStep, train


def mnist_like(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels/255 - 0.5 with a fifth of the pixels lit, as in MNIST."""
    generator = torch.Generator().manual_seed(seed)
    lit = torch.rand(rows, INPUTS, generator=generator) < 0.2
    pixels = torch.randint(1, PIXEL_LEVELS + 1, (rows, INPUTS), generator=generator) * lit
    return scaled_pixels(pixels.float()), torch.randint(0, CLASSES, (rows,), generator=generator)


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
@pytest.mark.parametrize("widths", [[], [24], [24, 16, 8]])
def test_sparse_full_batch_matches_dense(activation, widths):
    x, y = mnist_like(300)
    sparse = SparseRows.of(x, chunk_rows=64)  # 5 chunks, the last one short
    assert sparse is not None and sparse.common == -0.5 and len(sparse.chunks) == 5
    torch.manual_seed(0)
    dense_model = build_mlp(widths, activation)
    sparse_model = copy.deepcopy(dense_model)
    # SGD: the update is linear in the gradient, so rounding-level gradient differences stay rounding-level
    config = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01)
    dense_step, sparse_step = MLPStep.build(dense_model, config), MLPStep.build(sparse_model, config)
    for _ in range(3):
        dense_loss = dense_step(x, y)
        sparse_loss = sparse_step.full_batch(sparse, x, y)
        torch.testing.assert_close(sparse_loss, dense_loss)
        for a, b in zip(sparse_model.parameters(), dense_model.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dense_inputs_stay_dense():
    assert SparseRows.of(torch.randn(200, INPUTS)) is None
    half_lit, _ = mnist_like(200)
    half_lit[:, :500] = torch.rand(200, 500)  # most entries differ from the common value
    assert SparseRows.of(half_lit) is None


def test_built_once_per_tensor_until_it_changes():
    x, _ = mnist_like(100)
    first = SparseRows.of(x)
    assert SparseRows.of(x) is first
    x[0, 0] = 0.25
    rebuilt = SparseRows.of(x)
    assert rebuilt is not first
    assert rebuilt.chunks[0].values[0] == pytest.approx(0.75)


def test_trainer_takes_the_sparse_path_for_full_batch(monkeypatch):
    x, y = mnist_like(400, seed=1)
    config = TrainConfig(epochs=3, batch_size=0, optimizer="sgd", lr=0.5)
    calls = []
    full_batch = MLPStep.full_batch

    def counted(self, *args):
        calls.append(1)
        return full_batch(self, *args)

    monkeypatch.setattr(MLPStep, "full_batch", counted)
    torch.manual_seed(0)
    sparse_result = train(build_mlp([16]), Split(x, y), config)
    assert len(calls) == 3
    monkeypatch.setattr(trainer.SparseRows, "of", staticmethod(lambda tensor: None))
    torch.manual_seed(0)
    dense_result = train(build_mlp([16]), Split(x, y), config)
    assert len(calls) == 3
    for sparse_epoch, dense_epoch in zip(sparse_result.history, dense_result.history, strict=True):
        assert sparse_epoch.train_loss == pytest.approx(dense_epoch.train_loss, rel=1e-5)
    assert sparse_result.train.loss == pytest.approx(dense_result.train.loss, rel=1e-4)
    assert sparse_result.history[-1].train_loss < sparse_result.history[0].train_loss
