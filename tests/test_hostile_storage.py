"""Hostile storages and files, each class from generated inputs with the known examples among them: secrets
anywhere in a storage URL, links planted where files are written, cut-off journals, full disks, another tool's
SQLite file, in-memory and unparseable URLs, gzip bombs and studies on read-only media."""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import zlib
from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from optuna.artifacts import FileSystemArtifactStore

from search.api.reading import INIT_FILE
from search.api.running import storage_failure
from search.engine import data as idx_data
from search.errors import UsageError
from search.files import replaced_atomically
from search.results.export import write_text
from search.study.checkpoints import _WholeWrites
from search.study.lifecycle import create_study, stored_form
from search.study.storage import (
    MASK,
    STORAGE_FAILURES,
    check_storage,
    describe,
    has_password,
    open_storage,
    public_url,
    scrub,
    without_secrets,
)
from search.study.workers import run_until
from tests.conftest import archsearch

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ONE_LINE = "archsearch{command}: error: "
QUICK = ("--epochs", "1", "--data-limit", "200", "--device", "cpu")
READERS = ("best", "export", "report")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_refusal(result: subprocess.CompletedProcess) -> str:
    """The single error line of a refused command (exit 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def reader_args(command: str, url: str, out: Path) -> tuple[str, ...]:
    return {
        "best": ("best", "--study", "s", "--storage", url, "--device", "cpu"),
        "export": ("export", "--study", "s", "--storage", url, "--format", "html", "--out", str(out / "exports")),
        "report": ("report", "--storage", url, "--out", str(out / "report")),
        "worker": ("worker", "--study", "s", "--storage", url, "--device", "cpu"),
    }[command]


@pytest.fixture(scope="module")
def small_study(tmp_path_factory, tiny_mnist) -> Path:
    """A finished one-trial search study in its own folder: studies.db (WAL mode) and its artifacts."""
    folder = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{folder / 'studies.db'}"
    result = archsearch(
        "search", "--study", "s", "--storage", url, "--trials", "2", "--budget", "20000", "--max-depth", "2",
        *QUICK, env={"ARCHSEARCH_DATA": str(tiny_mnist)}, cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "4m"):
    """A small tmpfs at `folder` (needs root, as CI has); skips with the reason where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` until only about `leave` bytes are free."""
    stats = os.statvfs(folder)
    with open(folder / ".filler", "wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))


# 1. Secrets anywhere in a storage URL ---------------------------------------------------------------------------

SECRET = st.text(alphabet="abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=10, max_size=24).map(
    lambda text: f"Zq{text}"
)
# Every spelling of a key that names a password: case, separators, libpq's and the environment's names.
SECRET_KEY = st.sampled_from(
    ["password", "passwd", "pass", "pwd", "pgpassword", "sslpassword", "secret", "token"]
).flatmap(
    lambda key: st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in key)).map("".join)
) | st.sampled_from(["PGPASSWORD", "Pass_Word", "pass-word", "db_password", "PassWord"])
PLAIN_QUERY = st.dictionaries(
    st.sampled_from(["sslmode", "application_name", "connect_timeout", "passfile", "options"]),
    st.sampled_from(["require", "archsearch", "10", "/home/u/.pgpass", "-csearch_path=s1"]),
    max_size=2,
)


@st.composite
def secret_urls(draw) -> tuple[str, str]:
    """A storage URL carrying `secret` in the userinfo, a query parameter or a setting inside one."""
    secret = draw(SECRET)
    driver = draw(st.sampled_from(["postgresql", "postgresql+psycopg2", "mysql+pymysql"]))
    port = draw(st.sampled_from(["", ":5432", ":1", ":abc", ":8o8o"]))
    place = draw(st.sampled_from(["userinfo", "query", "options", "conninfo"]))
    user = "u" if place != "userinfo" else f"u:{secret}"
    query = dict(draw(PLAIN_QUERY))
    if place == "query":
        query[draw(SECRET_KEY)] = secret
    elif place == "options":
        query["options"] = f"-c {draw(SECRET_KEY)}={secret}"
    elif place == "conninfo":
        query["dsn"] = f"host=h {draw(SECRET_KEY)}={secret} sslmode=require"
    pairs = "&".join(f"{k}={v.replace(' ', '%20').replace('=', '%3D')}" for k, v in query.items())
    return f"{driver}://{user}@host{port}/db" + (f"?{pairs}" if pairs else ""), secret


@PROPERTY
@given(secret_urls())
@example(("postgresql://u@host/db?password=SECRETSECRET", "SECRETSECRET"))
@example(("postgresql://u@host/db?PassWord=SECRETSECRET", "SECRETSECRET"))
@example(("postgresql://u@host/db?passwd=SECRETSECRET&sslmode=require", "SECRETSECRET"))
@example(("postgresql://u:SECRETSECRET@host/db", "SECRETSECRET"))
@example(("postgresql://u@host/db?options=-c%20password%3DSECRETSECRET", "SECRETSECRET"))
@example(("postgresql://u@host:abc/db?password=SECRETSECRET", "SECRETSECRET"))
def test_no_secret_of_a_url_is_shown_stored_or_quoted(case):
    url, secret = case
    assert secret in url
    shown, public = describe(url), public_url(url)
    stored = stored_form({"storage": url, "budget": 1})["storage"]
    assert secret not in shown and secret not in public and secret not in stored, (shown, public, stored)
    assert has_password(url) and public_url(public) == public and not has_password(public)
    assert MASK in shown
    assert secret not in scrub(f"FATAL: could not connect to {url} with {secret}", url)
    unreachable = url.replace("@host/", "@host:1/").replace("@host:5432/", "@host:1/").replace("host", "127.0.0.1")
    with pytest.raises(UsageError) as refused:  # a port that is not a number, a server that is not there...
        check_storage(unreachable)
    assert secret not in str(refused.value)


@pytest.mark.parametrize("plain", ["postgresql://u@h/db", "postgresql://u@h/db?sslmode=require&passfile=/x/.pgpass"])
def test_a_url_without_secrets_is_kept_as_typed(plain):
    assert describe(plain) == public_url(plain) == without_secrets(plain) == plain and not has_password(plain)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@127.0.0.1:1/db?password=SECRETSECRET",
        "postgresql://u@127.0.0.1:1/db?PassWord=SECRETSECRET",
        "postgresql://u@127.0.0.1:1/db?options=-c%20password%3DSECRETSECRET",
        "postgresql://u:SECRETSECRET@127.0.0.1:1/db?pwd=SECRETSECRET",
        "postgresql://u@127.0.0.1:x1/db?password=SECRETSECRET",
    ],
)
@pytest.mark.parametrize("command", ["search", "best", "report"])
def test_a_refused_storage_line_holds_no_secret(tmp_path, url, command):
    args = {
        "search": ("search", "--study", "s", "--storage", url, "--trials", "1", *QUICK),
        "best": ("best", "--study", "s", "--storage", url),
        "report": ("report", "--storage", url, "--out", str(tmp_path / "r")),
    }[command]
    line = one_line_refusal(archsearch(*args, cwd=tmp_path))
    assert "SECRETSECRET" not in line and "storage" in line, line
    assert list(tmp_path.iterdir()) == []


# 2. No write through a planted link ----------------------------------------------------------------------------

LINK_PLACES = st.sets(st.sampled_from(["target", "old-partial", "dot-partial", "every-name"]), min_size=1)


@PROPERTY
@given(
    name=st.sampled_from(["report.html", "init.json", "model.pt", "x.csv", "a b.html", "-x"]),
    places=LINK_PLACES,
    victim_kind=st.sampled_from(["file", "missing", "folder"]),
)
@example(name="report.html", places={"old-partial"}, victim_kind="file")
def test_a_written_file_never_goes_through_a_planted_link(tmp_path_factory, name, places, victim_kind):
    folder = tmp_path_factory.mktemp("out")
    outside = tmp_path_factory.mktemp("victim")
    victim = outside / "victim"
    if victim_kind == "file":
        victim.write_text("precious")
    elif victim_kind == "folder":
        victim.mkdir()
    before = sorted(p.name for p in outside.iterdir())
    planted = []
    if "target" in places:
        planted.append(folder / name)
    if "old-partial" in places:
        planted.append(folder / f".{name}.partial")  # the name the report used to stage through
    if "dot-partial" in places:
        planted.append(folder / f".{name}.tmp")
    if "every-name" in places:
        planted += [folder / f".{name}.{suffix}.partial" for suffix in ("0", "tmp", "a", "x" * 8)]
    for link in planted:
        link.symlink_to(victim)
    write_text(folder / name, "written")
    assert (folder / name).is_file() and not (folder / name).is_symlink()
    assert (folder / name).read_text() == "written"
    assert sorted(p.name for p in outside.iterdir()) == before
    if victim_kind == "file":
        assert victim.read_text() == "precious"
    left = {p.name for p in folder.iterdir()} - {name}
    assert left == {p.name for p in planted if p.name != name}  # nothing of ours left behind


def test_a_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "report.html").write_text("old")
    with pytest.raises(OSError), replaced_atomically(tmp_path / "report.html") as handle:
        handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert (tmp_path / "report.html").read_text() == "old"


def test_report_and_export_never_write_through_links_planted_in_their_folders(tmp_path, small_study, tiny_mnist):
    url = f"sqlite:///{small_study / 'studies.db'}"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = {  # the report's old staging names, and names like them; the report itself (a link there is replaced)
        tmp_path / "report": ["report.html", ".report.html.partial", f".{INIT_FILE}.partial", ".report.html.tmp"],
        tmp_path / "exports": [".export-x", ".report.html.partial"],
    }
    for folder, names in planted.items():
        folder.mkdir()
        for name in names:
            (folder / name).symlink_to(victim)
    for command in ("report", "export"):
        result = archsearch(*reader_args(command, url, tmp_path), env={"ARCHSEARCH_DATA": str(tiny_mnist)})
        assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious"
    assert (tmp_path / "report" / "report.html").is_file() and not (tmp_path / "report" / "report.html").is_symlink()


class _FailingStream(io.RawIOBase):
    """A model file's bytes that end in a full disk after `size` bytes."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        count = min(len(buffer), self.left)
        buffer[:count] = b"\1" * count
        self.left -= count
        return count


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 100_000])
def test_a_model_file_cut_off_by_a_full_disk_is_not_left_in_the_artifacts(tmp_path, size):
    store = _WholeWrites(FileSystemArtifactStore(tmp_path))
    with pytest.raises(OSError):
        store.write("artifact-id", io.BufferedReader(_FailingStream(size)))
    assert list(tmp_path.iterdir()) == []


# 3 and 4. A cut-off journal and a journal on a full disk -------------------------------------------------------


def journal_with_trials(path: Path, trials: int) -> None:
    study = create_study(open_storage(f"journal:{path}"), "s", "search", {"budget": 20_000, "storage": "x"}, None, None)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=trials)


def journal_trials(path: Path) -> list[tuple]:
    study = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}", read_only=True))
    return [(t.number, t.state, t.value) for t in study.get_trials(deepcopy=False)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trials=st.integers(1, 4), cut=st.floats(0.01, 0.99), tail=st.sampled_from([b"", b"\xff\xfe", b"{"]))
@example(trials=1, cut=0.5, tail=b"")
def test_a_cut_off_last_record_is_dropped_and_kept_aside_before_anything_is_appended(
    tmp_path_factory, capfd, trials, cut, tail
):
    path = tmp_path_factory.mktemp("journal") / "studies.log"
    journal_with_trials(path, trials)
    whole = path.read_bytes()
    record = json.dumps({"op_code": 6, "worker_id": "w", "trial_id": 0, "state": 1, "values": [0.5]}).encode()
    partial = record[: max(1, int(len(record) * cut))] + tail
    path.write_bytes(whole + partial)
    seen = journal_trials(path)  # a reader skips the cut-off record and leaves the file as it was
    assert path.read_bytes() == whole + partial
    study = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}"))  # a writer repairs first
    assert path.read_bytes() == whole
    (side,) = [p for p in path.parent.iterdir() if p.name.startswith("studies.log.cut-off-")]
    assert side.read_bytes() == partial
    assert str(side) in capfd.readouterr().err
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    assert journal_trials(path)[: len(seen)] == seen and len(journal_trials(path)) == len(seen) + 1
    assert all(json.loads(line) for line in path.read_bytes().splitlines())


def test_resuming_a_cut_off_journal_finishes_the_study(tmp_path, tiny_mnist):
    url = f"journal:{tmp_path / 'studies.log'}"
    args = ("search", "--study", "s", "--storage", url, "--budget", "20000", "--max-depth", "2", *QUICK)
    env = {"ARCHSEARCH_DATA": str(tiny_mnist)}
    assert archsearch(*args, "--trials", "1", env=env, cwd=tmp_path).returncode == 0
    with open(tmp_path / "studies.log", "ab") as journal:
        journal.write(b'{"op_code":6,"worker_id":"x","tri')  # the example: a crash mid-record
    assert archsearch("best", "--study", "s", "--storage", url, env=env, cwd=tmp_path).returncode == 0
    resumed = archsearch(*args, "--trials", "2", env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "cut-off record" in resumed.stderr
    best = archsearch("best", "--study", "s", "--storage", url, "--json", env=env, cwd=tmp_path)
    assert best.returncode == 0, best.stderr


DISK_FULL = "the disk holding {folder} is full"


@pytest.mark.parametrize("leave", [0, 300, 2_000, 20_000, 60_000])
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_full_disk_is_one_line_naming_the_disk_and_leaves_nothing_half_made(tmp_path, kind, leave):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill(disk, leave)
        url = f"journal:{disk / 'studies.log'}" if kind == "journal" else f"sqlite:///{disk / 'studies.db'}"
        # A study record of about 5 kB (valid settings: a long list of warm-start sources), so that some of the
        # disk's free space runs out while the study itself is being written.
        config = {"budget": 20_000, "storage": url, "warm_start": [f"source-{index:03d}" for index in range(400)]}
        opened = False
        try:
            study = create_study(open_storage(url), "s", "search", config, None, None)
            opened = True
            run_until(study, lambda trial: trial.suggest_float("x", 0, 1), 500)
        except UsageError as error:
            refusal = str(error)
        except STORAGE_FAILURES as error:  # as the CLI and the API turn it into one line
            refusal = str(storage_failure(error, url))
        else:
            raise AssertionError("500 trials fitted on the full disk")
        assert refusal.startswith(DISK_FULL.format(folder=disk)), refusal
        left = sorted(p.name for p in disk.iterdir() if p.name != ".filler")
        if kind == "journal":
            data = (disk / "studies.log").read_bytes() if left else b""
            assert not data or data.endswith(b"\n")
            assert all(json.loads(line) for line in data.splitlines())
        elif not opened:
            assert left == [], left  # the database was never made whole: nothing of it stays
        else:
            with contextlib.closing(sqlite3.connect(disk / "studies.db")) as connection:
                assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("leave", [1_000, 100_000, 150_000, 600_000])
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_search_on_a_full_disk_is_one_line_and_leaves_only_whole_files(tmp_path, mnist_root, kind, leave):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        fill(disk, leave)
        url = f"journal:{disk / 'studies.log'}" if kind == "journal" else f"sqlite:///{disk / 'studies.db'}"
        result = archsearch(
            "search", "--study", "s", "--storage", url, "--trials", "40", "--budget", "20000", "--max-depth", "2",
            "--epochs", "1", "--data-limit", "2000", "--device", "cpu", env={"ARCHSEARCH_DATA": str(mnist_root)},
            cwd=tmp_path,
        )  # fmt: skip
        line = one_line_refusal(result)
        assert line.startswith("archsearch: error: the disk holding ") and str(disk) in line, line
        assert "Should not reach" not in line and "not a study database" not in line
        names = {p.name for p in disk.iterdir()} - {".filler"}
        assert not {n for n in names if n.endswith(("-wal", "-shm", "-journal"))}, names
        if (disk / "studies.log").exists():
            data = (disk / "studies.log").read_bytes()
            assert not data or data.endswith(b"\n")
        if (disk / "studies.db").exists():
            with contextlib.closing(sqlite3.connect(disk / "studies.db")) as connection:
                assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert connection.execute("SELECT COUNT(*) FROM studies").fetchone()[0] == 1  # never an empty shell
        import torch

        for model in (disk / "artifacts").glob("*") if (disk / "artifacts").is_dir() else []:
            assert "state_dict" in torch.load(model, weights_only=True)  # whole, or not there at all


# 6. Another tool's SQLite file keeps its journal mode ----------------------------------------------------------


@pytest.mark.parametrize("command", ["worker", *READERS])
@pytest.mark.parametrize("content", ["foreign-study", "no-archsearch-study", "empty-optuna"])
def test_refusing_another_tools_sqlite_file_leaves_its_journal_mode_and_bytes(tmp_path, command, content):
    path = tmp_path / "tool.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    if content != "empty-optuna":
        name = "s" if content == "foreign-study" else "other"
        optuna.create_study(study_name=name, storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    storage.engine.dispose()
    before = sha256(path)
    one_line_refusal(archsearch(*reader_args(command, f"sqlite:///{path}", tmp_path), cwd=tmp_path))
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert sha256(path) == before and [p.name for p in tmp_path.iterdir()] == ["tool.db"]


def test_a_valid_database_that_cannot_be_read_now_is_not_called_another_programs(tmp_path, monkeypatch):
    path = tmp_path / "studies.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{path}")
    # The checks' own connections wait SQLite's default 5 s for the lock before they give up; a tenth of a
    # second shows the same refusal.
    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, timeout=0.1))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing: reading must wait, then fail, for now
    try:
        for read_only in (True, False):
            with pytest.raises(UsageError) as refused:
                open_storage(f"sqlite:///{path}", read_only=read_only)
            assert "cannot read the database" in str(refused.value) and "not a study database" not in str(refused.value)
    finally:
        holder.close()


# 10 and 11. In-memory storages and URLs that do not parse ------------------------------------------------------

IN_MEMORY = [
    "sqlite://", "sqlite:///:memory:", "sqlite+pysqlite:///:memory:", "sqlite:///file::memory:?cache=shared",
    "sqlite:///file:x?mode=memory&uri=true", "sqlite:///", "sqlite+pysqlite://",
]  # fmt: skip
BAD_PORTS = [":abc", ":8o8o", ":1e3", ":-", ":5432x", ":1.5", ":0x10"]


@pytest.mark.parametrize("url", IN_MEMORY)
def test_in_memory_storages_are_refused(url):
    for call in (check_storage, open_storage):
        with pytest.raises(UsageError, match="in memory"):
            call(url)


@pytest.mark.parametrize("port", BAD_PORTS)
@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg2", "mysql"])
def test_a_port_that_is_not_a_number_is_refused(driver, port):
    url = f"{driver}://u:SECRETSECRET@host{port}/db"
    for call in (check_storage, open_storage, lambda u: open_storage(u, read_only=True)):
        with pytest.raises(UsageError, match="does not parse") as refused:
            call(url)
        assert "SECRETSECRET" not in str(refused.value)


CLI_STORAGE_COMMANDS = {
    "search": ("search", "--study", "s", "--trials", "1", *QUICK),
    "grid": ("grid", "--study", "g", "--budgets", "5000", "--depths", "1", "--seeds", "1", *QUICK),
    "frontier": ("frontier", "--study", "f", "--budgets", "5000", "--trials", "1", "--max-depth", "1", *QUICK),
    "worker": ("worker", "--study", "s", "--device", "cpu"),
    "best": ("best", "--study", "s"),
    "export": ("export", "--study", "s", "--format", "html"),
    "report": ("report", "--out", "r"),
    "dashboard": ("dashboard", "--port", "1"),
}


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "postgresql://u@h:abc/db", "mysql://u@h:x1/db"])
@pytest.mark.parametrize("command", sorted(CLI_STORAGE_COMMANDS))
def test_every_command_refuses_in_memory_and_unparseable_storages_in_one_line(tmp_path, command, url):
    line = one_line_refusal(archsearch(*CLI_STORAGE_COMMANDS[command], "--storage", url, cwd=tmp_path))
    assert "in memory" in line or "does not parse" in line, line
    assert list(tmp_path.iterdir()) == []


# 16. A gzip bomb is not inflated -------------------------------------------------------------------------------


def gzip_bomb(path: Path, count: int, inflated: int) -> None:
    """A label file whose header declares `count` labels, followed by `inflated` zero bytes, compressed."""
    header = bytes([0, 0, 8, 1]) + count.to_bytes(4, "big")
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip framing
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as handle:
        handle.write(compressor.compress(header))
        for start in range(0, inflated, len(chunk)):
            handle.write(compressor.compress(chunk[: min(len(chunk), inflated - start)]))
        handle.write(compressor.flush())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 70_000), extra=st.integers(1, 64 << 20))
@example(count=60_000, extra=1_500_000_000)  # the example: 7 MB that inflates to 1.5 GB
def test_a_gzip_bomb_is_refused_after_reading_what_its_header_declares_plus_one_byte(
    tmp_path_factory, monkeypatch, count, extra
):
    path = tmp_path_factory.mktemp("bomb") / "train-labels-idx1-ubyte.gz"
    gzip_bomb(path, count, count + extra)
    read = []
    real_open = gzip.open

    def counting_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        real_read = handle.read

        def counted(size=-1):
            assert size is not None and size >= 0, "an unbounded read"
            data = real_read(size)
            read.append(len(data))
            return data

        handle.read = counted
        return handle

    monkeypatch.setattr(idx_data.gzip, "open", counting_open)
    with pytest.raises(ValueError, match="trailing data"):
        idx_data._read_idx(path, "labels")
    assert sum(read) == 8 + count + 1


# 17. A WAL database on read-only media is readable ---------------------------------------------------------------


@pytest.mark.parametrize("side_files", ["none", "empty-wal", "wal-with-changes"])
def test_a_wal_study_on_read_only_media_is_read_not_refused(tmp_path, small_study, tiny_mnist, side_files):
    with tmpfs(tmp_path / "archive", "16m") as archive:
        source = small_study / "studies.db"
        with contextlib.closing(sqlite3.connect(source)) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        (archive / "studies.db").write_bytes(source.read_bytes())
        if side_files == "empty-wal":
            (archive / "studies.db-wal").write_bytes(b"")
        elif side_files == "wal-with-changes":
            (archive / "studies.db-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 4000)
        subprocess.run(["mount", "-o", "remount,ro", str(archive)], check=True)
        url = f"sqlite:///{archive / 'studies.db'}"
        before = sorted(p.name for p in archive.iterdir())
        for command in READERS:
            result = archsearch(*reader_args(command, url, tmp_path), env={"ARCHSEARCH_DATA": str(tiny_mnist)})
            if side_files == "wal-with-changes":
                line = one_line_refusal(result)
                assert "read-only" in line and "not a study database" not in line, line
            else:
                assert result.returncode == 0, (command, result.stderr)
        assert sorted(p.name for p in archive.iterdir()) == before
