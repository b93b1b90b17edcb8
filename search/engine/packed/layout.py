"""A pack's members: what a pack reads off each model (MemberShape), what the members must share
(check_pack), and each member's own state in the pack (Member)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.mlp import split_input_dropout
from search.engine.config import TrainConfig
from search.engine.trainer import TrainResult

if TYPE_CHECKING:
    from search.engine.packed.update import ScheduleValues

SHARED_SETTINGS = ("optimizer", "batch_size", "epochs", "momentum", "activation")
ACTIVATIONS = (nn.Tanh, nn.ReLU, nn.GELU)


@dataclass(frozen=True)
class Entrant:
    """A model that joins a running pack at an epoch boundary (train_pack's `refill`): built as for
    train_pack's `models`, with its config and the dropout state it would start from alone."""

    model: nn.Sequential
    config: TrainConfig
    dropout_state: torch.Tensor | None = None


@dataclass(frozen=True)
class MemberShape:
    """What a pack reads off one model: its Linear layers, its activation and its dropout rates."""

    linears: tuple[nn.Linear, ...]
    activation: nn.Module
    dropout: float
    input_dropout: float = 0.0

    @property
    def sizes(self) -> list[int]:
        """Inputs, hidden widths, classes."""
        return [self.linears[0].in_features, *(linear.out_features for linear in self.linears)]

    @staticmethod
    def of(model: nn.Module) -> MemberShape:
        """ValueError unless `model` is [Dropout] Linear (activation [Dropout] Linear)*, as build_mlp makes it."""
        input_dropout, modules = split_input_dropout(list(model) if type(model) is nn.Sequential else [])
        rates = {m.p for m in modules if type(m) is nn.Dropout}
        core = [m for m in modules if type(m) is not nn.Dropout]
        linears, activations = core[0::2], core[1::2]
        well_formed = (
            len(core) % 2 == 1
            and len(rates) <= 1
            and len(modules) == 1 + (3 if rates else 2) * len(activations)
            and all(type(m) is nn.Dropout for m in (modules[2::3] if rates else ()))
            and all(type(m) is nn.Linear and m.bias is not None for m in linears)
            and all(type(m) in ACTIVATIONS for m in activations)
            and len({repr(m) for m in activations}) <= 1
        )
        if not well_formed:
            raise ValueError(f"a pack trains MLPs as build_mlp makes them, not {model}")
        activation = activations[0] if activations else nn.Identity()
        return MemberShape(tuple(linears), activation, rates.pop() if rates else 0.0, input_dropout)


def check_pack(
    shapes: Sequence[MemberShape], configs: Sequence[TrainConfig], dropout_states: Sequence[torch.Tensor] | None
) -> None:
    """ValueError unless the members can train in one pack."""
    if not shapes:
        raise ValueError("a pack needs at least one model")
    if len(configs) != len(shapes) or (dropout_states is not None and len(dropout_states) != len(shapes)):
        given = "none" if dropout_states is None else len(dropout_states)
        raise ValueError(f"{len(shapes)} models need as many configs (got {len(configs)}) and dropout states ({given})")
    for name, values in (
        ("depth", [len(shape.linears) for shape in shapes]),
        ("inputs", [shape.sizes[0] for shape in shapes]),
        ("classes", [shape.sizes[-1] for shape in shapes]),
        ("activation layer", [repr(shape.activation) for shape in shapes]),
        *((setting, [getattr(config, setting) for config in configs]) for setting in SHARED_SETTINGS),
    ):
        if len(set(values)) > 1:
            raise ValueError(
                f"the members of a pack share their {name}; got {', '.join(sorted(map(str, set(values))))}"
            )


@dataclass
class Member:
    """One model in a pack, with what it brings of its own."""

    index: int  # its position in train_pack's lists
    model: nn.Sequential
    config: TrainConfig
    shape: MemberShape
    batch_generator: torch.Generator
    dropout_generator: torch.Generator
    result: TrainResult
    started: float = 0.0  # time.perf_counter() when it joined
    epochs: int = 0  # epochs trained
    steps: int = 0  # optimizer steps taken: its own, as it may have joined a running pack
    schedule: ScheduleValues | None = None


def default_generator_state(device: torch.device | str) -> torch.Tensor:
    """The state of `device`'s default generator, where a model trained alone there draws its dropout masks."""
    device = torch.device(device)
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def dropout_generator(device: torch.device, seed: int, state: torch.Tensor | None) -> torch.Generator:
    """A member's own generator on `device`: from `state` (default_generator_state), else seeded with `seed`.

    ValueError for a state of another device's kind: a CPU generator's state is 5,056 bytes and a CUDA
    generator's 16, and set_state's own error names neither device."""
    generator = torch.Generator(device=device)
    if state is None:
        return generator.manual_seed(seed)
    expected = generator.get_state()
    if state.dtype != expected.dtype or state.numel() != expected.numel():
        source = "torch.cuda.get_rng_state()" if device.type == "cuda" else "torch.get_rng_state()"
        raise ValueError(
            f"a dropout state on {device.type} is a generator state of {expected.numel():,} bytes, not "
            f"{state.numel():,} {state.dtype} values: pass {source}, the state of the generator it trains with"
        )
    generator.set_state(state)
    return generator


def schedule_key(config: TrainConfig) -> tuple:
    """The settings that make a member's learning rate and beta1 or momentum, step by step."""
    return (config.optimizer, config.lr, config.momentum, config.schedule)


@dataclass
class Layer:
    """One layer's views into the pack's flat tensors: (K, out, in) weights, (K, out) biases, padded."""

    weight: torch.Tensor
    bias: torch.Tensor
    weight_grad: torch.Tensor
    bias_grad: torch.Tensor
