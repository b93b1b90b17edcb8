"""MNIST-format datasets as device tensors, preprocessed as the original study did."""

from __future__ import annotations

import functools
import gzip
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.budget import CLASSES, INPUTS
from models.catalog import DATASET_FOLDERS, VALIDATION_SIZE
from search.engine.denormals import denormals_flushed
from search.errors import UsageError, argument

DATASETS = DATASET_FOLDERS
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEFAULT_ROOT = "./data"
IMAGE_SIDE = math.isqrt(INPUTS)
IDX_UNSIGNED_BYTE = 0x08
# A pixel byte p is the input p / PIXEL_LEVELS - PIXEL_OFFSET: 0 to 255 become -0.5 to 0.5.
PIXEL_LEVELS = 255
PIXEL_OFFSET = 0.5
IDX_DIMS = {"images": 3, "labels": 1}  # (N, 28, 28) and (N,); the IDX magic is 0x0800 + this


def data_root(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("ARCHSEARCH_DATA") or DEFAULT_ROOT)


@dataclass(frozen=True)
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Data:
    """The train/validation split of the training set, the test set, and the full training set (for the
    baseline and a retrain), which goes to the device only when first used: a search never trains on it,
    and on a GPU each worker would hold another copy of its 60,000 images."""

    train: Split
    validation: Split
    test: Split
    full: Callable[[], Split] = field(repr=False, compare=False)

    @functools.cached_property
    def train_full(self) -> Split:
        return self.full()


class _DamagedFile(ValueError):
    """What is wrong with one IDX file; `_read_checked` adds the dataset, the path and the fix."""


def _read_idx(path: Path, kind: str) -> np.ndarray:
    """Parse an IDX file of `kind` ("images" or "labels"), gzip-compressed or not, refusing any that is not one.

    Written by hand because torchvision's MNIST only reads uncompressed files and extracts the
    archives into the root first, which fails on a read-only root (a shared, read-only copy of the data).
    Every header field is checked, because a wrong one otherwise surfaces as a numpy traceback or,
    worse, as an index error inside a training trial.

    Reading stops at the length the header declares plus one byte: a small archive that inflates to
    gigabytes (a gzip bomb) is refused after that much, never inflated in full.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    dims = IDX_DIMS[kind]
    header_size = 4 + 4 * dims
    try:
        with opener(path, "rb") as handle:
            raw = bytearray(handle.read(header_size))
            shape, declared = _checked_header(raw, kind)
            raw += _read_at_most(handle, declared + 1)  # writable, so torch can wrap the pixels without a copy
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise _DamagedFile(f"it is not a complete gzip archive ({_one_line(error)})") from None
    payload = len(raw) - header_size
    described = f"{'x'.join(map(str, shape))} = {declared:,} bytes" if dims > 1 else f"{declared:,} bytes"
    if payload < declared:
        raise _DamagedFile(f"it is truncated: its header declares {described} of data, the file holds {payload:,}")
    if payload > declared:
        raise _DamagedFile(f"it has trailing data after the {described} its header declares")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)
    if kind == "labels" and len(array) and array.max() >= CLASSES:
        raise _DamagedFile(f"it holds labels outside 0..{CLASSES - 1} (found {array.max()})")
    return array


def _checked_header(raw: bytearray, kind: str) -> tuple[tuple[int, ...], int]:
    """The shape an IDX header of `kind` declares and its data's length in bytes, once every field is checked."""
    if not raw:
        raise _DamagedFile("the file is empty")
    if len(raw) < 4:
        raise _DamagedFile(f"it is {len(raw)} bytes long, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] or raw[1]:
        raise _DamagedFile(f"it has no IDX header (it starts with 0x{magic:08x}, not 0x0000)")
    if raw[2] != IDX_UNSIGNED_BYTE:
        raise _DamagedFile(f"its IDX data type is 0x{raw[2]:02x}, not 0x{IDX_UNSIGNED_BYTE:02x} (unsigned bytes)")
    dims = IDX_DIMS[kind]
    if raw[3] != dims:
        found = {count: other for other, count in IDX_DIMS.items()}.get(raw[3], f"{raw[3]}-D data")
        raise _DamagedFile(f"it holds {found}, not {kind} (IDX magic 0x{magic:08x}, expected 0x{0x800 + dims:08x})")
    header_size = 4 + 4 * dims
    if len(raw) < header_size:
        raise _DamagedFile(f"it is truncated inside its header ({len(raw)} of {header_size} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if kind == "images" and shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise _DamagedFile(f"it holds images of {shape[1]}x{shape[2]} pixels, not {IMAGE_SIDE}x{IMAGE_SIDE}")
    return shape, math.prod(shape)


def _read_at_most(handle, limit: int, chunk: int = 1 << 20) -> bytearray:
    """Up to `limit` bytes, read a chunk at a time: a header may declare terabytes the file does not hold."""
    data = bytearray()
    while len(data) < limit:
        piece = handle.read(min(chunk, limit - len(data)))
        if not piece:
            break
        data += piece
    return data


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def _find(raw_dir: Path, name: str) -> Path | None:
    for candidate in (raw_dir / name, raw_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(root: Path, dataset: str) -> None:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, DATASETS[dataset])
    raw = root / DATASETS[dataset] / "raw"
    missing = [folder for folder in (raw, *raw.parents) if not folder.exists()]
    try:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as error:  # any network or filesystem failure means: put the files there
        for folder in missing:  # leave no empty folders behind from the failed attempt
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        names = ", ".join(f"{n}.gz" for pair in RAW_FILES.values() for n in pair)
        raise UsageError(
            f"{dataset} not found in {raw} and could not be downloaded ({type(error).__name__}); "
            f"put {names} there, or pass {argument('data_dir')} / set ARCHSEARCH_DATA to a folder that has them"
        ) from None


@functools.lru_cache(maxsize=4)
def _load_arrays(root: str, dataset: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    raw_dir = Path(root) / DATASETS[dataset] / "raw"
    if any(_find(raw_dir, n) is None for pair in RAW_FILES.values() for n in pair):
        _download(Path(root), dataset)
    arrays = {}
    for split, names in RAW_FILES.items():
        images_path, labels_path = (_find(raw_dir, name) for name in names)
        arrays[split] = (
            _read_checked(images_path, "images", dataset),
            _read_checked(labels_path, "labels", dataset),
        )
        _check_counts(split, arrays[split], images_path, labels_path, dataset)
    return arrays


def _read_checked(path: Path, kind: str, dataset: str) -> np.ndarray:
    """`_read_idx`, with any failure as one line that names the file and what to do about it."""
    try:
        return _read_idx(path, kind)
    except _DamagedFile as damage:
        raise UsageError(f"cannot read {dataset} file {path}: {damage}; replace it with the original file") from None
    except OSError as error:  # not damage, so replacing the file is not the fix
        reason = error.strerror or _one_line(error)
        raise UsageError(f"cannot read {dataset} file {path}: {reason}; check that it is readable") from None


def _check_counts(
    split: str, arrays: tuple[np.ndarray, np.ndarray], images_path: Path, labels_path: Path, dataset: str
) -> None:
    """Pairs the files, and leaves the training split something besides the validation split.

    Checked here rather than left to training, where a mismatch shows up as an index error mid-trial."""
    images, labels = arrays
    if len(images) != len(labels):
        raise UsageError(
            f"cannot read {dataset} file {labels_path}: it holds {len(labels):,} labels but {images_path} holds "
            f"{len(images):,} images; replace both with the original files"
        )
    if split == "train" and len(images) <= VALIDATION_SIZE:
        raise UsageError(
            f"cannot read {dataset} file {images_path}: it holds {len(images):,} training images, but at least "
            f"{VALIDATION_SIZE + 1:,} are needed ({VALIDATION_SIZE:,} for validation and one or more to train on); "
            "replace it with the original file"
        )
    if not len(images):
        raise UsageError(
            f"cannot read {dataset} file {images_path}: it holds no {split} images; replace it with the original file"
        )


def _rows(images: np.ndarray, labels: np.ndarray, index: torch.Tensor, device: torch.device) -> Split:
    """The chosen rows as pixels/255 - 0.5, flattened, and int64 labels, on the device.

    Rows are picked before the conversion to float, so a quick run with a small `limit` converts only
    what it keeps."""
    x = torch.from_numpy(images.reshape(len(images), -1))[index]
    y = torch.from_numpy(labels.astype(np.int64))[index]
    return Split(scaled_pixels(x.to(device=device, dtype=torch.float32)), y.to(device))


def scaled_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Float pixel bytes p, in place, as the inputs every model here trains on: p / 255 - 0.5."""
    return pixels.div_(float(PIXEL_LEVELS)).sub_(PIXEL_OFFSET)


def load_data(
    root: str | None = None, dataset: str = "mnist", device: str = "cpu", split_seed: int = 0, limit: int | None = None
) -> Data:
    """Loaded once per process and kept on the device; `limit` trims every split for quick runs. Kept by the
    folder it was read from, resolved first: a process that changes ARCHSEARCH_DATA between calls (a notebook)
    reads the new folder, not the data of the old one."""
    return _load_data(str(data_root(root)), dataset, device, split_seed, limit)


@functools.lru_cache(maxsize=8)
@denormals_flushed()  # torch makes its threads for the first parallel work here: search/engine/denormals.py
def _load_data(root: str, dataset: str, device: str, split_seed: int, limit: int | None) -> Data:
    arrays = _load_arrays(root, dataset)
    train_size, test_size = len(arrays["train"][1]), len(arrays["test"][1])
    order = torch.randperm(train_size, generator=torch.Generator().manual_seed(split_seed))
    indices = [torch.arange(train_size), order[VALIDATION_SIZE:], order[:VALIDATION_SIZE], torch.arange(test_size)]
    if limit:
        indices = [index[:limit] for index in indices]
    full_index, train_index, validation_index, test_index = indices
    torch_device = torch.device(device)
    return Data(
        full=functools.partial(_rows, *arrays["train"], full_index, torch_device),
        train=_rows(*arrays["train"], train_index, torch_device),
        validation=_rows(*arrays["train"], validation_index, torch_device),
        test=_rows(*arrays["test"], test_index, torch_device),
    )
