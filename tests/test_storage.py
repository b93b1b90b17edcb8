"""The study layer in process, over every storage kind, the way Optuna's own tests run: SQLite, journal,
and PostgreSQL where ARCHSEARCH_TEST_PG is set."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from search.errors import UsageError
from search.study.lifecycle import check_settings, create_study, load_study, stored_settings
from search.study.record import StudyRecord, TrialRecord, write_study, write_trial
from search.study.storage import describe, has_password, open_storage, public_url, storage_calls_within
from search.study.workers import blocking_trials, fail_orphaned_trials, owner_is_gone, owner_record, run_until

SETTINGS = {"budget": 20000, "trials": 3, "epochs": 1, "storage": "placeholder"}


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    if request.param == "journal":
        return f"journal:{tmp_path / 'studies.log'}"
    return request.getfixturevalue("pg_schema_url")


def test_a_study_is_created_once_and_resumed_only_as_the_same_experiment(url):
    storage = open_storage(url)
    study = create_study(storage, "s", "search", SETTINGS, None, None)
    record = StudyRecord.of(study)
    assert (record.kind, record.config["budget"]) == ("search", 20000)
    again = create_study(open_storage(url), "s", "search", {**SETTINGS, "trials": 5}, None, None)
    assert again.study_name == "s" and StudyRecord.of(again).config["trials"] == 5  # more trials: the same study
    with pytest.raises(UsageError, match="exists with other settings"):
        create_study(open_storage(url), "s", "search", {**SETTINGS, "budget": 30000}, None, None)
    with pytest.raises(UsageError, match="is a search study, not a grid study"):
        check_settings(open_storage(url), "s", "grid", SETTINGS)
    assert stored_settings(url, "s", "search")["budget"] == 20000
    assert stored_settings(url, "s", "grid") is None


def test_a_study_stored_before_input_dropout_was_searched_resumes_without_it(url):
    """A setting added since a study was stored (search.study.lifecycle.ADDED_SETTINGS) takes the value that
    does what the study did; any other value is another experiment."""
    old_space = {"max_depth": 2, "dropout": [0.0, 0.3]}
    create_study(open_storage(url), "old", "search", {**SETTINGS, "space": old_space}, None, None)
    today = {**SETTINGS, "space": {**old_space, "input_dropout": (0.0, 0.0)}}
    again = create_study(open_storage(url), "old", "search", today, None, None)
    assert StudyRecord.of(again).config["space"]["input_dropout"] == [0.0, 0.0]
    searched = {**SETTINGS, "space": {**old_space, "input_dropout": (0.0, 0.2)}}
    create_study(open_storage(url), "old2", "search", {**SETTINGS, "space": old_space}, None, None)
    with pytest.raises(UsageError, match="exists with other settings"):
        create_study(open_storage(url), "old2", "search", searched, None, None)


def test_a_half_made_study_is_completed_and_a_foreign_one_refused(url):
    storage = open_storage(url)
    optuna.create_study(study_name="half", storage=storage)  # killed before kind and settings were stored
    assert check_settings(storage, "half", "search", SETTINGS) is None
    study = create_study(storage, "half", "search", SETTINGS, None, None)
    assert StudyRecord.of(study).kind == "search"

    foreign = optuna.create_study(study_name="theirs", storage=storage)
    foreign.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(UsageError, match="was not made by archsearch"):
        create_study(storage, "theirs", "search", SETTINGS, None, None)


def test_the_stored_storage_url_has_no_password(url):
    secret = "s3cret-not-stored"
    with_password = {**SETTINGS, "storage": f"postgresql://user:{secret}@db.example/studies"}
    study = create_study(open_storage(url), "p", "search", with_password, None, None)
    assert StudyRecord.of(study).config["storage"] == "postgresql://user@db.example/studies"
    assert secret not in str(load_study(open_storage(url), "p").user_attrs)


def test_run_until_ends_at_exactly_n_and_records_each_owner(url):
    study = create_study(open_storage(url), "n", "search", SETTINGS, None, None)
    assert run_until(study, lambda trial: float(trial.number), 3)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(TrialRecord.of(t).worker == owner_record() for t in trials)
    assert run_until(study, lambda trial: 0.0, 3)  # already done: no new trial
    assert len(study.get_trials(deepcopy=False)) == 3


def test_every_read_and_write_of_a_storage_runs_inside_the_context_set_for_its_calls(url, monkeypatch):
    """The CLI and the API set that context to hold Ctrl-C back until a storage call returns
    (search/api/signals.py): a database statement or journal read or write outside it could be cut off."""
    depth, outside, inside = [0], [], []

    @contextlib.contextmanager
    def counted():
        depth[0] += 1
        try:
            yield
        finally:
            depth[0] -= 1

    def seen(what: str) -> None:
        (inside if depth[0] else outside).append(what)

    def spied(name: str):
        method = getattr(JournalFileBackend, name)

        def spy(backend, *args, **kwargs):
            seen(name)
            return method(backend, *args, **kwargs)

        return spy

    storage = open_storage(url)
    if url.startswith("journal:"):
        for name in ("read_logs", "append_logs"):
            monkeypatch.setattr(JournalFileBackend, name, spied(name))
    else:
        sqlalchemy.event.listen(storage.engine, "before_cursor_execute", lambda *args: seen(args[2][:40]))

    def objective(trial):
        trial.report(trial.suggest_float("x", 0, 1), 1)
        write_trial(trial, pruned_reason="none")
        return 1.0

    with storage_calls_within(counted):
        study = create_study(storage, "guarded", "search", SETTINGS, None, None)
        assert run_until(study, objective, 3)
        assert len(load_study(storage, "guarded").get_trials()) == 3
    assert inside and not outside, outside


def test_run_until_stops_at_its_deadline(url):
    study = create_study(open_storage(url), "late", "search", SETTINGS, None, None)
    assert not run_until(study, lambda trial: 0.0, 3, deadline=0.0)
    assert study.get_trials(deepcopy=False) == []


def test_a_trial_whose_process_is_gone_is_failed_and_retried(url):
    study = create_study(open_storage(url), "dead", "search", SETTINGS, None, None)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = {**owner_record(), "pid": int(gone.stdout), "start": None}
    write_trial(trial, worker=owner)
    assert owner_is_gone(owner) and not owner_is_gone(owner_record())
    assert fail_orphaned_trials(study) == [trial.number]
    failed, retry = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.params == failed.params
    assert fail_orphaned_trials(study) == []


def test_a_trial_killed_before_it_recorded_its_owner_is_failed_and_retried_after_the_grace_period(url):
    study = create_study(open_storage(url), "unowned", "search", SETTINGS, None, None)
    trial = study.ask()  # a process killed right here leaves it running with no owner and no heartbeat
    trial.suggest_float("x", 0, 1)
    assert fail_orphaned_trials(study, grace_seconds=60) == []  # it may still be starting
    assert fail_orphaned_trials(study, grace_seconds=0) == [trial.number]  # started before now: past no grace
    failed, retry = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.params == failed.params


def test_owners_on_other_hosts_or_alive_are_left_alone():
    assert not owner_is_gone({**owner_record(), "host": "another-host", "pid": 2**22 + 7})
    assert not owner_is_gone(owner_record())
    assert not owner_is_gone(None) and not owner_is_gone({"pid": "x"})


def test_a_wait_on_this_hosts_running_trials_is_not_told_to_resume_elsewhere(url):
    """A frontier's own spawned worker finishing its last trial is a normal wait; only a trial whose
    process this host cannot see (another host, or no owner yet) may be one that is gone."""
    study = create_study(open_storage(url), "wait", "search", SETTINGS, None, None)
    here = study.ask()
    write_trial(here, worker=owner_record())
    assert (
        blocking_trials(study).names
        == f"#{here.number} (process {owner_record()['pid']} on host {owner_record()['host']})"
    )
    assert not blocking_trials(study).unchecked
    elsewhere = study.ask()
    write_trial(elsewhere, worker={**owner_record(), "host": "another-host"})
    assert blocking_trials(study).unchecked
    study.tell(elsewhere.number, state=TrialState.FAIL)
    assert not blocking_trials(study).unchecked
    study.ask()  # no owner recorded yet
    assert blocking_trials(study).unchecked


def test_records_refuse_fields_they_do_not_have(url):
    study = create_study(open_storage(url), "r", "search", SETTINGS, None, None)
    with pytest.raises(TypeError, match="not a field"):
        write_study(study, colour="blue")
    trial = study.ask()
    with pytest.raises(TypeError, match="not a field"):
        write_trial(trial, colour="blue")


def test_old_trials_read_with_the_defaults():
    """A trial from before profiles, weight decay and split sizes were recorded."""
    trial = optuna.trial.create_trial(
        value=0.5, user_attrs={"widths": [8, 8], "params": 6450, "train_config": {"weight_decay": 0.01}}
    )
    record = TrialRecord.of(trial)
    assert (record.profile, record.widths, record.weight_decay, record.dropout) == ("uniform", (8, 8), 0.01, 0.0)


@pytest.mark.parametrize(
    ("url", "shown", "public"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db", "postgresql://u@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///studies/x.db", "sqlite:///studies/x.db", "sqlite:///studies/x.db"),
        ("journal:/tmp/j.log", "journal:/tmp/j.log", "journal:/tmp/j.log"),
    ],
)
def test_urls_are_shown_masked_and_stored_bare(url, shown, public):
    assert describe(url) == shown and public_url(url) == public
    assert has_password(url) == ("pw" in url)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("content", [b"not a database at all\n", b""])
def test_readers_refuse_what_is_not_a_study_database_and_leave_it_as_it_was(tmp_path, content):
    path = tmp_path / "other.db"
    path.write_bytes(content)
    before = sha256(path)
    with pytest.raises(UsageError):
        open_storage(f"sqlite:///{path}", read_only=True)
    assert sha256(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_readers_refuse_another_programs_sqlite_database(tmp_path):
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (text)")
    before = sha256(path)
    for read_only in (True, False):
        with pytest.raises(UsageError, match="study database"):
            open_storage(f"sqlite:///{path}", read_only=read_only)
    assert sha256(path) == before


def test_missing_storages_are_refused_by_readers(tmp_path):
    for url in (f"sqlite:///{tmp_path / 'none.db'}", f"journal:{tmp_path / 'none.log'}"):
        with pytest.raises(UsageError, match="no study"):
            open_storage(url, read_only=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("stamped", [(), ("version_info",)], ids=["tables only", "version only"])
def test_a_reader_never_finishes_a_database_that_another_process_is_creating(kind, stamped, tmp_path, request):
    """Optuna creates the tables, then writes version_info's row, then alembic_version's; a reader that opened
    the database in between would write those rows itself (Optuna's RDBStorage does, even when told to skip
    table creation) and race the creator into a UNIQUE constraint failure. It is refused in one line instead,
    and the database keeps every byte; once the creator has finished, the reader opens it."""
    from optuna.storages._rdb import models

    url = f"sqlite:///{tmp_path / 'new.db'}" if kind == "sqlite" else request.getfixturevalue("pg_schema_url")
    engine = sqlalchemy.create_engine(open_storage_url(url))
    models.BaseModel.metadata.create_all(engine)  # the creator, caught between its steps
    if stamped:
        with engine.begin() as connection:
            version = {"schema_version": models.SCHEMA_VERSION, "library_version": optuna.__version__}
            connection.execute(sqlalchemy.insert(models.VersionInfoModel).values(version_info_id=1, **version))
    before = _contents(engine)
    for opening in (dict(read_only=True), dict(must_exist=True)):
        with pytest.raises(UsageError, match="is not finished: another process is creating it") as refused:
            open_storage(url, **opening)
        assert "\n" not in str(refused.value)
        assert _contents(engine) == before
    engine.dispose()
    open_storage(url)  # the creator finishes
    assert optuna.get_all_study_names(open_storage(url, read_only=True)) == []


def open_storage_url(url: str) -> str:
    parsed = sqlalchemy.engine.make_url(url)
    return (
        parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
        if parsed.drivername == "postgresql"
        else url
    )


def _contents(engine: sqlalchemy.engine.Engine) -> dict[str, list]:
    with engine.connect() as connection:
        names = sqlalchemy.inspect(connection).get_table_names()
        return {name: connection.execute(sqlalchemy.text(f"SELECT * FROM {name}")).all() for name in sorted(names)}


def test_a_heartbeat_that_fails_is_skipped_and_the_next_one_tries_again(tmp_path, monkeypatch):
    """Optuna beats from a thread of its own, where an error would print a traceback and end the beats."""
    storage = open_storage(f"sqlite:///{tmp_path / 'beats.db'}")
    study = create_study(storage, "beats", "search", SETTINGS, None, None)
    trial = study.ask()
    calls = []

    def full_disk(self, trial_id):
        calls.append(trial_id)
        raise optuna.exceptions.StorageInternalError("database or disk is full")

    monkeypatch.setattr(optuna.storages.RDBStorage, "record_heartbeat", full_disk)
    storage.record_heartbeat(trial._trial_id)
    storage.record_heartbeat(trial._trial_id)
    assert calls == [trial._trial_id] * 2


@pytest.mark.parametrize(
    ("revision", "says"),
    [("v3.0.0.d", "optuna storage upgrade"), ("v99.0.0.a", "updating optuna")],
    ids=["older-optuna", "newer-optuna"],
)
@pytest.mark.parametrize("read_only", [False, True], ids=["open", "read-only"])
def test_a_database_of_another_optunas_schema_is_refused_in_one_line_and_left_as_it_was(
    tmp_path, revision, says, read_only
):
    """open_storage checks the schema revision itself, reading the installed Optuna's once per process; a
    database at another revision still gets Optuna's own refusal, with its advice."""
    path = tmp_path / "studies.db"
    url = f"sqlite:///{path}"
    storage = open_storage(url)
    optuna.create_study(study_name="s", storage=storage)
    storage.engine.dispose()
    reader = open_storage(url, read_only=True)
    assert reader.get_current_version() == reader.get_head_version()
    reader.engine.dispose()  # closed before the file is compared: the last close folds the journal into it
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    before = path.read_bytes()
    with pytest.raises(UsageError) as refused:
        open_storage(url, read_only=read_only)
    message = str(refused.value)
    assert "\n" not in message and "table schema" in message and says in message, message
    assert path.read_bytes() == before
