"""The MLPs that archsearch trains, built from a list of hidden widths."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from models.budget import CLASSES, INPUTS
from models.catalog import ACTIVATION_NAMES, INIT_NAMES, Init

ACTIVATIONS = dict(zip(ACTIVATION_NAMES, (nn.Tanh, nn.ReLU, nn.GELU), strict=True))
INITS = INIT_NAMES


def build_mlp(
    widths: Sequence[int],
    activation: str = "tanh",
    init: Init = Init(),
    dropout: float = 0.0,
    input_dropout: float = 0.0,
) -> nn.Sequential:
    """Linear layers with the activation (and dropout, if any) between them; `[]` is the linear softmax model.

    `input_dropout` drops input pixels before the first layer (Srivastava et al. 2014 drop 20%); like
    dropout it adds no parameters."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
    for name, rate in (("dropout", dropout), ("input_dropout", input_dropout)):
        if not 0 <= rate < 1:
            raise ValueError(f"{name} must be in [0, 1), got {rate}")
    sizes = [INPUTS, *widths, CLASSES]
    layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout else []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        if index:
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(fan_in, fan_out))
    model = nn.Sequential(*layers)
    initialize(model, init, activation)
    return model


def initialize(model: nn.Module, init: Init, activation: str = "tanh") -> None:
    if init.name == "default":
        return
    gain_name = "tanh" if activation == "tanh" else "relu"
    with torch.no_grad():
        for layer in model.modules():
            if not isinstance(layer, nn.Linear):
                continue
            if init.name == "zeros":
                nn.init.zeros_(layer.weight)
            elif init.name == "normal":
                nn.init.normal_(layer.weight, std=init.value)
            elif init.name == "constant":
                nn.init.constant_(layer.weight, init.value)
            elif init.name == "xavier":
                nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain(gain_name))
            elif init.name == "kaiming":
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            if init.name == "constant":
                nn.init.constant_(layer.bias, init.value)
            else:
                nn.init.zeros_(layer.bias)


def hidden_widths(model: nn.Sequential) -> list[int]:
    return [layer.out_features for layer in model if isinstance(layer, nn.Linear)][:-1]


def split_input_dropout(layers: Sequence[nn.Module]) -> tuple[float, list[nn.Module]]:
    """The input dropout rate of a layer list as build_mlp makes it (0 without one), and the layers after it."""
    if layers and type(layers[0]) is nn.Dropout:
        return layers[0].p, list(layers[1:])
    return 0.0, list(layers)


def dropout_rate(model: nn.Sequential) -> float:
    """The rate of the dropout after the hidden activations."""
    _, layers = split_input_dropout(list(model))
    return next((layer.p for layer in layers if isinstance(layer, nn.Dropout)), 0.0)


def save_model(model: nn.Sequential, activation: str, path, extra: dict | None = None) -> None:
    """A self-describing checkpoint: widths, activation and dropout rates travel with the weights."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # own storage, not a view
    shape = {
        "widths": hidden_widths(model),
        "activation": activation,
        "dropout": dropout_rate(model),
        "input_dropout": split_input_dropout(list(model))[0],
    }
    torch.save({**shape, "state_dict": state, **(extra or {})}, path)


def load_model(path) -> tuple[nn.Sequential, dict]:
    """The model in eval mode, ready to score (dropout, if it was trained with some, is then off)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_mlp(
        checkpoint["widths"],
        checkpoint["activation"],
        dropout=checkpoint.get("dropout", 0.0),
        input_dropout=checkpoint.get("input_dropout", 0.0),  # 0 in checkpoints from before it was searched
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint
