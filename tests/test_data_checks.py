"""Damaged MNIST files are refused at load time with one line that names the file, what is wrong and the fix.

Each case writes a data root of small synthetic files, all valid but one. Roots are distinct per case
because `load_data` and `_load_arrays` are cached by root.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from search.engine.data import VALIDATION_SIZE, load_data
from search.errors import UsageError
from tests.conftest import archsearch

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
TRAIN_COUNT = VALIDATION_SIZE + 1  # the fewest that leave one image to train on
TEST_COUNT = 200


def idx(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    """An IDX file's bytes, uncompressed; unlike conftest's `write_idx`, the type byte can be wrong."""
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def images(count: int, side: int = 28) -> np.ndarray:
    return np.arange(count * side * side).reshape(count, side, side) % 256


def labels(count: int) -> np.ndarray:
    return np.arange(count) % 10


@functools.cache
def valid_files() -> dict[str, bytes]:
    """The four files of a root that loads, made once: the training images are the slow part."""
    return {
        TRAIN_IMAGES: gzip.compress(idx(images(TRAIN_COUNT)), compresslevel=1),
        TRAIN_LABELS: gzip.compress(idx(labels(TRAIN_COUNT))),
        TEST_IMAGES: gzip.compress(idx(images(TEST_COUNT))),
        TEST_LABELS: gzip.compress(idx(labels(TEST_COUNT))),
    }


@dataclass(frozen=True)
class Damage:
    """`file` of an otherwise valid root replaced by `content`, and any `consistent` files that go with it.

    A name without .gz is stored uncompressed. `build` returns the path the message must name."""

    file: str
    content: Callable[[], bytes]
    reason: str
    consistent: dict[str, Callable[[], bytes]] = field(default_factory=dict)

    def build(self, root: Path) -> Path:
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        replaced = {self.file: self.content, **self.consistent}
        stems = {name.removesuffix(".gz") for name in replaced}
        for name, content in valid_files().items():
            if name.removesuffix(".gz") not in stems:
                (raw / name).write_bytes(content)
        for name, content in replaced.items():
            (raw / name).write_bytes(content())
        return raw / self.file


def gz(content: bytes) -> Callable[[], bytes]:
    return lambda: gzip.compress(content)


def out_of_range_labels() -> np.ndarray:
    damaged = labels(TEST_COUNT)
    damaged[17] = 11
    return damaged


CASES = {
    "counts-differ": Damage(TEST_LABELS, gz(idx(labels(TEST_COUNT - 1))), "holds 199 labels but"),
    "labels-out-of-range": Damage(TEST_LABELS, gz(idx(out_of_range_labels())), "labels outside 0..9 (found 11)"),
    "labels-out-of-range-uncompressed": Damage(
        TEST_LABELS.removesuffix(".gz"), lambda: idx(out_of_range_labels()), "labels outside 0..9 (found 11)"
    ),
    "labels-in-images-slot": Damage(
        TRAIN_IMAGES, gz(idx(labels(TRAIN_COUNT))), "holds labels, not images (IDX magic 0x00000801"
    ),
    "images-in-labels-slot": Damage(TEST_LABELS, gz(idx(images(TEST_COUNT))), "holds images, not labels"),
    "two-dimensional-images": Damage(TEST_IMAGES, gz(idx(np.zeros((TEST_COUNT, 784)))), "holds 2-D data, not images"),
    "too-few-training-images": Damage(
        TRAIN_IMAGES,
        gz(idx(images(VALIDATION_SIZE))),
        "holds 10,000 training images, but at least 10,001 are needed",
        consistent={TRAIN_LABELS: gz(idx(labels(VALIDATION_SIZE)))},
    ),
    "no-test-images": Damage(
        TEST_IMAGES, gz(idx(images(0))), "holds no test images", consistent={TEST_LABELS: gz(idx(labels(0)))}
    ),
    "images-not-28x28": Damage(TEST_IMAGES, gz(idx(images(TEST_COUNT, side=32))), "images of 32x32 pixels, not 28x28"),
    "payload-truncated": Damage(
        TEST_IMAGES,
        gz(idx(images(TEST_COUNT))[:-1000]),
        "truncated: its header declares 200x28x28 = 156,800 bytes of data, the file holds 155,800",
    ),
    "header-truncated": Damage(TEST_LABELS, gz(b"\x00\x00\x08\x01\x00\x00"), "truncated inside its header"),
    "gzip-stream-truncated": Damage(
        TRAIN_LABELS, lambda: valid_files()[TRAIN_LABELS][:-20], "not a complete gzip archive"
    ),
    "not-gzip": Damage(TEST_IMAGES, lambda: b"this is not gzip data", "not a complete gzip archive"),
    "wrong-magic": Damage(TEST_LABELS, gz(b"\x12\x34" + idx(labels(TEST_COUNT))[2:]), "has no IDX header"),
    "wrong-type-byte": Damage(
        TEST_IMAGES, gz(idx(images(TEST_COUNT), type_byte=0x0D)), "IDX data type is 0x0d, not 0x08"
    ),
    "trailing-data": Damage(
        TEST_LABELS,
        gz(idx(labels(TEST_COUNT)) + b"\x01" * 7),
        "trailing data after the 200 bytes its header declares",
    ),
    "empty-gzip-file": Damage(TEST_IMAGES, lambda: b"", "the file is empty"),
    "empty-uncompressed-file": Damage(TEST_IMAGES.removesuffix(".gz"), lambda: b"", "the file is empty"),
}


@pytest.mark.parametrize("damage", CASES.values(), ids=CASES.keys())
def test_damaged_file_is_named_with_the_reason(damage: Damage, tmp_path):
    path = damage.build(tmp_path)
    with pytest.raises(UsageError) as error:
        load_data(str(tmp_path), "mnist", "cpu")
    message = str(error.value)
    assert message.startswith(f"cannot read mnist file {path}: "), message
    assert damage.reason in message
    assert "replace" in message and "\n" not in message


@pytest.mark.parametrize("case", ["labels-out-of-range", "counts-differ", "not-gzip"])
def test_damaged_data_stops_the_cli_with_one_line(case: str, tmp_path):
    path = CASES[case].build(tmp_path)
    result = archsearch("baseline", "--data-dir", str(tmp_path), "--epochs", "1", "--device", "cpu")
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("archsearch: error: cannot read mnist file"), result.stderr
    assert str(path) in lines[0] and CASES[case].reason in lines[0]


def test_real_data_still_loads(mnist_root):
    data = load_data(str(mnist_root), "mnist", "cpu")
    assert tuple(data.train_full.x.shape) == (60_000, 784) and tuple(data.test.x.shape) == (10_000, 784)
    assert (len(data.train), len(data.validation)) == (50_000, VALIDATION_SIZE)
    assert data.train_full.y.min().item() == 0 and data.train_full.y.max().item() == 9
