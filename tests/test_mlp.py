import pytest
import torch

from models.mlp import INITS, Init, build_mlp, hidden_widths, load_model, save_model


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_shapes_and_activation(activation):
    model = build_mlp([20, 10], activation)
    assert hidden_widths(model) == [20, 10]
    assert model(torch.zeros(3, 784)).shape == (3, 10)
    assert sum(isinstance(m, type(model[1])) for m in model) == 2


@pytest.mark.parametrize("name", INITS)
def test_every_init_builds(name):
    model = build_mlp([8], init=Init(name, 0.5))
    weight = model[0].weight
    if name == "zeros":
        assert torch.count_nonzero(weight) == 0
    if name == "constant":
        assert torch.all(weight == 0.5) and torch.all(model[0].bias == 0.5)
    if name == "normal":
        assert 0.3 < weight.std().item() < 0.7


def test_unknown_init_and_activation_rejected():
    with pytest.raises(ValueError, match="unknown init"):
        Init("ones")
    with pytest.raises(ValueError, match="unknown activation"):
        build_mlp([4], "sigmoid")


def test_checkpoint_round_trip(tmp_path):
    model = build_mlp([12, 6], "gelu")
    save_model(model, "gelu", tmp_path / "m.pt", {"metadata": {"note": "x"}})
    loaded, checkpoint = load_model(tmp_path / "m.pt")
    x = torch.randn(5, 784)
    assert torch.equal(model(x), loaded(x))
    assert checkpoint["widths"] == [12, 6] and checkpoint["metadata"] == {"note": "x"}


def test_dropout_adds_no_parameters_and_survives_the_round_trip(tmp_path):
    plain, dropped = build_mlp([12, 6], "relu"), build_mlp([12, 6], "relu", dropout=0.25)
    assert sum(p.numel() for p in dropped.parameters()) == sum(p.numel() for p in plain.parameters())
    assert [m.p for m in dropped if isinstance(m, torch.nn.Dropout)] == [0.25, 0.25]
    save_model(dropped, "relu", tmp_path / "d.pt")
    loaded, checkpoint = load_model(tmp_path / "d.pt")
    assert checkpoint["dropout"] == 0.25 and not loaded.training
    x = torch.randn(5, 784)
    assert torch.equal(dropped.eval()(x), loaded(x))
    with pytest.raises(ValueError, match="dropout"):
        build_mlp([4], dropout=1.0)
