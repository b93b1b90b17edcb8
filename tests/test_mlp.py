import math

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
def test_every_init_sets_the_weights_it_names(name):
    """Each init's documented distribution, on a 784-64 layer (50,176 weights: tight statistics)."""
    torch.manual_seed(0)
    layer = build_mlp([64], "tanh", init=Init(name, 0.5))[0]
    weight, bias = layer.weight.detach(), layer.bias.detach()
    fan_in, fan_out = weight.shape[1], weight.shape[0]
    uniform_bounds = {  # U(-b, b) for each uniform init (torch's default is kaiming_uniform with a = sqrt(5))
        "default": 1 / math.sqrt(fan_in),
        "xavier": 5 / 3 * math.sqrt(6 / (fan_in + fan_out)),  # tanh's gain
        "kaiming": math.sqrt(2) * math.sqrt(3 / fan_in),  # relu's gain
    }
    if name in uniform_bounds:
        bound = uniform_bounds[name]
        assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
        if name == "default":
            assert bias.abs().max() <= bound and torch.count_nonzero(bias) == fan_out
        else:
            assert torch.count_nonzero(bias) == 0
    elif name == "zeros":
        assert torch.count_nonzero(weight) == 0 and torch.count_nonzero(bias) == 0
    elif name == "constant":
        assert torch.all(weight == 0.5) and torch.all(bias == 0.5)
    elif name == "normal":
        assert weight.std().item() == pytest.approx(0.5, rel=0.02) and abs(weight.mean().item()) < 0.01
        assert torch.count_nonzero(bias) == 0
    else:
        pytest.fail(f"no expectation for init {name!r}: add one")


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


def test_input_dropout_adds_no_parameters_comes_first_and_survives_the_round_trip(tmp_path):
    plain, dropped = build_mlp([12, 6], "gelu"), build_mlp([12, 6], "gelu", dropout=0.1, input_dropout=0.2)
    assert sum(p.numel() for p in dropped.parameters()) == sum(p.numel() for p in plain.parameters())
    assert isinstance(dropped[0], torch.nn.Dropout) and [m.p for m in dropped if isinstance(m, torch.nn.Dropout)] == [
        0.2,
        0.1,
        0.1,
    ]
    save_model(dropped, "gelu", tmp_path / "d.pt")
    loaded, checkpoint = load_model(tmp_path / "d.pt")
    assert (checkpoint["input_dropout"], checkpoint["dropout"]) == (0.2, 0.1)
    x = torch.randn(5, 784)
    assert torch.equal(dropped.eval()(x), loaded(x))
    with pytest.raises(ValueError, match="input_dropout must be in"):
        build_mlp([4], input_dropout=1.0)
