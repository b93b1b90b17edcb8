"""Subnormal floats are flushed to zero where archsearch trains: in torch's threads, made while the data is
loaded, and in the thread that trains, alone or packed, which gets its own mode back afterwards.

The speed this buys is measured by bench/denormals.py, not here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from models.mlp import build_mlp
from search.engine import denormals
from search.engine.config import TrainConfig
from search.engine.data import load_data
from search.engine.denormals import SUBNORMAL, denormals_flushed, flushing
from search.engine.packed import train_pack
from search.engine.trainer import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(epochs=2, batch_size=64, device="cpu")


@pytest.fixture(autouse=True)
def mode_off():
    """Each test starts without the flush in this thread, and leaves it as it found it."""
    before = flushing()
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(before)


@pytest.fixture(scope="module")
def data(tiny_mnist):
    return load_data(str(tiny_mnist), "mnist", "cpu", limit=300)


needs_mode = pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormals")


@needs_mode
def test_the_probe_sees_the_mode():
    torch.set_flush_denormal(True)
    assert flushing()
    assert (torch.full((1,), SUBNORMAL) * 1.0).item() == 0.0
    torch.set_flush_denormal(False)
    assert not flushing()
    assert (torch.full((1,), SUBNORMAL) * 1.0).item() > 0.0


def python_sees_subnormals() -> bool:
    """What a library that checks IEEE floats sees (hypothesis refuses to run without subnormals)."""
    tiny = float("5e-324")
    return tiny * 3.0 > 0.0


@needs_mode
def test_loading_the_data_leaves_this_threads_mode_as_it_was(tiny_mnist):
    load_data(str(tiny_mnist), "mnist", "cpu", limit=299)
    assert not flushing()
    assert python_sees_subnormals()


@needs_mode
def test_training_alone_flushes_in_its_thread_and_puts_it_back(data):
    seen = []
    torch.manual_seed(CONFIG.seed)
    model = build_mlp([16], CONFIG.activation)
    train(model, data.train, CONFIG, data.validation, on_epoch=lambda record: seen.append(flushing()))
    assert seen == [True, True]
    assert not flushing()
    assert python_sees_subnormals()


@needs_mode
def test_a_pruned_training_puts_the_mode_back(data):
    def prune(record):
        raise RuntimeError("pruned")

    torch.manual_seed(CONFIG.seed)
    with pytest.raises(RuntimeError, match="pruned"):
        train(build_mlp([16], CONFIG.activation), data.train, CONFIG, data.validation, on_epoch=prune)
    assert not flushing()


@needs_mode
def test_a_pack_flushes_in_its_thread_and_puts_it_back(data):
    seen = []
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_mlp([16], CONFIG.activation))
    configs = [CONFIG, CONFIG]
    train_pack(models, configs, data.train, data.validation, on_epoch=lambda index, r: seen.append(flushing()))
    assert seen == [True] * 4
    assert not flushing()


@needs_mode
def test_a_mode_set_before_is_left_set():
    torch.set_flush_denormal(True)
    with denormals_flushed():
        assert flushing()
    assert flushing()


THREADS_CHECK = textwrap.dedent(
    """
    import sys, torch
    from search.engine.data import load_data
    torch.set_num_threads(2)
    if sys.argv[2] == "threads first":
        torch.ones(1 << 20).mul_(2.0)  # a parallel operation: torch makes its threads now, before the flush
    load_data(sys.argv[1], "mnist", "cpu", limit=300)
    torch.set_flush_denormal(True)  # this thread's, for certain: what is checked is torch's other threads
    tiny = torch.ones(1 << 22, dtype=torch.int32).view(torch.float32)  # the least subnormal, as bits: no rounding
    product = tiny * 2.0  # split across both threads
    print(int((product != 0).sum()))
    """
)


@needs_mode
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="torch makes no threads of its own on one core")
def test_torchs_threads_made_while_the_data_loads_flush_too(tiny_mnist):
    def unflushed(order: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", THREADS_CHECK, str(tiny_mnist), order],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return int(done.stdout.strip())

    assert unflushed("data first") == 0  # as every archsearch process trains
    assert unflushed("threads first") > 0  # the check sees a thread without the mode: a session's own torch work


def test_a_cpu_without_the_mode_trains_to_the_same_losses(data, monkeypatch):
    """A healthy network is far from subnormal values: with the flush or without it (a CPU that lacks the
    mode), it trains to the same losses."""

    def losses() -> list[float]:
        torch.manual_seed(CONFIG.seed)
        result = train(build_mlp([16], CONFIG.activation), data.train, CONFIG, data.validation)
        return [r.train_loss for r in result.history] + [result.validation.loss]

    flushed = losses()
    asked = []
    monkeypatch.setattr(denormals.torch, "set_flush_denormal", lambda mode: asked.append(mode) or False)
    with denormals_flushed():
        assert not flushing()
    assert losses() == flushed
    assert asked and set(asked) == {True}  # asked, refused, and nothing to put back
