"""Storages: any Optuna storage URL or journal file, opened so that bad input is one line.

Passwords stay out of what is printed or stored (`describe`, `public_url`); readers open a
storage without creating, migrating or switching anything. Every call into a storage runs inside
`storage_calls_within`'s context, which the CLI and the API set to hold Ctrl-C and SIGTERM back
until the call returns: a stop raised inside SQLAlchemy's session bookkeeping leaves a session that
fails every later call of the process (IllegalStateChangeError), so the trial it stopped could not
even be marked failed.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

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


@_calls_guarded
class _JournalStorage(JournalStorage):
    """Optuna's JournalStorage, its calls run inside storage_calls_within's context."""


def describe(url: str) -> str:
    """The URL with any password masked, for messages."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "an unparseable storage URL"


def public_url(url: str) -> str:
    """The URL without its password: what may be stored, printed in a command or passed on argv.

    The password then comes from ~/.pgpass, PGPASSWORD or ARCHSEARCH_STORAGE, never from a
    place that other users (`ps`), the dashboard's API or a shared log can read."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return url
    if not parsed.password:
        return url
    # URL.set ignores None, so the URL is built again without the password.
    bare = sqlalchemy.engine.URL.create(
        parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
    )
    return bare.render_as_string(hide_password=False)


def has_password(url: str) -> bool:
    return public_url(url) != url


def sqlite_path(url: str) -> Path | None:
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database)
    return None


def open_storage(
    url: str, heartbeat_seconds: int = 5, grace_seconds: int = 20, must_exist: bool = False, read_only: bool = False
):
    """Any Optuna storage URL, or `journal:PATH` for a journal file; errors become one line.

    `must_exist` opens only a storage that already holds Optuna's tables (a worker joining a study);
    `read_only` also leaves the database exactly as it was (best, export, report): no tables created,
    no schema migrated, no journal mode switched. Both refuse anything else with one line, before
    Optuna would quietly add its tables to, say, a mistyped path of some other SQLite file."""
    must_exist = must_exist or read_only
    if url.startswith(JOURNAL_PREFIX):
        return _open_journal(Path(url[len(JOURNAL_PREFIX) :]), must_exist)
    parsed, engine_kwargs, path = _target(url, must_exist)
    if path is not None and not must_exist:
        _check_folder(path)
    with _one_line_errors(url, parsed):
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
    return storage


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
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UsageError(
            f"storage URL {_mask_unparsed(url)!r} does not parse; use sqlite:///studies/NAME.db, "
            "postgresql://USER@HOST/DB (password in ~/.pgpass) or journal:PATH"
        ) from None
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    path = sqlite_path(url)
    if parsed.drivername.startswith("sqlite"):
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
def _one_line_errors(url: str, parsed: sqlalchemy.engine.URL):
    """A missing driver, an unknown dialect, a refused connection: one line that says what to do."""
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
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise UsageError(f"cannot use storage {describe(url)}: {reason}") from None


def _mask_unparsed(url: str) -> str:
    """A URL that SQLAlchemy cannot parse may still carry a password after `user:`; hide it."""
    return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)


def _open_journal(path: Path, must_exist: bool) -> JournalStorage:
    if path.is_dir():
        raise UsageError(f"journal storage {path} is a folder; give a file, e.g. journal:{path / 'studies.log'}")
    if must_exist and not path.is_file():
        raise UsageError(f"no study journal at {path}; check --storage")
    if not must_exist:
        _check_folder(path)
    try:
        return _JournalStorage(JournalFileBackend(str(path)))
    except OSError as error:
        raise UsageError(f"cannot use journal {path}: {error.strerror}") from None
    except Exception as error:  # a file that is not a journal fails in many ways while its log is replayed
        raise UsageError(
            f"{path} is not an Optuna journal ({type(error).__name__} while reading it); check --storage"
        ) from None


def _check_sqlite_study_file(path: Path) -> None:
    """An existing SQLite file with Optuna's tables, checked through a read-only connection."""
    if not path.is_file():
        raise UsageError(f"no study database at {path}; check --storage")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not set(OPTUNA_TABLES) <= tables:
                raise UsageError(f"{path} is not an Optuna study database (it has no Optuna tables); check --storage")
            stamped = all(
                STAMP_TABLE in tables and connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
                for table in (STAMP_TABLE, "version_info")
            )
    except sqlite3.DatabaseError as error:
        raise UsageError(f"{path} is not a study database ({error}); check --storage") from None
    if not stamped:
        raise UsageError(_unfinished(str(path)))


def _check_not_foreign(path: Path) -> None:
    """A study may be created in a new or empty file or an Optuna database, not in another program's."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a database file, e.g. sqlite:///{path / 'studies.db'}")
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise UsageError(f"{path} is not a study database ({error}); check --storage") from None
    if tables and not tables & {"studies", "version_info"}:
        raise UsageError(f"{path} is another program's SQLite database, not a study database; check --storage")


def _check_optuna_tables(parsed: sqlalchemy.engine.URL, engine_kwargs: dict[str, Any]) -> None:
    """A server database with Optuna's tables; looked at without creating anything."""
    engine = sqlalchemy.create_engine(parsed, **engine_kwargs)
    where = parsed.render_as_string(hide_password=True)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
        if not set(OPTUNA_TABLES) <= tables:
            raise UsageError(f"no Optuna study tables in {where}; run `archsearch search` or `grid` there first")
        with engine.connect() as connection:
            stamped = all(
                STAMP_TABLE in tables
                and connection.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar_one() > 0
                for table in (STAMP_TABLE, "version_info")
            )
    finally:
        engine.dispose()
    if not stamped:
        raise UsageError(_unfinished(where))


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
