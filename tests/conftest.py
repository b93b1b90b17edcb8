"""Shared fixtures: the real MNIST root, and the installed `archsearch` entry point."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINT = Path(sys.executable).with_name("archsearch")


def real_data_root() -> Path | None:
    for candidate in (os.environ.get("ARCHSEARCH_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = real_data_root()
    if root is None:
        pytest.fail("real MNIST not found: set ARCHSEARCH_DATA to a folder holding MNIST/raw (CI sets ../shared/data)")
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """Synthetic digits in MNIST's gz layout (enough for the 10,000-image validation split):
    class c lights up pixel rows 2c..2c+2, so small nets learn it in a few steps."""
    rng = np.random.default_rng(0)
    tmp_path = tmp_path_factory.mktemp("data")
    raw = tmp_path / "tiny" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", 12_000), ("t10k", 300)):
        labels = rng.integers(0, 10, count)
        images = rng.integers(0, 60, (count, 28, 28))
        for index, label in enumerate(labels):
            images[index, label * 2 : label * 2 + 3, :] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path / "tiny"


def archsearch(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run the installed console script, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(ENTRY_POINT), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )
