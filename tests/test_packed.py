"""Packed training (search/engine/packed/): every member trains as it would alone, padded units stay zero,
and a member that is pruned or diverges leaves the pack without changing the others' training."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from models.budget import count_parameters
from models.mlp import build_mlp, hidden_widths
from search.engine import packed
from search.engine.config import TrainConfig
from search.engine.data import load_data
from search.engine.packed import (
    Pack,
    center_pixels,
    default_generator_state,
    graphs,
    pixel_bytes,
    scale_pixels,
    sizing,
    train_pack,
)
from search.engine.packed import pack as pack_module
from search.engine.trainer import Diverged, resolve_device, train

RELATIVE = 1e-4  # training alone and in a pack differ by float rounding only
UNCHANGED = 1e-6  # a pack with or without another member runs the same ops on the same rows, but a kernel
# may round an element by where its row sits in the tensor (vectorized body or scalar tail)


@pytest.fixture(scope="module")
def data(mnist_root):
    return load_data(str(mnist_root), limit=2000)  # batches of 128 leave a partial last one


def build(widths: list[int], config: TrainConfig) -> tuple[nn.Sequential, torch.Tensor]:
    """The model train_trial builds, and the state of its device's generator right after: where its dropout
    starts (on CUDA the CUDA generator's, which torch.manual_seed seeds too)."""
    torch.manual_seed(config.seed)
    model = build_mlp(widths, config.activation, dropout=config.dropout, input_dropout=config.input_dropout)
    return model, default_generator_state(resolve_device(config.device))


def run_pack(members: list[tuple[list[int], TrainConfig]], data, on_epoch=None):
    built = [build(widths, config) for widths, config in members]
    models = [model for model, _ in built]
    configs = [config for _, config in members]
    states = [state for _, state in built]
    return train_pack(models, configs, data.train, data.validation, data.test, on_epoch, states), models


def losses(result) -> list[float]:
    return [r.train_loss for r in result.history] + [r.val_loss for r in result.history]


def configs(shared: dict, *members: dict) -> list[TrainConfig]:
    return [TrainConfig(epochs=2, batch_size=128, device="cpu", **shared, **member) for member in members]


# Each optimizer, schedule, activation, depth 1 and 3, dropout and input dropout on, off and mixed, packs of 1,
# 3 and 8.
CASES = {
    "one-sgd-constant": (
        [[48]],
        configs({"optimizer": "sgd", "momentum": 0.9}, {"lr": 0.05, "seed": 3}),
    ),
    "three-adam-cosine-relu-dropout-depth3": (
        [[40, 24, 16], [16, 32, 8], [24, 24, 24]],
        configs(
            {"optimizer": "adam", "schedule": "cosine", "activation": "relu"},
            {"lr": 1e-3, "seed": 1, "dropout": 0.2},
            {"lr": 3e-3, "seed": 2, "dropout": 0.1, "weight_decay": 1e-3},
            {"lr": 2e-3, "seed": 3},
        ),
    ),
    "eight-adamw-onecycle-depth1": (
        [[8], [64], [17], [40], [33], [12], [50], [25]],
        configs(
            {"optimizer": "adamw", "schedule": "onecycle"},
            *(
                {"lr": 1e-3 * (1 + k), "seed": k, "weight_decay": 0.01 * (k % 3), "dropout": 0.3 * (k % 2)}
                for k in range(8)
            ),
        ),
    ),
    "three-sgd-onecycle-gelu-dropout-depth3": (
        [[30, 20, 10], [10, 20, 30], [20, 20, 20]],
        configs(
            {"optimizer": "sgd", "schedule": "onecycle", "activation": "gelu"},
            *({"lr": 0.02 * (1 + k), "seed": 10 + k, "weight_decay": 1e-3 * k, "dropout": 0.1} for k in range(3)),
        ),
    ),
    "three-adamw-gelu-input-dropout-mixed": (
        [[24, 16], [16, 24], [20, 20]],
        configs(
            {"optimizer": "adamw", "schedule": "onecycle", "activation": "gelu"},
            {"lr": 2e-3, "seed": 4, "input_dropout": 0.2, "dropout": 0.1},
            {"lr": 1e-3, "seed": 5, "input_dropout": 0.1},
            {"lr": 3e-3, "seed": 6, "dropout": 0.2, "weight_decay": 0.01},
        ),
    ),
    "three-adam-one-cycle-cosine-constant": (  # one-cycle's beta1 is not the others': the update's elementwise path
        [[16, 24], [32, 8], [24, 24]],
        [
            TrainConfig(epochs=2, batch_size=128, optimizer="adam", lr=2e-3, seed=k, schedule=schedule)
            for k, schedule in enumerate(("onecycle", "cosine", "constant"))
        ],
    ),
    "two-sgd-full-batch": (
        [[32], [20]],
        [
            dataclasses.replace(config, batch_size=0)
            for config in configs({"optimizer": "sgd", "momentum": 0.5}, {"lr": 0.1, "seed": 0}, {"lr": 0.2, "seed": 1})
        ],
    ),
}


@pytest.fixture
def one_thread():
    """In a pack a member's products run inside one batched product; alone, as products of their own. Split
    over several threads, the two sum in different orders and round differently, and through ReLU's kink and
    Adam's normalisation a few weights of the deep ReLU case then drift apart by a fifteenth of a step with 2
    threads (a five-hundredth with 1). One thread gives each product one order, on any machine and load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", CASES)
def test_every_member_trains_as_it_would_alone(data, case, one_thread):
    widths, member_configs = CASES[case]
    results, models = run_pack(list(zip(widths, member_configs, strict=True)), data)
    for member_widths, config, result, model in zip(widths, member_configs, results, models, strict=True):
        alone_model, _ = build(member_widths, config)
        alone = train(alone_model, data.train, config, data.validation, data.test)
        assert len(result.history) == len(alone.history) == config.epochs
        assert losses(result) == pytest.approx(losses(alone), rel=RELATIVE)
        assert result.test.loss == pytest.approx(alone.test.loss, rel=RELATIVE)
        assert result.device == alone.device
        for packed_param, alone_param in zip(model.parameters(), alone_model.parameters(), strict=True):
            torch.testing.assert_close(packed_param, alone_param, rtol=RELATIVE, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_padded_units_stay_zero_and_every_model_keeps_its_own_shape(data, optimizer):
    widths = [[8, 30], [30, 5], [16, 16]]
    member_configs = configs(
        {"optimizer": optimizer, "momentum": 0.9 if optimizer == "sgd" else 0.0},
        *({"lr": 0.01, "seed": k, "weight_decay": 0.01, "dropout": 0.2 * k} for k in range(3)),
    )
    models = [build(member_widths, config)[0] for member_widths, config in zip(widths, member_configs, strict=True)]
    pack = Pack.build(models, member_configs, data.train)
    for _ in range(2):
        pack.train_epoch(data.train)
    assert pack.sizes == [784, 30, 30, 10]
    for tensor in (pack.param, pack.grad, *pack.state):
        assert tensor.abs().sum() > 0
        for row, member_widths in enumerate(widths):
            sizes = [784, *member_widths, 10]
            for layer, (weight, bias) in enumerate(pack.views(tensor)):
                fan_in, fan_out = sizes[layer], sizes[layer + 1]
                assert not weight[row, fan_out:].any() and not weight[row, :, fan_in:].any()
                assert not bias[row, fan_out:].any()
    pack.write_back()
    for model, member_widths in zip(models, widths, strict=True):
        assert hidden_widths(model) == member_widths
        assert sum(p.numel() for p in model.parameters()) == count_parameters(member_widths)


class Pruned(Exception):
    """What an Optuna pruner's TrialPruned stands for here."""


def three_members(**middle) -> list[tuple[list[int], TrainConfig]]:
    """Three members, the middle one no wider than the others, so the pack's padding is the same without it."""
    base = TrainConfig(epochs=3, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, activation="relu")
    return [
        ([48, 32], dataclasses.replace(base, seed=0)),
        ([24, 16], dataclasses.replace(base, seed=1, **middle)),
        ([32, 40], dataclasses.replace(base, seed=2, lr=0.1)),
    ]


def test_a_member_pruned_at_epoch_one_leaves_and_the_others_train_on_unchanged(data):
    members = three_members()
    seen = []

    def on_epoch(index, record):
        seen.append((index, record.epoch))
        if index == 1:
            raise Pruned(f"pruned at epoch {record.epoch}")

    results, models = run_pack(members, data, on_epoch)
    without, _ = run_pack([members[0], members[2]], data)
    assert isinstance(results[1], Pruned) and str(results[1]) == "pruned at epoch 1"
    assert seen == [(0, 1), (1, 1), (2, 1), (0, 2), (2, 2), (0, 3), (2, 3)]
    for result, reference in zip((results[0], results[2]), without, strict=True):
        assert losses(result) == pytest.approx(losses(reference), rel=UNCHANGED)
        assert result.test.loss == pytest.approx(reference.test.loss, rel=UNCHANGED)
    one_epoch, _ = build(*members[1])  # the pruned model holds its weights as of its last epoch
    train(one_epoch, data.train, dataclasses.replace(members[1][1], epochs=1))
    for pruned_param, alone_param in zip(models[1].parameters(), one_epoch.parameters(), strict=True):
        torch.testing.assert_close(pruned_param, alone_param, rtol=RELATIVE, atol=1e-5)


def test_a_member_with_a_huge_learning_rate_diverges_alone(data):
    members = three_members(lr=1e8)
    results, _ = run_pack(members, data)
    without, _ = run_pack([members[0], members[2]], data)
    with pytest.raises(Diverged) as alone:
        model, _ = build(*members[1])
        train(model, data.train, members[1][1], data.validation, data.test)
    assert isinstance(results[1], Diverged) and results[1].epoch == alone.value.epoch
    for result, reference in zip((results[0], results[2]), without, strict=True):
        assert losses(result) == pytest.approx(losses(reference), rel=UNCHANGED)


MISMATCHES = {
    "depth": ([[32], [32, 16]], {}),
    "optimizer": ([[32], [16]], {"optimizer": "sgd"}),
    "batch_size": ([[32], [16]], {"batch_size": 64}),
    "epochs": ([[32], [16]], {"epochs": 3}),
    "momentum": ([[32], [16]], {"momentum": 0.5}),
    "activation": ([[32], [16]], {"activation": "relu"}),
}


@pytest.mark.parametrize("mismatch", MISMATCHES)
def test_members_that_cannot_share_a_pack_are_refused(data, mismatch):
    widths, second = MISMATCHES[mismatch]
    first = TrainConfig(epochs=1, batch_size=128, device="cpu")
    member_configs = [first, dataclasses.replace(first, **second)]
    models = [build(w, c)[0] for w, c in zip(widths, member_configs, strict=True)]
    with pytest.raises(ValueError, match=mismatch.split("_")[0]):
        train_pack(models, member_configs, data.train)


def test_other_models_and_unpaired_lists_are_refused(data):
    config = TrainConfig(epochs=1, device="cpu")
    with pytest.raises(ValueError, match="build_mlp"):
        train_pack([nn.Sequential(nn.Linear(784, 8), nn.Sigmoid(), nn.Linear(8, 10))], [config], data.train)
    with pytest.raises(ValueError, match="as many configs"):
        train_pack([build([8], config)[0]], [config, config], data.train)
    with pytest.raises(ValueError, match="at least one"):
        train_pack([], [], data.train)


# Adam's three paths: torch's fused kernel per group of members (CPU), the kernel once for the whole pack
# (GPU), elementwise ops (no kernel in this torch).
ADAM_PATHS = {
    "one-kernel-pass": ("kernel_per_member_group", lambda *_: False),
    "elementwise": ("kernel_takes", lambda *_: False),
}


@pytest.mark.parametrize("path", ADAM_PATHS)
@pytest.mark.parametrize("case", ["three-adam-cosine-relu-dropout-depth3", "eight-adamw-onecycle-depth1"])
def test_each_adam_path_trains_the_same(data, monkeypatch, case, path):
    widths, member_configs = CASES[case]
    members = list(zip(widths, member_configs, strict=True))[:4]
    grouped, _ = run_pack(members, data)
    monkeypatch.setattr(pack_module, *ADAM_PATHS[path])
    other, _ = run_pack(members, data)
    for first, second in zip(grouped, other, strict=True):
        assert losses(first) == pytest.approx(losses(second), rel=1e-5)


def test_members_with_the_same_rates_and_decay_share_a_kernel_call(data):
    member_configs = configs(
        {"optimizer": "adam"},
        *({"lr": lr, "weight_decay": decay, "seed": seed} for seed, (lr, decay) in enumerate(
            [(1e-3, 0.0), (2e-3, 0.0), (1e-3, 0.0), (1e-3, 1e-4), (2e-3, 0.0)])),
    )  # fmt: skip
    models = [build([16], config)[0] for config in member_configs]
    pack = Pack.build(models, member_configs, data.train)
    pack.load_coefficients(3)
    assert sorted((group.rows, group.decay) for group in pack.kernel_groups) == [
        ((0, 2), 0.0), ((1, 4), 0.0), ((3,), 1e-4)]  # fmt: skip
    for group in pack.kernel_groups:
        assert [tensor.data_ptr() for tensor in group.tensors[0]] == [pack.param[row].data_ptr() for row in group.rows]


@pytest.mark.parametrize("depth", [0, 1])  # the scaled inputs meet the only layer, or the first of two
def test_inputs_gathered_as_pixel_bytes_train_as_the_inputs(data, monkeypatch, depth):
    pixels = pixel_bytes(data.train.x)
    assert pixels is not None and pixels.dtype == torch.uint8
    assert torch.equal(scale_pixels(pixels, torch.empty_like(data.train.x)), data.train.x)
    assert pixel_bytes(data.train.x + 1e-3) is None and pixel_bytes(data.train.x * 2) is None
    centered = center_pixels(pixels, torch.empty_like(data.train.x))
    assert torch.equal(centered, pixels.float() - 127.5)  # exact: no rounding before the products scale it
    assert torch.allclose(centered / 255, data.train.x, rtol=0, atol=1e-7)
    widths, member_configs = CASES["eight-adamw-onecycle-depth1"]
    members = [(width[:depth], config) for width, config in zip(widths[:3], member_configs[:3], strict=True)]
    from_bytes, _ = run_pack(members, data)
    monkeypatch.setattr(pack_module, "pixel_bytes", lambda _: None)
    from_floats, _ = run_pack(members, data)
    for first, second in zip(from_bytes, from_floats, strict=True):
        assert losses(first) == pytest.approx(losses(second), rel=1e-5)


# A pack of 2 slots: member 0 is pruned at epoch 1, so entrant 2 joins at the first boundary; member 1 ends
# after its 3 epochs, so entrant 3 joins at the third. Entrant 2 is the widest in its first layer (the layout
# grows), member 1 in its second (it shrinks when member 1 leaves).
REFILL_WIDTHS = [[40, 24], [16, 48], [64, 8], [24, 24]]
REFILL_CASES = {
    "adam-cosine-dropout": {"optimizer": "adam", "schedule": "cosine", "activation": "relu"},
    "adamw-onecycle-gelu": {"optimizer": "adamw", "schedule": "onecycle", "activation": "gelu"},
    "sgd-momentum-constant": {"optimizer": "sgd", "momentum": 0.9},
}


@pytest.mark.parametrize("case", REFILL_CASES)
def test_models_that_join_a_running_pack_train_as_they_would_alone(data, case):
    shared = {"epochs": 3, "batch_size": 128, "device": "cpu", **REFILL_CASES[case]}
    lr = 0.05 if shared["optimizer"] == "sgd" else 2e-3
    member_configs = [
        TrainConfig(
            **shared,
            lr=lr * (1 + k / 4),
            seed=k,
            dropout=0.2 * (k % 2),
            input_dropout=0.1 * (k // 2),
            weight_decay=1e-3 * k,
        )
        for k in range(4)
    ]
    built = [build(w, c) for w, c in zip(REFILL_WIDTHS, member_configs, strict=True)]
    waiting = [
        packed.Entrant(model, config, state)
        for (model, state), config in zip(built[2:], member_configs[2:], strict=True)
    ]
    asked, ended = [], []

    def refill(free: int) -> list[packed.Entrant]:
        asked.append(free)
        return [waiting.pop(0)] if waiting else []

    def on_epoch(index, record):
        if index == 0:
            raise Pruned("pruned at epoch 1")

    results = train_pack(
        [model for model, _ in built[:2]], member_configs[:2], data.train, data.validation, data.test,
        on_epoch, [state for _, state in built[:2]], refill=refill, on_end=lambda i, _: ended.append(i), slots=2,
    )  # fmt: skip
    assert isinstance(results[0], Pruned) and len(results) == 4
    assert ended == [0, 1, 2, 3] and asked == [1, 1, 1, 1, 2]  # a free slot is offered at every boundary
    for index in (1, 2, 3):
        alone_model, _ = build(REFILL_WIDTHS[index], member_configs[index])
        alone = train(alone_model, data.train, member_configs[index], data.validation, data.test)
        assert [r.epoch for r in results[index].history] == [1, 2, 3]
        assert losses(results[index]) == pytest.approx(losses(alone), rel=RELATIVE)
        assert results[index].test.loss == pytest.approx(alone.test.loss, rel=RELATIVE)
        for packed_param, alone_param in zip(built[index][0].parameters(), alone_model.parameters(), strict=True):
            torch.testing.assert_close(packed_param, alone_param, rtol=RELATIVE, atol=1e-5)


def test_a_refill_is_checked_like_the_pack_it_joins(data):
    config = TrainConfig(epochs=2, batch_size=128, device="cpu")

    def refill_with(entrants):
        return lambda free: entrants

    def prune_first(index, record):
        if index == 0:
            raise Pruned("make room")

    for entrants, message in (
        ([packed.Entrant(build([8, 8], config)[0], config)], "depth"),
        ([packed.Entrant(build([8], config)[0], dataclasses.replace(config, batch_size=64))], "batch_size"),
        ([packed.Entrant(build([8], config)[0], config)] * 2, "2 models for 1 free"),
    ):
        models = [build([8], config)[0], build([8], config)[0]]
        with pytest.raises(ValueError, match=message):
            train_pack(models, [config, config], data.train, on_epoch=prune_first, refill=refill_with(entrants))


@pytest.mark.parametrize(
    ("per_member", "largest", "tried", "sizes"),
    [
        pytest.param(
            {1: 1.0, 2: 0.8, 4: 0.6, 8: 0.58}, 8, [1, 2, 4, 8], (4, 4, 1), id="stops-where-a-doubling-pays-little"
        ),
        pytest.param({1: 1.0, 2: 0.97}, 8, [1, 2], (1, 1, 1), id="alone-where-a-pack-saves-little"),
        pytest.param({1: 1.0, 2: 0.5, 4: 0.25, 6: 0.2}, 6, [1, 2, 4, 6], (6, 6, 6), id="ends-at-the-largest"),
        pytest.param({1: 1.0}, 1, [1], (1, 1, 1), id="largest-one"),
    ],
)
def test_pack_timings_grow_while_doubling_pays_and_give_the_smallest_near_fastest_pack(
    data, monkeypatch, per_member, largest, tried, sizes
):
    monkeypatch.setattr(sizing, "alone_step_timer", lambda *_: Rounds([per_member[1]]))
    monkeypatch.setattr(sizing, "pack_step_timer", lambda model, config, split, k: Rounds([per_member[k] * k]))
    model, _ = build([8], TrainConfig())
    timings = packed.fitting_pack_size(model, TrainConfig(), data.train, largest)
    assert list(timings.step_seconds) == tried
    assert timings.step_seconds == pytest.approx({k: per_member[k] for k in tried})
    assert tuple(timings.size(speedup) for speedup in (1.1, 1.5, 2.0)) == sizes


class Rounds:
    """A step timer whose rounds take these seconds per step, the last repeated."""

    def __init__(self, seconds: list[float]):
        self.seconds = list(seconds)
        self.count = 0

    def round(self) -> float:
        self.count += 1
        return self.seconds.pop(0) if len(self.seconds) > 1 else self.seconds[0]


def test_each_size_keeps_its_fastest_round_and_every_size_is_timed_in_turn(data, monkeypatch):
    timers = {1: Rounds([3.0, 1.0, 1.2]), 2: Rounds([1.6, 1.8, 1.4]), 4: Rounds([4.0])}  # per step of the pack
    monkeypatch.setattr(sizing, "alone_step_timer", lambda *_: timers[1])
    monkeypatch.setattr(sizing, "pack_step_timer", lambda model, config, split, k: timers[k])
    model, _ = build([8], TrainConfig())
    timings = packed.fitting_pack_size(model, TrainConfig(), data.train, 8)
    # The first rounds grow the pack to 4, whose members' steps cost no less than at 2; the fastest rounds
    # then make packing pay less than the slow first round of training alone had said.
    assert timings.step_seconds == pytest.approx({1: 1.0, 2: 0.7, 4: 1.0})
    assert [timer.count for timer in timers.values()] == [packed.SIZING_ROUNDS] * 3
    assert timings.size(1.5) == 1 and timings.size(1.1) == 2


def test_a_step_timer_warms_up_then_times_rounds_within_the_epoch(monkeypatch):
    """On a clock that only the steps move (2 ms each), a round gives exactly the seconds per step."""
    calls = []
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(
        sys.modules[packed.StepTimer.__module__], "time", types.SimpleNamespace(perf_counter=lambda: clock.now)
    )

    def step():
        calls.append(1)
        clock.now += 0.002

    timer = packed.StepTimer(step, 120, torch.device("cpu"))
    first = timer.round()
    assert len(calls) >= packed.WARM_UP_STEPS + 1
    assert first == pytest.approx(0.002)
    seconds = [timer.round() for _ in range(60)]
    assert timer.taken == len(calls) == 120  # never past the epoch's steps
    assert seconds[-1] == float("inf") and all(s == pytest.approx(0.002) for s in seconds if s != float("inf"))


def test_measuring_pack_sizes_changes_neither_the_model_nor_the_random_streams(data):
    config = TrainConfig(batch_size=64, dropout=0.2, input_dropout=0.1, seed=3)
    model, _ = build([24, 16], config)
    before = [p.detach().clone() for p in model.parameters()]
    state = torch.get_rng_state()
    timings = packed.fitting_pack_size(model, config, data.train, 4)
    assert 1 in timings.step_seconds and set(timings.step_seconds) <= {1, 2, 4}
    assert all(seconds > 0 for seconds in timings.step_seconds.values())
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert all(p.grad is None for p in model.parameters())


class EagerGraph:
    """Stands in for a CUDA graph on the CPU: capture keeps the step without running it, replay runs it, and
    the generators registered with it are kept."""

    def __init__(self):
        self.replays = 0
        self.generators = []

    def register_generator(self, generator):
        self.generators.append(generator)

    def capture(self, step):
        self.step = step

    def replay(self):
        self.replays += 1
        self.step()


@pytest.fixture
def stand_in_graphs(monkeypatch):
    """Packs on the CPU capture and replay their steps as on CUDA, through EagerGraphs: the list of them."""
    made = []

    def new_graph(device):
        made.append(EagerGraph())
        return made[-1]

    monkeypatch.setattr(graphs, "captures_steps", lambda device: True)
    monkeypatch.setattr(graphs, "new_graph", new_graph)
    return made


def graph_members(data):
    """Adam and SGD with momentum, a schedule and weight decay: every coefficient a captured step reads;
    and Adam with dropout and input dropout, on, off and mixed: every member's own masks."""
    return {
        "adam": list(zip([[24, 16], [16, 32], [8, 8]], configs(
            {"optimizer": "adam", "schedule": "cosine"},
            {"lr": 1e-3, "seed": 1}, {"lr": 3e-3, "seed": 2, "weight_decay": 1e-3}, {"lr": 2e-3, "seed": 3}),
            strict=True)),
        "sgd-onecycle": list(zip([[16], [24]], configs(
            {"optimizer": "sgd", "momentum": 0.9, "schedule": "onecycle"},
            {"lr": 0.05, "seed": 4}, {"lr": 0.02, "seed": 5, "weight_decay": 1e-4}), strict=True)),
        "adam-dropout": list(zip([[24, 16], [16, 32], [8, 8]], configs(
            {"optimizer": "adam", "schedule": "cosine"},
            {"lr": 1e-3, "seed": 1, "dropout": 0.2}, {"lr": 3e-3, "seed": 2, "input_dropout": 0.1, "dropout": 0.1},
            {"lr": 2e-3, "seed": 3}), strict=True)),
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["adam", "sgd-onecycle", "adam-dropout"])
def test_a_replayed_step_trains_as_the_step_itself(data, stand_in_graphs, kind):
    members = graph_members(data)[kind]
    replayed, _ = run_pack(members, data)
    full_batches = len(data.train) // 128
    assert len(stand_in_graphs) == 1  # one layout, captured once
    assert stand_in_graphs[0].replays == 2 * full_batches - packed.GRAPH_WARM_UP_STEPS
    # the members that draw masks, and only they, have their generators registered with the graph
    assert len(stand_in_graphs[0].generators) == sum(bool(c.dropout or c.input_dropout) for _, c in members)
    for (widths, config), result in zip(members, replayed, strict=True):
        alone_model, _ = build(widths, config)
        alone = train(alone_model, data.train, config, data.validation, data.test)
        assert losses(result) == pytest.approx(losses(alone), rel=RELATIVE)


def test_without_generators_in_graphs_a_dropout_pack_runs_its_steps_as_they_are(data, stand_in_graphs, monkeypatch):
    monkeypatch.setattr(graphs, "graphs_take_generators", lambda: False)
    members = graph_members(data)
    results, _ = run_pack(members["adam-dropout"], data)
    assert all(len(result.history) == 2 for result in results)
    assert stand_in_graphs == []
    run_pack(members["adam"], data)
    assert len(stand_in_graphs) == 1  # a pack without dropout still replays


def test_this_torch_takes_generators_in_its_cuda_graphs():
    """The real check behind the fallback above: torch 2.9 and later have CUDAGraph.register_generator_state."""
    assert graphs.graphs_take_generators()


def test_a_capture_that_fails_leaves_the_pack_without_a_graph(data, monkeypatch):
    failing = []

    class FailingGraph(EagerGraph):
        def capture(self, step):
            failing.append(self)
            raise RuntimeError("capture failed")

    monkeypatch.setattr(graphs, "captures_steps", lambda device: True)
    monkeypatch.setattr(graphs, "new_graph", lambda device: FailingGraph())
    (widths, config), *_ = graph_members(data)["adam"]
    pack = Pack.build([build(widths, config)[0]], [config], data.train)
    with pytest.raises(RuntimeError, match="capture failed"):
        pack.train_epoch(data.train)
    assert pack.graph is None and len(failing) == 1


def test_a_graph_replays_only_on_the_inputs_it_was_captured_on(data, stand_in_graphs):
    (widths, config), *_ = graph_members(data)["adam"]
    pack = Pack.build([build(widths, config)[0]], [config], data.train)
    pack.train_epoch(data.train)
    graph = pack.graph
    assert graph is not None and graph.source is pixel_bytes(data.train.x)
    other = type(data.train)(data.train.x.clone(), data.train.y)  # the same values in another tensor
    with pytest.raises(RuntimeError, match="inputs it gathered from"):
        graph.run(pixel_bytes(other.x), graph.rows, graph.labels)
    pack.train_epoch(other)  # captured again, on the other inputs
    assert len(stand_in_graphs) == 2 and pack.graph.source is pixel_bytes(other.x)


def test_a_pack_step_timer_times_replays_after_its_capture(data, stand_in_graphs):
    (widths, config), *_ = graph_members(data)["adam"]
    timer = packed.pack_step_timer(build(widths, config)[0], config, data.train, 2)
    assert timer.warm_up_steps > packed.GRAPH_WARM_UP_STEPS
    timer.round()
    assert len(stand_in_graphs) == 1
    warm_up_replays = timer.warm_up_steps - packed.GRAPH_WARM_UP_STEPS
    assert stand_in_graphs[0].replays >= warm_up_replays + 1  # a timed step at least, after the warm-up's


def test_a_pack_step_timer_takes_epochs_longer_than_its_steps(data):
    """An epoch of more steps than a timer takes (SIZING_STEPS) loads its coefficients as the timer's pack did."""
    config = TrainConfig(epochs=2, batch_size=1, optimizer="adam", lr=1e-3, seed=1, device="cpu")
    assert len(data.train) > packed.SIZING_STEPS
    timer = packed.pack_step_timer(build([8], config)[0], config, data.train, 2)
    assert 0 < timer.round() < float("inf")


@pytest.mark.parametrize("size", [1, 2])
def test_full_batch_steps_are_timed_over_epochs_after_a_warm_up(data, size):
    config = TrainConfig(epochs=2, batch_size=0, optimizer="sgd", lr=0.1, seed=1, device="cpu")
    split = type(data.train)(data.train.x[:256], data.train.y[:256])
    model, _ = build([16], config)
    timer = (
        packed.alone_step_timer(model, config, split) if size == 1 else packed.pack_step_timer(model, config, split, 2)
    )
    seconds = [timer.round() for _ in range(packed.SIZING_ROUNDS)]
    assert all(0 < s < float("inf") for s in seconds)  # each round a real step: an epoch of one
    assert timer.taken >= timer.warm_up_steps + packed.SIZING_ROUNDS


def test_a_dropout_state_of_another_device_is_refused(data):
    (config,) = configs({"optimizer": "adam"}, {"lr": 1e-3, "seed": 1, "dropout": 0.2})
    model, state = build([16], config)
    assert state.numel() == torch.Generator().get_state().numel()
    cuda_sized = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: its seed and offset
    with pytest.raises(ValueError, match=r"not 16 torch.uint8 values: pass torch.get_rng_state\(\)"):
        train_pack([model], [config], data.train, dropout_states=[cuda_sized])
    with pytest.raises(ValueError, match="generator state of 5,056 bytes"):
        train_pack([model], [config], data.train, dropout_states=[state.float()])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("kind", ["adam", "adam-dropout"])
def test_on_cuda_a_replayed_step_trains_as_the_step_itself(mnist_root, monkeypatch, kind):
    cuda_data = load_data(str(mnist_root), device="cuda", limit=2000)
    members = [(widths, dataclasses.replace(config, device="cuda")) for widths, config in graph_members(None)[kind]]
    replayed, _ = run_pack(members, cuda_data)
    monkeypatch.setattr(graphs, "captures_steps", lambda device: False)
    as_is, _ = run_pack(members, cuda_data)
    for first, second in zip(as_is, replayed, strict=True):
        assert losses(first) == pytest.approx(losses(second), rel=1e-4)
    for (widths, config), result in zip(members, replayed, strict=True):  # dropout masks too: each member's own
        alone_model, _ = build(widths, config)
        alone = train(alone_model, cuda_data.train, config, cuda_data.validation, cuda_data.test)
        assert losses(result) == pytest.approx(losses(alone), rel=1e-3)  # a GPU's products round by their shapes


REPO = Path(__file__).resolve().parent.parent
ENGINE_BENCHMARKS = ("ablation", "pack_ceiling", "pack_size", "packing")  # bench/gpu_checks.sh runs these where
# there is no Optuna


@pytest.mark.parametrize("name", [*ENGINE_BENCHMARKS, "pack_search"])
def test_the_engine_benchmarks_start_without_optuna(name):
    code = (
        "import importlib, sys\n"
        "sys.modules['optuna'] = None  # importing it raises, as where it is not installed\n"
        f"importlib.import_module('bench.{name}')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('search.study', 'search.api', 'search.cli'))))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    if name not in ENGINE_BENCHMARKS:  # a benchmark of the studies needs Optuna: the block above is real
        assert run.returncode != 0 and "optuna" in run.stderr
        return
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_without_foreach_copies_the_write_back_copies_each_tensor(data, monkeypatch):
    """torch._foreach_copy_ is private: write_back falls back to one copy per tensor, to the same weights."""
    widths, member_configs = CASES["three-adam-cosine-relu-dropout-depth3"]
    members = list(zip(widths, member_configs, strict=True))
    _, with_foreach = run_pack(members, data)
    monkeypatch.delattr(torch, "_foreach_copy_")
    _, without = run_pack(members, data)
    for first, second in zip(with_foreach, without, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
