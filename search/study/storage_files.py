"""What a storage keeps on disk and in its tables, checked and kept whole.

Readers open a storage without creating, migrating or switching anything, also on read-only media:
these checks look at a database through a read-only connection first. A journal's records are
written whole, and a full disk is one line that names the disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from search.errors import UsageError, argument
from search.study.urls import describe

OPTUNA_TABLES = ("studies", "trials", "version_info")
# Optuna writes the rows of version_info and then of this table last when it creates a database, and
# writes both whenever it opens a database that lacks them, even with skip_table_creation: a reader
# therefore opens only a database that has both, or it would race the process that is creating it.
STAMP_TABLE = "alembic_version"


def is_disk_full(reason: str) -> bool:
    """Whether a storage's error text says its disk is full (SQLite's wording, or the system's)."""
    return "database or disk is full" in reason or "No space left on device" in reason


def remove_unused_database(path: Path) -> None:
    """Remove a SQLite file this process began and that holds no study yet, with its side files."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            studies = connection.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
    except sqlite3.Error:
        studies = 0  # no tables yet, or none readable: nothing of a study is in it
    if studies:
        return  # another process made a study in it meanwhile: it is theirs
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
        with contextlib.suppress(OSError):
            path.with_name(name).unlink()


def disk_full(folder: Path) -> UsageError:
    """The one line for a full disk: it names the disk (by a folder on it) and how to go on."""
    return UsageError(
        f"the disk holding {folder} is full (No space left on device); free space on it, "
        "then run the same command again: the study resumes"
    )


class WholeRecordJournal(JournalFileBackend):
    """Optuna's journal file, of which every record is written whole or not at all.

    Optuna appends a record with buffered writes: a full disk can leave part of it in the file (and
    the journal then fails later with "Should not reach."), and every record appended after a cut-off
    one is unreadable. Here a failed append is cut back to where it began, under the journal's lock,
    and a full disk is the one line `disk_full` makes.
    """

    def __init__(self, path: Path) -> None:
        self._journal = path
        self._journal_lock = JournalFileSymlinkLock(str(path))
        super().__init__(str(path), lock_obj=self._journal_lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        record = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        try:
            with _held(self._journal_lock):
                descriptor = os.open(self._journal, os.O_WRONLY | os.O_APPEND)
                try:
                    start = os.fstat(descriptor).st_size
                    try:
                        written = 0
                        while written < len(record):
                            written += os.write(descriptor, record[written:])
                        os.fsync(descriptor)
                    except BaseException:
                        os.ftruncate(descriptor, start)  # a cut-off record would spoil every later one
                        raise
                finally:
                    os.close(descriptor)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self._journal.parent) from None
            raise UsageError(f"cannot write journal {self._journal}: {error.strerror or error}") from None

    def drop_cut_off_record(self) -> None:
        """Drop a last record cut off by a crash, keeping its bytes in a side file; done before any append.

        Repaired, not refused, because that is what a user wants: the cut-off record was never
        whole, so no reader ever saw it (Optuna's reader skips it) and the study is exactly as every
        command showed it, and appending after it would make the whole journal unreadable. Nothing
        is thrown away: the dropped bytes go to `JOURNAL.cut-off-N`, named in a note on stderr. It is
        done under the journal's lock, so no live writer is half-way through a record; readers
        (best, export, report) never change the file."""
        if not self._journal.is_file() or self._ends_whole():
            return
        with _held(self._journal_lock), open(self._journal, "r+b") as journal:
            data = journal.read()
            if not data or data.endswith(b"\n"):
                return  # a writer finished it while the lock was awaited
            keep = data.rfind(b"\n") + 1
            side = _keep_aside(self._journal, data[keep:])
            journal.truncate(keep)
            journal.flush()
            os.fsync(journal.fileno())
        print(
            f"archsearch: note: {self._journal} ended with a cut-off record ({len(data) - keep:,} bytes, left by a "
            f"crash or a full disk); it was dropped and its bytes kept in {side}",
            file=sys.stderr,
        )

    def _ends_whole(self) -> bool:
        with open(self._journal, "rb") as journal:
            size = journal.seek(0, os.SEEK_END)
            if size == 0:
                return True
            journal.seek(size - 1)
            return journal.read(1) == b"\n"


def _keep_aside(journal: Path, data: bytes) -> Path:
    """`data` in a new side file beside the journal, created exclusively: never through a planted link."""
    for number in range(1, 10_000):
        side = journal.with_name(f"{journal.name}.cut-off-{number}")
        try:
            descriptor = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return side
    raise UsageError(f"cannot keep the cut-off record of {journal}: remove old {journal.name}.cut-off-* files")


@contextlib.contextmanager
def _held(lock: JournalFileSymlinkLock) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def check_sqlite_study_file(path: Path) -> None:
    """An existing SQLite file with Optuna's tables, checked through a read-only connection."""
    if not path.is_file():
        raise UsageError(f"no study database at {path}; check {argument('storage')}")
    tables, stamped = _sqlite_tables(path, reader_uri(path), and_stamped=True)
    if not set(OPTUNA_TABLES) <= tables:
        raise UsageError(
            f"{path} is not an Optuna study database (it has no Optuna tables); check {argument('storage')}"
        )
    if not stamped:
        raise UsageError(_unfinished(str(path)))


def reader_uri(path: Path) -> str:
    """The SQLite URI a reader opens `path` through: read-only, and `immutable` on read-only media.

    A database in WAL mode needs its `-shm` file even to be read, which a read-only mount (an
    archived study) or a folder we may not write cannot hold; `immutable=1` reads it without one.
    That skips the `-wal` file, so it is used only where there is none with content, which on
    read-only media no one can be adding to; otherwise the study is refused with what to do."""
    plain = f"{path.resolve().as_uri()}?mode=ro"
    if not on_read_only_media(path):
        return plain
    try:
        with contextlib.closing(sqlite3.connect(plain, uri=True)) as connection:
            connection.execute("SELECT name FROM sqlite_master").fetchall()
        return plain
    except sqlite3.OperationalError:
        pass  # a WAL database without its -shm file: unreadable but as immutable
    wal = path.with_name(f"{path.name}-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        raise UsageError(
            f"{path} is on read-only media and its last changes are still in {wal.name}, which SQLite cannot "
            "read there; copy the database with its -wal and -shm files to a writable folder and read it there"
        )
    return f"{plain}&immutable=1"


def on_read_only_media(path: Path) -> bool:
    """Whether the database's folder cannot take the side files SQLite makes: a read-only mount or folder."""
    folder = path.resolve().parent
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        return False


def _sqlite_tables(path: Path, uri: str, and_stamped: bool = False) -> Any:
    """The tables of a SQLite file, read through `uri` (with `and_stamped`, also whether Optuna finished
    creating it, read in the same connection); a file that cannot be read is one line.

    Only SQLite's "not a database" makes a file "not a study database": a valid database that cannot
    be read now (a full disk, a lock, a read error) is named as such, never as another program's."""
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not and_stamped:
                return tables
            finished = set(OPTUNA_TABLES) <= tables and _stamped(
                tables, lambda table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            )
            return tables, finished
    except sqlite3.OperationalError as error:
        if is_disk_full(str(error)):
            raise disk_full(path.resolve().parent) from None
        raise UsageError(f"cannot read the database {path}: {error}; check {argument('storage')}") from None
    except sqlite3.DatabaseError as error:
        raise UsageError(f"{path} is not a study database ({error}); check {argument('storage')}") from None


def check_not_foreign(path: Path) -> None:
    """A study may be created in a new or empty file or an Optuna database, not in another program's."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a database file, e.g. sqlite:///{path / 'studies.db'}")
    if not path.is_file() or path.stat().st_size == 0:
        return
    tables = _sqlite_tables(path, f"{path.resolve().as_uri()}?mode=ro")
    if tables and not tables & {"studies", "version_info"}:
        raise UsageError(
            f"{path} is another program's SQLite database, not a study database; check {argument('storage')}"
        )


def check_optuna_tables(parsed: sqlalchemy.engine.URL, engine_kwargs: dict[str, Any]) -> None:
    """A server database with Optuna's tables; looked at without creating anything."""
    engine = sqlalchemy.create_engine(parsed, **engine_kwargs)
    where = describe(parsed.render_as_string(hide_password=False))
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
        if not set(OPTUNA_TABLES) <= tables:
            raise UsageError(f"no Optuna study tables in {where}; run `archsearch search` or `grid` there first")
        with engine.connect() as connection:
            stamped = _stamped(
                tables, lambda table: connection.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar_one()
            )
    finally:
        engine.dispose()
    if not stamped:
        raise UsageError(_unfinished(where))


def _stamped(tables: set[str], rows: Callable[[str], int]) -> bool:
    """Whether Optuna finished creating the database: its version rows, written last, are there."""
    return STAMP_TABLE in tables and all(rows(table) > 0 for table in (STAMP_TABLE, "version_info"))


def _unfinished(where: str) -> str:
    return (
        f"the study database {where} is not finished: another process is creating it, or its creation was "
        "cut off; try again in a moment (if nothing is creating it, remove it)"
    )


def begin_immediate(engine: sqlalchemy.engine.Engine) -> None:
    """Make every SQLite transaction take the write lock as it begins.

    pysqlite begins a transaction only at the first write, so the read before it (Optuna's "is this
    queued trial still WAITING?") is not part of it: two workers could both claim one queued trial, run
    it twice, and the slower one crash on "Cannot tell a COMPLETE trial". BEGIN IMMEDIATE makes such
    read-then-write steps take turns; the busy timeout makes a worker wait for its turn, not fail.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _let_sqlalchemy_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened so far lack the hooks


def check_can_create(path: Path) -> None:
    """The file can be made where it is named, judged without making anything: its nearest existing
    folder is a folder we may write in."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot create folder {path.parent}: {parent} is a file")
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create {path}: {parent} is not writable")


def check_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create folder {path.parent}: {error.strerror}") from None
