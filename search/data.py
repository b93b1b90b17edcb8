"""MNIST-format datasets as device tensors, preprocessed as the original study did."""

from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search.errors import UsageError

DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEFAULT_ROOT = "./data"
VALIDATION_SIZE = 10_000


def data_root(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("ARCHSEARCH_DATA") or DEFAULT_ROOT)


@dataclass(frozen=True)
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, count: int) -> Split:
        return Split(self.x[:count], self.y[:count])


@dataclass(frozen=True)
class Data:
    """The full training set (for the baseline), its train/validation split, and the test set."""

    train_full: Split
    train: Split
    validation: Split
    test: Split


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file, gzip-compressed or not.

    Written by hand because torchvision's MNIST only reads uncompressed files and extracts the
    archives into the root first, which fails on a read-only root such as ../shared/data.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = bytearray(handle.read())  # writable, so torch can wrap the pixels without a copy or a warning
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


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
            f"put {names} there, or pass --data-dir / set ARCHSEARCH_DATA to a folder that has them"
        ) from None


@functools.lru_cache(maxsize=4)
def _load_arrays(root: str, dataset: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    raw_dir = Path(root) / DATASETS[dataset] / "raw"
    if any(_find(raw_dir, n) is None for pair in RAW_FILES.values() for n in pair):
        _download(Path(root), dataset)
    arrays = {}
    for split, (images, labels) in RAW_FILES.items():
        try:
            arrays[split] = (_read_idx(_find(raw_dir, images)), _read_idx(_find(raw_dir, labels)))
        except (OSError, EOFError, ValueError, IndexError) as error:
            raise UsageError(f"cannot read {dataset} from {raw_dir}: {error}; replace the damaged files") from None
    return arrays


def _rows(images: np.ndarray, labels: np.ndarray, index: torch.Tensor, device: torch.device) -> Split:
    """The chosen rows as pixels/255 - 0.5, flattened, and int64 labels, on the device.

    Rows are picked before the conversion to float, so a quick run with a small `limit` converts only
    what it keeps."""
    x = torch.from_numpy(images.reshape(len(images), -1))[index]
    y = torch.from_numpy(labels.astype(np.int64))[index]
    return Split(x.to(device=device, dtype=torch.float32).div_(255.0).sub_(0.5), y.to(device))


@functools.lru_cache(maxsize=8)
def load_data(
    root: str | None = None, dataset: str = "mnist", device: str = "cpu", split_seed: int = 0, limit: int | None = None
) -> Data:
    """Loaded once per process and kept on the device; `limit` trims every split for quick runs."""
    arrays = _load_arrays(str(data_root(root)), dataset)
    train_size, test_size = len(arrays["train"][1]), len(arrays["test"][1])
    order = torch.randperm(train_size, generator=torch.Generator().manual_seed(split_seed))
    indices = [torch.arange(train_size), order[VALIDATION_SIZE:], order[:VALIDATION_SIZE], torch.arange(test_size)]
    if limit:
        indices = [index[:limit] for index in indices]
    full_index, train_index, validation_index, test_index = indices
    torch_device = torch.device(device)
    return Data(
        train_full=_rows(*arrays["train"], full_index, torch_device),
        train=_rows(*arrays["train"], train_index, torch_device),
        validation=_rows(*arrays["train"], validation_index, torch_device),
        test=_rows(*arrays["test"], test_index, torch_device),
    )
