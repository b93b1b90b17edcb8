"""The command-line contract, under generated input: every command, every flag and every study-file key.

Whatever the input (non-finite, huge, negative, empty, wrong-length, non-UTF-8, path-like), a run ends
with exit status 0, 2, 130 or 143 and no traceback; one that exits 2 says why in one line and leaves
every file that was there byte-identical, and creates none. Runs call `search.cli.main` in this process
(the console script adds only the interpreter's start-up), each in a fresh copy of a folder holding a
database with a finished search study and a finished grid study, a study file and an exported model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.cli import build_parser, main
from search.engine.config import TrainConfig
from search.study.config import SearchSpace, StudyConfig
from search.study.grid import GridConfig
from tests.conftest import ENTRY_POINT, archsearch

ALLOWED = {0, 2, 130, 143}
ONE_LINE_ERROR = re.compile(r"^archsearch( [a-z]+)?: error: \S.*$")
QUICK = ("--data-limit", "200", "--device", "cpu")
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's own, made by any reader of a WAL database
RUN_SECONDS = 6.0  # then SIGTERM: a generated input that asks for hours of work is stopped, as a scheduler would

# A fast, valid command line for each command; a generated flag is appended, and argparse takes the last.
BASES = {
    "budget": ["budget", "50000"],
    "baseline": ["baseline", "--epochs", "1", *QUICK],
    "search": ["search", "--study", "fresh", "--storage", "{db}", "--trials", "1", "--epochs", "1", "--budget",
               "5000", "--max-depth", "2", *QUICK],
    "grid": ["grid", "--study", "freshgrid", "--storage", "{db}", "--budgets", "5000", "--depths", "1", "--seeds",
             "1", "--epochs", "1", *QUICK],
    "worker": ["worker", "--study", "real", "--storage", "{db}", "--quiet", *QUICK],
    "best": ["best", "--study", "real", "--storage", "{db}"],
    "export": ["export", "--study", "real", "--storage", "{db}", "--out", "{folder}/exported", "--format", "html"],
    "report": ["report", "--storage", "{db}", "--out", "{folder}/report"],
}  # fmt: skip

WEIRD = [
    "", ",", " ", "0", "-1", "-0", "1e309", "nan", "NaN", "inf", "-inf", "1e-320", "10**9", "1000000000",
    str(10**30), str(2**64), str(2**63), "0.5", "-0.5", "3.7", "1,1", "1,,2", "[]", "[1, 2, 3]", "true",
    "../../evil", "/etc/passwd", "a/b", "x;touch PWNED;#", "$(touch PWNED)", "line\nbreak", "tab\tin",
    "\udcff\udcfe", "caf\u00e9", "\u202eevil", "a" * 300, "-", "--", "-x", "full", "cuda", "sqlite:///{folder}",
    "journal:{folder}", "postgresql://u:secret@127.0.0.1:1/db", "ftp://host/x", "{folder}/plain.txt",
]  # fmt: skip
values = st.one_of(
    st.sampled_from(WEIRD),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)


def flags_of(command: str) -> list[tuple[str, bool]]:
    """(flag, takes a value) for every option of the command, read from the real parser."""
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if hasattr(a, "choices")).choices[command]
    found = []
    for action in sub._actions:
        if action.option_strings and action.option_strings[-1] != "--help":
            found.append((action.option_strings[-1], action.nargs != 0))
    return found


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory, mnist_root) -> Path:
    folder = tmp_path_factory.mktemp("contract")
    url = f"sqlite:///{folder / 'studies.db'}"
    env = {"ARCHSEARCH_DATA": str(mnist_root), "OMP_NUM_THREADS": "1"}
    for args in (
        ["search", "--study", "real", "--storage", url, "--trials", "3", "--epochs", "1", "--budget", "20000",
         "--max-depth", "2", *QUICK],
        ["grid", "--study", "realgrid", "--storage", url, "--budgets", "5000", "--depths", "1", "--seeds", "1",
         "--epochs", "1", *QUICK],
        ["best", "--study", "real", "--storage", url, "--export", str(folder / "model.pt")],
    ):  # fmt: skip
        made = archsearch(*args, env=env, cwd=folder)
        assert made.returncode == 0, made.stderr
    (folder / "plain.txt").write_text("a file, not a database\n")
    (folder / "study.toml").write_text(valid_study_file(folder))
    return folder


def valid_study_file(folder: Path) -> str:
    return (
        f'name = "fromfile"\nbudget = 5000\ntrials = 1\nepochs = 1\ndata_limit = 200\n'
        f'storage = "sqlite:///{folder / "studies.db"}"\n\n[space]\nmax_depth = 2\n'
    )


@pytest.fixture
def workplace(template, tmp_path_factory, monkeypatch, mnist_root):
    """A function that gives a fresh copy of the template folder, as the working directory."""
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def fresh() -> Path:
        folder = tmp_path_factory.mktemp("case") / "work"
        shutil.copytree(template, folder)
        text = (folder / "study.toml").read_text().replace(str(template), str(folder))
        (folder / "study.toml").write_text(text)
        monkeypatch.chdir(folder)
        return folder

    yield fresh
    signal.signal(signal.SIGINT, previous[0])
    signal.signal(signal.SIGTERM, previous[1])


def run(argv: list[str], seconds: float = RUN_SECONDS) -> tuple[int, str]:
    """main() as the console script runs it: its exit status (argparse's SystemExit included) and stderr.

    A valid input may ask for real work (a million trials, say): after `seconds` the run gets SIGTERM,
    as a scheduler would send it, and must then stop as the contract says (exit 143)."""
    err, out = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                status = main(argv)
            except SystemExit as stop:
                status = stop.code if isinstance(stop.code, int) else 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return status, err.getvalue()


def check(folder: Path, argv: list[str]) -> tuple[int, str]:
    before = snapshot(folder)
    status, stderr = run(argv)
    assert status in ALLOWED, (argv, status, stderr)
    assert "Traceback" not in stderr, (argv, stderr)
    assert not (folder / "PWNED").exists()
    assert not [p for p in (folder.parent, folder.parent.parent) for name in ("evil", "exports") if (p / name).exists()]
    if status == 2:
        lines = stderr.splitlines()
        assert len(lines) == 1 and ONE_LINE_ERROR.match(lines[0]), (argv, stderr)
        after = snapshot(folder)
        assert {k: v for k, v in after.items() if k in before} == before, (argv, "changed a file")
        new = [name for name in after if name not in before and not name.endswith(SQLITE_SIDE_FILES)]
        assert not new, (argv, "created", new)
    return status, stderr


def fill(argv: list[str], folder: Path) -> list[str]:
    return [
        part.replace("{db}", f"sqlite:///{folder / 'studies.db'}").replace("{folder}", str(folder)) for part in argv
    ]


SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("command", list(BASES))
@SETTINGS
@given(data=st.data())
def test_any_flag_value_keeps_the_contract(command, data, workplace):
    flag, takes_value = data.draw(st.sampled_from(flags_of(command)), label="flag")
    extra = [flag, data.draw(values, label="value")] if takes_value else [flag]
    folder = workplace()
    check(folder, fill(BASES[command], folder) + fill(extra, folder))


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_dashboard_flag_keeps_the_contract(data, template, tmp_path_factory, mnist_root):
    """The dashboard serves until stopped: a run still serving after a few seconds took its input."""
    flag, takes_value = data.draw(st.sampled_from(flags_of("dashboard")), label="flag")
    extra = [flag, data.draw(values, label="value")] if takes_value else [flag]
    folder = tmp_path_factory.mktemp("dashboard") / "work"
    shutil.copytree(template, folder)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    argv = fill(["dashboard", "--storage", "{db}", "--port", port, "--refresh", "0", *extra], folder)
    before = snapshot(folder)
    server = subprocess.Popen(
        [str(ENTRY_POINT), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=folder,
        env={**os.environ, "ARCHSEARCH_DATA": str(mnist_root)},
    )  # fmt: skip
    try:
        _, stderr = server.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
        assert server.returncode in ALLOWED, (argv, server.returncode, stderr)
        return
    text = stderr.decode(errors="replace")
    assert server.returncode in ALLOWED and "Traceback" not in text, (argv, server.returncode, text)
    if server.returncode == 2:
        assert len(text.splitlines()) == 1 and ONE_LINE_ERROR.match(text.strip()), (argv, text)
        after = snapshot(folder)
        assert {k: v for k, v in after.items() if k in before} == before, (argv, "changed a file")


TOML_VALUES = st.sampled_from(
    ["inf", "-inf", "nan", "-1", "0", "1000000000000000", "1e300", "[]", "[1, 2, 3]", "[0.0, 0.1, 0.2]",
     "[0.1, inf]", '"x"', '""', "true", '["adam", "adam"]', '"../../evil"', "4294967296", '"\\u0000"',
     "{ a = 1 }", "[[1, 2]]"]
)  # fmt: skip


def keys_of(cls, prefix: str = "") -> list[str]:
    keys = []
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(field.type) or field.type in ("SearchSpace", "TrainConfig"):
            nested = {"SearchSpace": SearchSpace, "TrainConfig": TrainConfig}.get(field.type, field.type)
            keys += keys_of(nested, f"{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


def study_file_with(key: str, value: str, folder: Path, grid: bool) -> str:
    """A valid study (or grid) file with `key` set to `value`; a dotted key goes in its table."""
    storage = f'storage = "sqlite:///{folder / "studies.db"}"\n'
    top = "budgets = [5000]\ndepths = [1]\nseeds = 1\n" if grid else "budget = 5000\ntrials = 1\nepochs = 1\n"
    tables = {"train": "epochs = 1\n"} if grid else {"space": "max_depth = 2\n"}
    top = f'name = "generated"\n{top}data_limit = 200\n{storage}'
    table, _, name = key.rpartition(".")
    if table:
        tables[table] = f"{tables.get(table, '')}{name} = {value}\n"
    else:
        top += f"{name} = {value}\n"
    return top + "".join(f"\n[{t}]\n{body}" for t, body in tables.items())


@pytest.mark.parametrize(("kind", "cls"), [("search", StudyConfig), ("grid", GridConfig)])
@SETTINGS
@given(data=st.data())
def test_any_study_file_value_keeps_the_contract(kind, cls, data, workplace):
    key = data.draw(st.sampled_from(keys_of(cls)), label="key")
    value = data.draw(TOML_VALUES, label="value")
    folder = workplace()
    path = folder / "generated.toml"
    path.write_text(study_file_with(key, value, folder, kind == "grid"))
    check(folder, [kind, "--config", str(path), "--device", "cpu"])


def test_a_study_file_that_is_not_utf8_is_one_line(workplace):
    folder = workplace()
    (folder / "binary.toml").write_bytes(b'name = "\xff\xfe"\nbudget = 5000\n')
    check(folder, ["search", "--config", str(folder / "binary.toml")])
    status, stderr = run(["search", "--config", str(folder / "binary.toml")])
    assert status == 2 and "UTF-8" in stderr


def test_non_utf8_bytes_on_the_real_command_line(template, tmp_path, mnist_root):
    """Bytes the terminal sent in another encoding, through the real console script."""
    folder = tmp_path / "work"
    shutil.copytree(template, folder)
    before = snapshot(folder)
    for argv in (
        [b"search", b"--study", b"caf\xe9", b"--storage", f"sqlite:///{folder / 'studies.db'}".encode(), b"--trials",
         b"1", b"--epochs", b"1"],
        [b"best", b"--study", b"\xff", b"--storage", f"sqlite:///{folder / 'studies.db'}".encode()],
        [b"export", b"--study", b"real\xff", b"--out", str(folder / "x").encode()],
    ):  # fmt: skip
        done = subprocess.run(
            [bytes(ENTRY_POINT), *argv], capture_output=True, cwd=folder, timeout=120,
            env={**os.environ, "ARCHSEARCH_DATA": str(mnist_root)},
        )  # fmt: skip
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 2, (argv, stderr)
        assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert snapshot(folder) == before


# From a hostile tester's report: each once created the study and a failed trial, or wrote where it should not.
HOSTILE_FILES = [
    ("toml-inf-lr-bound", "space.lr", "[1e-4, inf]"),
    ("toml-3-item-dropout", "space.dropout", "[0.0, 0.1, 0.2]"),
    ("toml-empty-batch-sizes", "space.batch_sizes", "[]"),
    ("toml-empty-optimizers", "space.optimizers", "[]"),
    ("toml-empty-activations", "space.activations", "[]"),
    ("toml-budget-1e15", "budget", "1000000000000000"),
    ("toml-seed-negative", "seed", "-1"),
    ("toml-seed-2-32", "seed", "4294967296"),
]
HOSTILE_FLAGS = [
    ("max-depth-20000", ["search", "--study", "x", "--storage", "{db}", "--max-depth", "20000"]),
    ("grid-budget-1e15", ["grid", "--study", "y", "--storage", "{db}", "--budgets", "1000000000000000", "--depths",
                          "1"]),
    ("study-name-newline", ["search", "--study", "x\ny", "--storage", "{db}"]),
    ("export-study-dotdot", ["export", "--study", "../../evil", "--storage", "{db}"]),
    ("dashboard-refresh-huge", ["dashboard", "--storage", "{db}", "--refresh", "100000000000"]),
    ("best-on-plain-text-file", ["best", "--study", "real", "--storage", "sqlite:///{folder}/plain.txt"]),
    ("best-on-journal-folder", ["best", "--study", "real", "--storage", "journal:{folder}"]),
    ("best-export-onto-symlink", ["best", "--study", "real", "--storage", "{db}", "--export", "{folder}/link.pt"]),
    ("best-export-onto-device", ["best", "--study", "real", "--storage", "{db}", "--export", "/dev/null"]),
    ("worker-timeout-zero", ["worker", "--study", "real", "--storage", "{db}", "--timeout", "0"]),
    ("search-workers-huge", ["search", "--study", "x", "--storage", "{db}", "--workers", "100000"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "study_file"),
    [pytest.param(argv, None, id=name) for name, argv in HOSTILE_FLAGS]
    + [
        pytest.param(["search", "--config", "{folder}/f.toml"], (key, value), id=name)
        for name, key, value in HOSTILE_FILES
    ],
)
def test_known_hostile_examples_are_one_line_exit_2_and_harmless(argv, study_file, workplace):
    folder = workplace()
    (folder / "link.pt").symlink_to(folder / "model.pt")
    if study_file is not None:
        (folder / "f.toml").write_text(study_file_with(*study_file, folder, grid=False))
    status, _ = check(folder, fill(argv, folder))
    assert status == 2
    assert (folder / "link.pt").is_symlink()
