"""Storages: any Optuna storage URL or journal file, opened so that bad input is one line.

Secrets stay out of what is printed or stored: `without_secrets` alone knows where a URL carries
one (`describe` masks, `public_url` drops). Readers open a storage without creating, migrating or
switching anything, also on read-only media. A journal's records are written whole, and a full disk
is one line that names the disk. Every call into a storage runs inside
`storage_calls_within`'s context, which the CLI and the API set to hold Ctrl-C and SIGTERM back
until the call returns: a stop raised inside SQLAlchemy's session bookkeeping leaves a session that
fails every later call of the process (IllegalStateChangeError), so the trial it stopped could not
even be marked failed.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import inspect
import json
import os
import re
import sqlite3
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote_plus

import optuna
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from search.errors import UsageError

STORAGE_ENV = "ARCHSEARCH_STORAGE"  # a storage URL that stays off command lines (and out of `ps`)
JOURNAL_PREFIX = "journal:"
SQLITE_TIMEOUT_SECONDS = 120
SCHEMA_ATTEMPTS = 5
RACES = ("already exists", "UNIQUE constraint failed", "duplicate key value", "database is locked")
OPTUNA_TABLES = ("studies", "trials", "version_info")
# Optuna writes the rows of version_info and then of this table last when it creates a database, and
# writes both whenever it opens a database that lacks them, even with skip_table_creation: a reader
# therefore opens only a database that has both, or it would race the process that is creating it.
STAMP_TABLE = "alembic_version"
# What a storage raises when it stops working under a running study: Optuna wraps SQLAlchemy's errors.
STORAGE_FAILURES = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)
# A running trial's heartbeat, and how long one may go unheard before the trial counts as stale and is failed.
DEFAULT_HEARTBEAT_SECONDS = 5
DEFAULT_GRACE_SECONDS = 20

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

_calls_within: Callable[[], AbstractContextManager] = contextlib.nullcontext


@contextlib.contextmanager
def storage_calls_within(context: Callable[[], AbstractContextManager]) -> Iterator[None]:
    """Every storage call made in the block, by any storage that open_storage opened, runs inside `context()`."""
    global _calls_within
    before, _calls_within = _calls_within, context
    try:
        yield
    finally:
        _calls_within = before


Storage = TypeVar("Storage", bound=type)


def _calls_guarded(cls: Storage) -> Storage:
    """`cls` with each of its methods (its bases' included, dunders apart) run inside the current context."""
    for base in cls.__mro__[1:-1]:
        for name, attribute in vars(base).items():
            if name.startswith("__") or not inspect.isfunction(attribute) or name in vars(cls):
                continue
            setattr(cls, name, _guarded(attribute))
    return cls


def _guarded(method: Callable) -> Callable:
    @functools.wraps(method)
    def guarded(self, *args: Any, **kwargs: Any) -> Any:
        with _calls_within():
            return method(self, *args, **kwargs)

    return guarded


@_calls_guarded
class _RDBStorage(RDBStorage):
    """Optuna's RDBStorage, its calls run inside storage_calls_within's context."""

    def record_heartbeat(self, trial_id: int) -> None:
        """A heartbeat that fails (a full disk, a lost server) is skipped, and the next one tries again.

        Optuna records heartbeats from a thread of its own, where an error would print a traceback and end
        the heartbeats; the trial's own next write meets the same failure and reports it in one line."""
        with _calls_within(), contextlib.suppress(*STORAGE_FAILURES):
            super().record_heartbeat(trial_id)


@_calls_guarded
class _JournalStorage(JournalStorage):
    """Optuna's JournalStorage, its calls run inside storage_calls_within's context."""


# A query parameter or a `key=value` setting whose key names a secret, in any spelling or case: libpq's
# password and sslpassword, PGPASSWORD, passwd, pass, pwd, secret, token. A `...file` key (libpq's
# passfile) names where a secret is kept, which is no secret.
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
# A `key=value` setting inside a value (PostgreSQL's `options=-c password=...`, a conninfo string).
_SECRET_SETTING = re.compile(
    r"(?P<key>[A-Za-z0-9_.-]*(?:pass|pwd|secret|token)[A-Za-z0-9_.-]*)(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;]+)",
    re.IGNORECASE,
)
MASK = "***"
_QUERY_PAIR = r"([?&;])([^=&;#]*)=([^&;#]*)"


def is_secret_key(key: str) -> bool:
    """Whether a URL's query parameter (or a setting inside one) named `key` carries a secret."""
    plain = re.sub(r"[^a-z]", "", key.lower())
    return bool(_SECRET_KEY.search(plain)) and not plain.endswith("file")


def _has_secret_setting(value: str) -> bool:
    return any(is_secret_key(match["key"]) for match in _SECRET_SETTING.finditer(value))


def _mask_settings(text: str) -> str:
    return _SECRET_SETTING.sub(lambda m: f"{m['key']}{m['eq']}{MASK}" if is_secret_key(m["key"]) else m[0], text)


def without_secrets(url: str, *, drop: bool = False) -> str:
    """`url` with every secret it carries masked as `***` (for messages), or dropped (`drop`: what may
    be stored, printed in a command or passed on argv).

    The one place that knows where a storage URL can carry a secret: the password after `user:`,
    query parameters whose key names one (`?password=`, `?PassWord=`, `?passwd=`, `?sslpassword=`,
    `?PGPASSWORD=`...), and `key=value` settings inside any part (`?options=-c password=...`). A
    dropped password comes back from ~/.pgpass, PGPASSWORD or ARCHSEARCH_STORAGE, never from a
    place that other users (`ps`), the dashboard's API or a shared log can read. A URL that does
    not parse is masked as text; it is never stored."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return _mask_unparsed(url)
    query: dict[str, Any] = {}
    for key, value in parsed.query.items():
        values = value if isinstance(value, tuple) else (value,)
        if is_secret_key(key) or any(_has_secret_setting(v) for v in values):
            if not drop:
                query[key] = MASK if is_secret_key(key) else tuple(_mask_settings(v) for v in values)
        else:
            query[key] = value
    query = {k: v[0] if isinstance(v, tuple) and len(v) == 1 else v for k, v in query.items()}
    password = None if drop or not parsed.password else MASK
    database = parsed.database and (parsed.database if drop else _mask_settings(parsed.database))
    # URL.set ignores None, so the URL is built again.
    bare = sqlalchemy.engine.URL.create(
        parsed.drivername, parsed.username, password, parsed.host, parsed.port, database, query
    )
    if parsed == bare:
        return url  # nothing to hide: the URL as typed
    return bare.render_as_string(hide_password=False).replace(quote(MASK, safe=""), MASK)


def _mask_unparsed(url: str) -> str:
    """A URL that SQLAlchemy cannot parse may still carry a password after `user:`, in its query or in a
    setting; hide them all."""
    masked = re.sub(r"(//[^/@]*?:)[^/@]*@", rf"\1{MASK}@", url)
    masked = re.sub(
        _QUERY_PAIR,
        lambda m: (
            f"{m[1]}{m[2]}={MASK}"
            if is_secret_key(unquote_plus(m[2])) or _has_secret_setting(unquote_plus(m[3]))
            else m[0]
        ),
        masked,
    )
    return _mask_settings(masked)


def describe(url: str) -> str:
    """The URL with every secret masked, for messages."""
    return without_secrets(url)


def public_url(url: str) -> str:
    """The URL without its secrets: what may be stored, printed in a command or passed on argv."""
    return without_secrets(url, drop=True)


def has_password(url: str) -> bool:
    return public_url(url) != url


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error, say) with any secret of `url` in it masked: a driver may quote its URL."""
    for secret in _secret_values(url):
        text = text.replace(secret, MASK)
    return text


def _secret_values(url: str) -> list[str]:
    found = [m["value"].strip("'\"") for m in _SECRET_SETTING.finditer(url) if is_secret_key(m["key"])]
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # found as _mask_unparsed finds them
        found += re.findall(r"//[^/@]*?:([^/@]*)@", url)
        for _, key, value in re.findall(_QUERY_PAIR, url):
            key, value = unquote_plus(key), unquote_plus(value)
            found += [value] if is_secret_key(key) else []
            found += [m["value"].strip("'\"") for m in _SECRET_SETTING.finditer(value) if is_secret_key(m["key"])]
        return sorted({v for v in found if v}, key=len, reverse=True)
    if parsed.password:
        found.append(str(parsed.password))
    for key, value in parsed.query.items():
        for one in value if isinstance(value, tuple) else (value,):
            if is_secret_key(key):
                found.append(one)
            found += [m["value"].strip("'\"") for m in _SECRET_SETTING.finditer(one) if is_secret_key(m["key"])]
    return sorted({v for v in found if v}, key=len, reverse=True)


def parse_url(url: str) -> sqlalchemy.engine.URL:
    """The parsed storage URL; one that does not parse (a port that is not a number, say) is one line."""
    try:
        return sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        reason = f" ({error})" if isinstance(error, ValueError) and "int()" not in str(error) else ""
        port = " (its port is not a number)" if "int()" in str(error) else reason
        raise UsageError(
            f"storage URL {_mask_unparsed(url)!r} does not parse{scrub(port, url)}; use sqlite:///studies/NAME.db, "
            "postgresql://USER@HOST:PORT/DB (password in ~/.pgpass) or journal:PATH"
        ) from None


def is_in_memory(parsed: sqlalchemy.engine.URL) -> bool:
    """A SQLite URL whose database lives in one process's memory: `sqlite://`, `sqlite:///:memory:`,
    `file::memory:`, `?mode=memory` in any spelling."""
    database = (parsed.database or "").strip()
    mode = parsed.query.get("mode", "")
    modes = mode if isinstance(mode, tuple) else (mode,)
    return (
        database in ("", ":memory:")
        or ":memory:" in database
        or re.search(r"[?&]mode=memory\b", database, re.IGNORECASE) is not None
        or any(m.lower() == "memory" for m in modes)
    )


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database, or for a SQLite one in memory."""
    parsed = parse_url(url)
    if parsed.drivername.startswith("sqlite") and not is_in_memory(parsed):
        return Path(parsed.database)
    return None


def open_storage(
    url: str,
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS,
    grace_seconds: int = DEFAULT_GRACE_SECONDS,
    must_exist: bool = False,
    read_only: bool = False,
):
    """Any Optuna storage URL, or `journal:PATH` for a journal file; errors become one line.

    `must_exist` opens only a storage that already holds Optuna's tables (a worker joining a study);
    `read_only` also leaves the database exactly as it was (best, export, report): no tables created,
    no schema migrated, no journal mode switched. Both refuse anything else with one line, before
    Optuna would quietly add its tables to, say, a mistyped path of some other SQLite file."""
    must_exist = must_exist or read_only
    if url.startswith(JOURNAL_PREFIX):
        return _open_journal(Path(url[len(JOURNAL_PREFIX) :]), must_exist, read_only)
    parsed, engine_kwargs, path = _target(url, must_exist)
    if path is not None and not must_exist:
        _check_folder(path)
    if path is not None and read_only and on_read_only_media(path):
        uri = reader_uri(path)  # what _target's check just opened
        engine_kwargs["creator"] = lambda: sqlite3.connect(
            uri, uri=True, timeout=SQLITE_TIMEOUT_SECONDS, check_same_thread=False
        )
    created = path is not None and not must_exist and not path.exists()
    try:
        with _one_line_errors(url, parsed, path):
            if must_exist and path is None:
                _check_optuna_tables(parsed, engine_kwargs)
            for attempt in range(1, SCHEMA_ATTEMPTS + 1):
                try:
                    with _calls_within():  # tables created and WAL switched on whole, never cut off half-way
                        storage = _RDBStorage(
                            parsed.render_as_string(hide_password=False),
                            engine_kwargs=engine_kwargs,
                            heartbeat_interval=heartbeat_seconds,
                            grace_period=grace_seconds,
                            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                            skip_table_creation=must_exist,
                        )
                        if path is not None and not read_only:
                            # WAL lets readers (the dashboard, other workers) proceed while one worker writes.
                            with storage.engine.connect() as connection:
                                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                            _begin_immediate(storage.engine)
                    break
                except sqlalchemy.exc.DBAPIError as error:
                    # Processes that open a new database at once all create Optuna's tables (and SQLite's
                    # WAL mode), and the slower ones trip over the first one's; opening again then works.
                    if attempt == SCHEMA_ATTEMPTS or not any(text in str(error.orig) for text in RACES):
                        raise
                    time.sleep(0.5 * attempt)
    except BaseException:
        if created:  # a full disk, say, while Optuna made its tables: no half-made database stays behind
            _remove_unused_database(path)
        raise
    storage.source_url, storage.created_file = url, path if created else None
    if path is not None:
        _engines_to_close.add(storage.engine)
    return storage


# SQLite engines this process opened. Closed at exit, so that SQLite folds each WAL back into its
# database and removes the -wal and -shm files even when a failure (a full disk) ended the run early,
# rather than leaving that to the interpreter's teardown, which a fork or os._exit skips.
_engines_to_close: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    for engine in list(_engines_to_close):
        with contextlib.suppress(Exception):
            engine.dispose()


def check_storage(url: str) -> None:
    """What opening `url` to create a study would refuse, found without writing anything: a URL that
    does not parse, a folder or another program's file where a database goes, a missing driver, a
    server that does not answer. A run checks this before its first write, which may be long after."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX) :])
        if path.is_dir():
            raise UsageError(f"journal storage {path} is a folder; give a file, e.g. journal:{path / 'studies.log'}")
        _check_can_create(path)
        return
    parsed, engine_kwargs, path = _target(url, must_exist=False)
    if parsed.drivername.startswith("sqlite"):
        return
    with _one_line_errors(url, parsed):
        engine = sqlalchemy.create_engine(parsed, **engine_kwargs)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()


def _target(url: str, must_exist: bool) -> tuple[sqlalchemy.engine.URL, dict[str, Any], Path | None]:
    """The parsed URL, its engine's options and its SQLite file, once the URL and file are checked."""
    parsed = parse_url(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    path = sqlite_path(url)
    if parsed.drivername.startswith("sqlite"):
        if path is None:
            raise UsageError(
                f"storage {describe(url)} is in memory: the workers would not see it and every result would be "
                "lost at exit; give a file, e.g. sqlite:///studies/NAME.db"
            )
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_SECONDS}
        if path is not None:
            if must_exist:
                _check_sqlite_study_file(path)
            else:
                _check_not_foreign(path)
                _check_can_create(path)
    elif parsed.drivername.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the driver installed with us is psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed, engine_kwargs, path


@contextlib.contextmanager
def _one_line_errors(url: str, parsed: sqlalchemy.engine.URL, path: Path | None = None):
    """A missing driver, an unknown dialect, a refused connection, a full disk: one line that says what to do."""
    try:
        yield
    except ImportError as error:  # optuna re-raises the driver's ModuleNotFoundError as a plain ImportError
        missing = getattr(error.__cause__, "name", None) or getattr(error, "name", None) or "for its driver"
        raise UsageError(f"storage {describe(url)} needs the Python package {missing}; pip install it") from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise UsageError(
            f"storage URL {describe(url)} names no database that Optuna can use ({parsed.drivername}); "
            "use sqlite:///studies/NAME.db, postgresql://USER@HOST/DB or journal:PATH"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as error:
        reason = (str(getattr(error, "orig", None) or error).strip().splitlines() or [type(error).__name__])[0]
        if path is not None and is_disk_full(reason):
            raise disk_full(path.resolve().parent) from None
        raise UsageError(f"cannot use storage {describe(url)}: {scrub(reason, url)}") from None


def _open_journal(path: Path, must_exist: bool, read_only: bool = False) -> JournalStorage:
    if path.is_dir():
        raise UsageError(f"journal storage {path} is a folder; give a file, e.g. journal:{path / 'studies.log'}")
    if must_exist and not path.is_file():
        raise UsageError(f"no study journal at {path}; check --storage")
    if not must_exist:
        _check_folder(path)
    try:
        backend = _WholeRecordJournal(path)
        if not read_only:
            backend.drop_cut_off_record()  # before anything is appended after it
        storage = _JournalStorage(backend)
        storage.source_url, storage.created_file = f"{JOURNAL_PREFIX}{path}", None
        return storage
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full(path.parent) from None
        raise UsageError(f"cannot use journal {path}: {error.strerror}") from None
    except UsageError:
        raise
    except Exception as error:  # a file that is not a journal fails in many ways while its log is replayed
        raise UsageError(
            f"{path} is not an Optuna journal ({type(error).__name__} while reading it); check --storage"
        ) from None


def failure_reason(error: BaseException) -> str:
    """The first line of the deepest error behind a storage's failure: the driver's own words (SQLite's
    "database or disk is full"), which Optuna's and SQLAlchemy's wrappers hide as a cause or context."""
    chain, seen = [error], {id(error)}
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None and id(inner) not in seen:
        chain.append(inner)
        seen.add(id(inner))
    texts = [str(getattr(link, "orig", None) or link).strip() for link in chain]
    said = [text.splitlines()[0] for text in texts if text]
    driver = [
        text.splitlines()[0]
        for link, text in zip(chain, texts, strict=True)
        if text and (getattr(link, "orig", None) is not None or isinstance(link, OSError | sqlite3.Error))
    ]
    full = [text for text in said if is_disk_full(text)]
    return (full or driver[-1:] or said or [type(error).__name__])[0]


def is_disk_full(reason: str) -> bool:
    """Whether a storage's error text says its disk is full (SQLite's wording, or the system's)."""
    return "database or disk is full" in reason or "No space left on device" in reason


def _remove_unused_database(path: Path) -> None:
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


def failed_write(storage: optuna.storages.BaseStorage, error: BaseException) -> UsageError:
    """A write that the storage refused (a full disk, a lost server) as one line; a SQLite file that
    open_storage made for this run and that holds no study yet is removed, so nothing half-made stays."""
    url = getattr(storage, "source_url", None) or ""
    reason = failure_reason(error)
    created = getattr(storage, "created_file", None)
    if created is not None:
        with contextlib.suppress(Exception):
            storage.engine.dispose()  # its connections closed first, so the file goes with its side files
        _remove_unused_database(created)
    path = None if not url or url.startswith(JOURNAL_PREFIX) else sqlite_path(url)
    if path is not None and is_disk_full(reason):
        return disk_full(path.resolve().parent)
    where = describe(url) if url else "the storage"
    return UsageError(f"storage {where} failed: {scrub(reason, url)}; run the same command again once it works")


def disk_full(folder: Path) -> UsageError:
    """The one line for a full disk: it names the disk (by a folder on it) and how to go on."""
    return UsageError(
        f"the disk holding {folder} is full (No space left on device); free space on it, "
        "then run the same command again: the study resumes"
    )


class _WholeRecordJournal(JournalFileBackend):
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


def _check_sqlite_study_file(path: Path) -> None:
    """An existing SQLite file with Optuna's tables, checked through a read-only connection."""
    if not path.is_file():
        raise UsageError(f"no study database at {path}; check --storage")
    tables, stamped = _sqlite_tables(path, reader_uri(path), and_stamped=True)
    if not set(OPTUNA_TABLES) <= tables:
        raise UsageError(f"{path} is not an Optuna study database (it has no Optuna tables); check --storage")
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
        raise UsageError(f"cannot read the database {path}: {error}; check --storage") from None
    except sqlite3.DatabaseError as error:
        raise UsageError(f"{path} is not a study database ({error}); check --storage") from None


def _check_not_foreign(path: Path) -> None:
    """A study may be created in a new or empty file or an Optuna database, not in another program's."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a database file, e.g. sqlite:///{path / 'studies.db'}")
    if not path.is_file() or path.stat().st_size == 0:
        return
    tables = _sqlite_tables(path, f"{path.resolve().as_uri()}?mode=ro")
    if tables and not tables & {"studies", "version_info"}:
        raise UsageError(f"{path} is another program's SQLite database, not a study database; check --storage")


def _check_optuna_tables(parsed: sqlalchemy.engine.URL, engine_kwargs: dict[str, Any]) -> None:
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


def _begin_immediate(engine: sqlalchemy.engine.Engine) -> None:
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


def _check_can_create(path: Path) -> None:
    """The file can be made where it is named, judged without making anything: its nearest existing
    folder is a folder we may write in."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot create folder {path.parent}: {parent} is a file")
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create {path}: {parent} is not writable")


def _check_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create folder {path.parent}: {error.strerror}") from None


def default_artifacts(url: str) -> Path:
    """Model files live beside a SQLite or journal file, else under studies/artifacts."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX) :]).resolve().parent / "artifacts"
    path = sqlite_path(url)
    return (path.resolve().parent if path else Path("studies").resolve()) / "artifacts"
