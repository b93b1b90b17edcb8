"""Shared fixtures: the real MNIST root, and the installed `archsearch` entry point."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.forked_cli import ForkedProcess, Server

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINT = Path(sys.executable).with_name("archsearch")


def pytest_configure(config) -> None:
    """pytest-xdist runs one test process per core: torch in each (and the commands they start) gets its share
    of the cores, not all of them, or their thread pools spin against each other (a packed test ran 200x
    slower). Set here, where a worker knows the count (its environment says it only later), and before any
    test module imports torch; a test that needs another count sets its own."""
    processes = getattr(config, "workerinput", {}).get("workercount")  # only in a worker: the controller's
    if processes:  # environment is every worker's, and a run without workers keeps torch's default
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))


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


_forked_cli: Server | None = None
_forked_cli_lock = threading.Lock()


def archsearch(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 900):
    """Run a command as a user would, in a process of its own, and return its CompletedProcess.

    The process is forked from one that has imported the CLI and torch already (tests/forked_cli.py) and
    calls what the console script calls. A command given a PYTHONPATH (a test's sitecustomize.py, which
    runs as an interpreter starts) runs the console script itself, as do tests about the script."""
    full_env = {**os.environ, **(env or {})}
    if env and "PYTHONPATH" in env:
        return subprocess.run(
            [str(ENTRY_POINT), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
        )
    return forked_cli().run(args, full_env, cwd, timeout)


def start_archsearch(
    *args: str, env: dict, cwd: Path, stdout: Path | None = None, stderr: Path | None = None, new_session: bool = False
) -> ForkedProcess:
    """Start a command as a user would, in a process of its own, and return it at once, to be signalled,
    killed or waited for as a subprocess.Popen; its streams go to these files (None: nowhere). Forked as
    for `archsearch`, so it must not need a start-up hook (PYTHONPATH)."""
    assert "PYTHONPATH" not in env, "a start-up hook needs the real script: use subprocess.Popen"
    streams = [str(path) if path is not None else os.devnull for path in (stdout, stderr)]
    return ForkedProcess(forked_cli(), args, {**os.environ, **env}, cwd, *streams, new_session)


def forked_cli() -> Server:
    """This test process's server, started at its first command."""
    global _forked_cli
    with _forked_cli_lock:
        if _forked_cli is None or _forked_cli.process.poll() is not None:
            _forked_cli = Server(str(ENTRY_POINT))
    return _forked_cli


def wait_for(condition, process: subprocess.Popen, stderr: Path, timeout: float = 600):
    """Poll `condition` until it holds; `timeout` is a hang guard, never a speed test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert process.poll() is None, f"exited early with {process.returncode}: {stderr.read_text()}"
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def free_port(host: str = "127.0.0.1") -> int:
    """A port no process listens on now, for a server a test starts (the kernel hands each caller its own)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def stored_states(url: str, study: str) -> list:
    """A study's trial states as `best` reads them, for a test that watches a command at work: opened read-only,
    so the test never writes Optuna's tables into a database the command may be creating at that moment.
    None while the database or the study is not there yet."""
    import optuna

    from search.errors import UsageError
    from search.study.storage import open_storage

    try:
        storage = open_storage(url, read_only=True)
        return [t.state for t in optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)]
    except (UsageError, KeyError):
        return []


def children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


@pytest.fixture
def pg_schema_url():
    """The test PostgreSQL server's URL with a schema of this test's own, dropped afterwards, so the
    test sees only what it wrote. Skips with the reason when ARCHSEARCH_TEST_PG is unset."""
    import uuid

    import sqlalchemy

    url = os.environ.get("ARCHSEARCH_TEST_PG")
    if not url:
        pytest.skip("ARCHSEARCH_TEST_PG is unset: start a server with `. .ci/postgres.sh` (.ci/run does)")
    parsed = sqlalchemy.engine.make_url(url).set(drivername="postgresql+psycopg2")
    schema = f"test_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(parsed)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    yield parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()
