from pathlib import Path

import pytest
import torch

from models.budget import INPUTS
from search.engine import data as data_module
from search.engine.data import _load_data, load_data
from search.errors import UsageError


def snapshot(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def test_reads_gzip_only_root_without_writing(tiny_mnist):
    before = snapshot(tiny_mnist)
    data = load_data(str(tiny_mnist), "mnist", "cpu")
    assert snapshot(tiny_mnist) == before
    assert len(data.train_full) == 12_000
    assert (len(data.train), len(data.validation), len(data.test)) == (2_000, 10_000, 300)
    assert data.train.x.shape[1] == INPUTS and data.train.x.dtype == torch.float32
    assert data.train.x.min() >= -0.5 and data.train.x.max() <= 0.5


def test_split_is_seeded_and_disjoint(tiny_mnist):
    first = load_data(str(tiny_mnist), "mnist", "cpu", split_seed=1)
    again = _load_data.__wrapped__(str(tiny_mnist), "mnist", "cpu", 1, None)
    other = load_data(str(tiny_mnist), "mnist", "cpu", split_seed=2)
    assert torch.equal(first.validation.x, again.validation.x)
    assert not torch.equal(first.validation.x, other.validation.x)
    train_rows = {row.numpy().tobytes() for row in first.train.x}
    validation_rows = {row.numpy().tobytes() for row in first.validation.x}
    assert len(train_rows) + len(validation_rows) == len(first.train_full)
    assert not train_rows & validation_rows


def test_missing_data_says_where_to_put_files(tmp_path, monkeypatch):
    def offline(dataset):
        Path(dataset.raw_folder).mkdir(parents=True)  # as torchvision does before it fetches
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", offline)
    with pytest.raises(UsageError) as error:
        data_module._load_arrays.__wrapped__(str(tmp_path / "data"), "mnist")
    message = str(error.value)
    assert str(tmp_path / "data" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte.gz" in message and "ARCHSEARCH_DATA" in message
    assert not (tmp_path / "data").exists()  # the failed attempt leaves no empty folders behind


def test_environment_variable_sets_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHSEARCH_DATA", str(tmp_path))
    assert data_module.data_root() == tmp_path
    assert data_module.data_root("elsewhere") == Path("elsewhere")
    monkeypatch.delenv("ARCHSEARCH_DATA")
    assert data_module.data_root() == Path("./data")


def test_real_mnist_shapes_and_preprocessing(mnist_root):
    before = tree_state(mnist_root)
    data = load_data(str(mnist_root), "mnist", "cpu")
    assert (len(data.train_full), len(data.train), len(data.validation), len(data.test)) == (
        60_000,
        50_000,
        10_000,
        10_000,
    )
    assert data.train_full.x.min().item() == -0.5 and data.train_full.x.max().item() == 0.5
    assert sorted(torch.bincount(data.test.y).tolist())[0] > 800
    data_module._load_arrays.__wrapped__(str(mnist_root), "mnist")  # a real read, even if cached above
    assert tree_state(mnist_root) == before  # read in place, nothing extracted or written beside the files


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(root.rglob("*"))}


def test_data_read_through_the_environment_is_kept_by_its_folder(tiny_mnist, mnist_root, monkeypatch):
    """A process that points ARCHSEARCH_DATA elsewhere between calls (a notebook) gets the new folder's data."""
    monkeypatch.setenv("ARCHSEARCH_DATA", str(tiny_mnist))
    tiny = load_data(limit=50)
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    real = load_data(limit=50)
    assert tiny is load_data(str(tiny_mnist), limit=50) and real is load_data(str(mnist_root), limit=50)
    assert not torch.equal(tiny.test.x, real.test.x)
