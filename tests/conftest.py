"""Shared fixtures: the real MNIST root, and the installed `archsearch` entry point."""

from __future__ import annotations

import _thread
import gzip
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest

import search.api  # noqa: F401  what the CLI imports first, with the warning filters that importing it sets
from tests.forked_cli import ForkedProcess, Server

REPO = Path(__file__).resolve().parents[1]
PYTEST_WARNING_FILTERS = {("always", None, DeprecationWarning, None), ("always", None, PendingDeprecationWarning, None)}
# A command's process has Python's filters and those its imports add (conftest is loaded under pytest's own).
COMMAND_WARNING_FILTERS = [f for f in warnings.filters if f[:4] not in PYTEST_WARNING_FILTERS]
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
_in_process_lock = threading.Lock()  # one in-process command at a time: they share os.environ, cwd and streams


def command_env(data_root: Path, **extra: str) -> dict[str, str]:
    """What a test's command adds to the environment: its data folder, and one torch thread (the test
    process's share of the cores), as each test process gets from pytest_configure."""
    return {"ARCHSEARCH_DATA": str(data_root), "OMP_NUM_THREADS": "1", **extra}


def archsearch(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 900, process: bool = False
) -> subprocess.CompletedProcess:
    """Run a command as a user would and return its CompletedProcess (status, stdout, stderr).

    By default the command runs in this process: `search.cli.main(argv)`, what the console script calls,
    with this environment, folder, argv and streams, all restored afterwards (see `in_process`). A process
    of its own is kept for what needs one: `process=True` (a test about the process itself), a call from
    another thread than the main one (only the main thread may set signal handlers), and a command given a
    PYTHONPATH (a test's sitecustomize.py, which runs as an interpreter starts), which runs the console
    script itself. Other processes are forked from one that imported the CLI and torch already
    (tests/forked_cli.py)."""
    full_env = {**os.environ, **(env or {})}
    if env and "PYTHONPATH" in env:
        return subprocess.run(
            [str(ENTRY_POINT), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
        )
    if process or threading.current_thread() is not threading.main_thread():
        return forked_cli().run(args, full_env, cwd, timeout)
    return in_process(args, env or {}, cwd, timeout)


def in_process(args, env: dict, cwd: Path | None, timeout: float) -> subprocess.CompletedProcess:
    """`main(argv)` as the console script runs it, its state put back afterwards: environment variables, the
    working folder, sys.argv and the standard streams (stdout strict UTF-8, as under a UTF-8 locale), Ctrl-C's
    and SIGTERM's handlers, warning filters, torch's thread count (from OMP_NUM_THREADS, as a fresh process
    reads it), Optuna's verbosity and where its log lines go (the command's stderr). What a process's exit
    does is done too: the SQLite engines it opened are closed (folding their -wal back) and data read from
    a folder other than the real MNIST is forgotten, so a later command reads that folder afresh. `timeout`
    is a hang guard: SIGTERM's handler runs (the command stops as on SIGTERM), then TimeoutExpired."""
    import optuna
    import torch

    from search.cli import main

    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    timed_out, running = threading.Event(), [True]
    guard_lock = threading.Lock()

    def guard() -> None:  # the hang guard signals only while main() runs
        with guard_lock:
            if running[0]:
                timed_out.set()
                _thread.interrupt_main(signal.SIGTERM)

    with _in_process_lock, warnings.catch_warnings():  # not pytest's filters: a warning goes to stderr, as it would
        warnings.filters[:] = COMMAND_WARNING_FILTERS
        warnings.showwarning = _print_warning
        saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
        saved_streams = sys.stdout, sys.stderr, sys.stdin
        handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        threads, verbosity = torch.get_num_threads(), optuna.logging.get_verbosity()
        optuna_streams = [h for h in logging.getLogger("optuna").handlers if isinstance(h, logging.StreamHandler)]
        previous_streams = [handler.stream for handler in optuna_streams]
        for handler in optuna_streams:
            handler.setStream(stderr)
        engines_before = _sqlite_engines()
        os.environ.update(env)
        if env.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        timer = threading.Timer(timeout, guard)
        timer.daemon = True
        try:
            if cwd is not None:
                os.chdir(cwd)
            sys.argv = [str(ENTRY_POINT), *args]
            sys.stdout, sys.stderr, sys.stdin = stdout, stderr, io.StringIO()
            timer.start()
            try:
                status = main(list(args))
            except SystemExit as stop:
                status = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
                if not isinstance(stop.code, int | None):
                    print(stop.code, file=sys.stderr)
            except BaseException:  # what the interpreter prints for an exception nothing caught
                traceback.print_exc()
                status = 1
        finally:
            with guard_lock:
                running[0] = False
            timer.cancel()
            sys.stdout, sys.stderr, sys.stdin = saved_streams
            sys.argv = saved_argv
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            for handler, stream in zip(optuna_streams, previous_streams, strict=True):
                handler.setStream(stream)
            optuna.logging.set_verbosity(verbosity)
            torch.set_num_threads(threads)
            _as_at_exit(args, env, engines_before)
    if timed_out.is_set():
        raise subprocess.TimeoutExpired([str(ENTRY_POINT), *args], timeout)
    return subprocess.CompletedProcess(
        [str(ENTRY_POINT), *args], status, out.getvalue().decode("utf-8", "backslashreplace"),
        err.getvalue().decode("utf-8", "backslashreplace"),
    )  # fmt: skip


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _sqlite_engines() -> set:
    """The SQLite engines this process has opened and keeps for its exit hook (private to the storage module:
    without it, none are known and none are closed)."""
    try:
        from search.study import storage
    except ImportError:
        return set()
    return set(getattr(storage, "_engines_to_close", ()))


def _as_at_exit(args, env: dict, engines_before: set) -> None:
    """What the end of a command's process would do for the next command: the connections it opened closed
    (SQLite folds its -wal back; the test's own stay open, as they would), and data of any folder but the
    real MNIST (read-only here) read again next time: a command given another folder (in its environment,
    by --data-dir or a study file) forgets the data read."""
    from search.engine import data

    for engine in _sqlite_engines() - engines_before:
        engine.dispose()
    real = real_data_root()
    folder = env.get("ARCHSEARCH_DATA") or os.environ.get("ARCHSEARCH_DATA")  # os.environ is the test's again
    elsewhere = not folder or real is None or Path(folder) != real
    if elsewhere or any(arg.startswith(("--data-dir", "--config")) for arg in args):
        for cached in (data._load_data, data._load_arrays):
            if cached is not None:
                cached.cache_clear()


def start_archsearch(
    *args: str, env: dict, cwd: Path, stdout: Path | None = None, stderr: Path | None = None, new_session: bool = False
) -> ForkedProcess:
    """Start a command as a user would, in a process of its own, and return it at once, to be signalled,
    killed or waited for as a subprocess.Popen; its streams go to these files (None: nowhere). Forked as
    for `archsearch`; a start-up hook on its PYTHONPATH (`paced_epochs`) runs in the forked child before the
    command, and in every worker it spawns as that interpreter starts."""
    streams = [str(path) if path is not None else os.devnull for path in (stdout, stderr)]
    return ForkedProcess(forked_cli(), args, {**os.environ, **env}, cwd, *streams, new_session)


def forked_cli() -> Server:
    """This test process's server, started at its first command."""
    global _forked_cli
    with _forked_cli_lock:
        if _forked_cli is None or _forked_cli.process.poll() is not None:
            _forked_cli = Server(str(ENTRY_POINT))
    return _forked_cli


# A start-up hook (the sitecustomize.py of `paced_epochs`) that paces trials: after each epoch is reported,
# its process sleeps ARCHSEARCH_TEST_EPOCH_SECONDS. A test that must catch trials part-way (to kill, stop or
# interrupt them) or keep workers' trials overlapping then trains a few hundred images, and each trial still
# lasts as long as the test needs, asleep: the CPU stays free, so a busy machine changes little but the
# start-up of the processes. With ARCHSEARCH_TEST_ARRIVALS, each process also waits at its first report
# until ARCHSEARCH_TEST_PROCESSES processes have reported one (a file each is the barrier; ten minutes is a
# hang guard): a spawned worker, a fresh interpreter, takes seconds to import torch (more on a busy
# machine), and the first process could otherwise finish the study before it starts. The reporter is looked
# up at each trial (search/study/objective.py), so the hook works in a process that imported it already (a
# forked command) as in a fresh one (a spawned worker).
PACED_EPOCHS = """
import os
import time

import search.study.objective

_epoch_reporter = search.study.objective.epoch_reporter
_PAUSE = float(os.environ["ARCHSEARCH_TEST_EPOCH_SECONDS"])
_ARRIVALS = os.environ.get("ARCHSEARCH_TEST_ARRIVALS")
_PROCESSES = int(os.environ.get("ARCHSEARCH_TEST_PROCESSES", "1"))


def arrive():
    mine = os.path.join(_ARRIVALS, str(os.getpid()))
    if os.path.exists(mine):
        return
    open(mine, "w").close()
    deadline = time.monotonic() + 600
    while len(os.listdir(_ARRIVALS)) < _PROCESSES and time.monotonic() < deadline:
        time.sleep(0.05)


def epoch_reporter(trial):
    report = _epoch_reporter(trial)

    def paced(record):
        report(record)
        if _ARRIVALS:
            arrive()
        time.sleep(_PAUSE)

    return paced


search.study.objective.epoch_reporter = epoch_reporter
"""


def paced_epochs(folder: Path, seconds: float, processes: int = 1) -> dict[str, str]:
    """The environment that makes every process of a command pause `seconds` after each epoch it reports,
    and, with `processes` over 1, wait at its first report for that many processes to report theirs
    (PACED_EPOCHS); its hook is written under `folder`. For `start_archsearch` and `command_env(..., **it)`."""
    hook = folder / "paced-epochs"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(PACED_EPOCHS)
    env = {"PYTHONPATH": str(hook), "ARCHSEARCH_TEST_EPOCH_SECONDS": str(seconds)}
    if processes > 1:
        (hook / "arrivals").mkdir(exist_ok=True)
        env |= {"ARCHSEARCH_TEST_ARRIVALS": str(hook / "arrivals"), "ARCHSEARCH_TEST_PROCESSES": str(processes)}
    return env


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
