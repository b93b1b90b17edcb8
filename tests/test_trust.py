"""Trust: no password leaves the command line, nothing half-made, nothing stuck, signals and limits obeyed.

Each test drives the installed `archsearch` as a user (or a scheduler) would and then reads the storage
directly to check what it holds.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from search.study.lifecycle import create_study
from search.study.record import TrialRecord, write_study
from search.study.storage import open_storage
from search.study.workers import owner_is_gone
from tests.conftest import (
    ENTRY_POINT,
    archsearch,
    children_of,
    command_env,
    free_port,
    paced_epochs,
    start_archsearch,
    wait_for,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PG = os.environ.get("ARCHSEARCH_TEST_PG")
QUICK = ("--budget", "20000", "--max-depth", "2", "--data-limit", "300", "--device", "cpu")
# Trials to be caught part-way train a few hundred images, paced (conftest.paced_epochs): each reported epoch is
# followed by PAUSE s asleep, so a trial lasts EPOCHS pauses without the CPU that long real training would take.
EPOCHS = 8
PAUSE = 0.4


def study_file(folder: Path, name: str, storage: str, trials: int) -> Path:
    """A search study of EPOCHS epochs on 300 images with a 1 s heartbeat and a 3 s grace period, its trials
    all of one kind (batch 16, Adam, a constant rate)."""
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nbudget = 20000\ntrials = {trials}\nepochs = {EPOCHS}\ndata_limit = 300\n'
        f'sampler = "random"\npruner = "none"\nheartbeat_seconds = 1\ngrace_seconds = 3\nstorage = "{storage}"\n'
        '\n[space]\nmax_depth = 2\nbatch_sizes = [16]\noptimizers = ["adam"]\nschedules = ["constant"]\n'
    )
    return path


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url, read_only=True))


def running_trials(url: str, name: str) -> int:
    """Running trials mid-training: at least one epoch reported, and at least half of EPOCHS still to go (paced,
    a second or more), so that they are still running when the test's signal lands."""
    try:
        trials = load(url, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:  # the study does not exist yet
        return 0
    return sum(1 <= len(t.intermediate_values) <= EPOCHS // 2 for t in trials)


def completed_trials(url: str, name: str) -> int:
    return len(load(url, name).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def descendants(pid: int) -> list[int]:
    found = children_of(pid)
    for child in list(found):
        found += descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# Secrets --------------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_a_database_password_is_found_nowhere(tmp_path, mnist_root, pg_schema_url, form):
    from sqlalchemy.engine import URL, make_url

    parsed = make_url(pg_schema_url)
    secret = parsed.password
    assert secret and len(secret) >= 12
    url = pg_schema_url
    if form == "query":  # postgresql://USER@HOST/DB?password=SECRET: the password as a query parameter
        url = URL.create(
            parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database,
            {**parsed.query, "password": secret},
        ).render_as_string(hide_password=False)  # fmt: skip
        assert secret in url and f":{secret}@" not in url
    name = f"secret-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **command_env(mnist_root)}
    seen: list[str] = []
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    # Paced trials: one done (for `best` below) and both processes (the search and its spawned worker) mid-trial
    # when Ctrl-C comes; far more are asked than the search's own process finishes while the worker starts.
    search = start_archsearch(
        "search", "--study", name, "--storage", url, "--workers", "2", "--trials", "40", "--epochs", str(EPOCHS),
        *QUICK, env={**env, **paced_epochs(tmp_path, PAUSE)}, cwd=tmp_path, stdout=out_path, stderr=err_path,
        new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: running_trials(url, name) >= 2 and completed_trials(url, name), search, err_path)
        # The command line typed holds the password; the workers' command lines must not.
        command_lines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in descendants(search.pid)]
        assert command_lines, "the spawned worker is missing"
        os.killpg(search.pid, signal.SIGINT)
        search.wait(timeout=120)
    finally:
        search.kill()
    out, err = out_path.read_text(), err_path.read_text()
    assert search.returncode == 130, err
    seen += [out, err, *(line.decode(errors="replace") for line in command_lines)]
    assert len([line for line in err.splitlines() if "Resume with:" in line]) == 1, err

    steps = [
        ("best", "--study", name, "--storage", url),
        ("best", "--study", name, "--storage", url, "--json"),
        ("export", "--study", name, "--storage", url, "--out", str(tmp_path / "exported"), "--format", "html"),
        ("report", "--storage", url, "--out", str(tmp_path / "report")),
    ]
    for step in steps:
        result = archsearch(*step, env=env, cwd=tmp_path)
        assert result.returncode == 0, (step, result.stderr)
        seen += [result.stdout, result.stderr]
    seen.append(dashboard_api(url, tmp_path, env))
    seen += [path.read_text(errors="replace") for path in tmp_path.rglob("*") if path.is_file()]
    seen += database_text(url)
    leaks = [text[max(0, text.find(secret) - 80) : text.find(secret) + 20] for text in seen if secret in text]
    assert not leaks, leaks


def dashboard_api(url: str, folder: Path, env: dict[str, str]) -> str:
    """Everything the dashboard's API says about the storage's studies, as text."""

    port = free_port()
    out_path, err_path = folder / "dashboard-out", folder / "dashboard-err"
    server = start_archsearch(
        "dashboard", "--storage", url, "--port", str(port), env=env, cwd=folder, stdout=out_path, stderr=err_path
    )
    try:
        text = ""
        deadline = time.monotonic() + 600  # a hang guard
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=300) as response:
                    text = response.read().decode()
                break
            except OSError:
                assert server.poll() is None, err_path.read_text()
                time.sleep(0.1)
        assert text, "the dashboard never answered"
        for study in json.loads(text)["study_summaries"]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=300) as r:
                text += r.read().decode()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=300)
        server.kill()
    return text + out_path.read_text(errors="replace") + err_path.read_text(errors="replace")


def database_text(url: str) -> list[str]:
    """Every row of every table of the database, as text."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(sqlalchemy.engine.make_url(url).set(drivername="postgresql+psycopg2"))
    try:
        with engine.connect() as connection:
            tables = sqlalchemy.inspect(connection).get_table_names()
            return [
                str(row) for table in tables for row in connection.execute(sqlalchemy.text(f'SELECT * FROM "{table}"'))
            ]
    finally:
        engine.dispose()


def test_resume_hint_is_quoted_and_printed_once(tmp_path, mnist_root):
    name = "x;touch PWNED;#"
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    err_path = tmp_path / "err"
    # One process, mid-trial (paced) when Ctrl-C comes. That a spawned worker never adds a hint of its own is
    # asserted where a worker is spawned anyway (test_faults.py's Ctrl-C, and the password's test above).
    search = start_archsearch(
        "search", "--study", name, "--storage", url, "--trials", "4", "--epochs", str(EPOCHS), *QUICK,
        env=command_env(mnist_root, **paced_epochs(tmp_path, PAUSE)), cwd=tmp_path, stderr=err_path,
        new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: running_trials(url, name) >= 1, search, err_path)
        os.killpg(search.pid, signal.SIGINT)
        search.wait(timeout=120)
    finally:
        search.kill()
    err = err_path.read_text()
    hints = [line for line in err.splitlines() if "Resume with:" in line]
    assert len(hints) == 1, err
    command = hints[0].split("Resume with: ", 1)[1]
    assert shlex.split(command)[:3] == ["archsearch", "search", f"--study={name}"]
    # Pasted into a shell, it is one command: the shell sees no `;` outside quotes and creates no file.
    subprocess.run(["bash", "-c", f"archsearch() {{ :; }}; {command}"], cwd=tmp_path, check=True)
    assert not (tmp_path / "PWNED").exists()


# Creation: all or nothing, and races --------------------------------------------------------------

# Loaded by the search process (PYTHONPATH): SIGKILL itself right after the study got its kind, before
# its settings are stored: the moment a kill leaves a study half-made.
KILL_DURING_CREATION = """
import os, signal
import optuna.study

_set = optuna.study.Study.set_user_attr

def set_user_attr(self, key, value):
    _set(self, key, value)
    if key == "kind":
        os.kill(os.getpid(), signal.SIGKILL)

optuna.study.Study.set_user_attr = set_user_attr
"""


@pytest.mark.parametrize("command", ["search", "grid"])
def test_a_kill_during_creation_leaves_a_study_the_next_run_completes(tmp_path, mnist_root, command):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_DURING_CREATION)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    if command == "search":
        args = ("search", "--study", "half", "--storage", url, "--trials", "2", "--epochs", "1", *QUICK)
    else:
        args = ("grid", "--study", "half", "--storage", url, "--budgets", "5000", "--depths", "1", "--seeds", "2",
                "--epochs", "1", "--data-limit", "500", "--device", "cpu")  # fmt: skip
    # Forked from a process that imported the CLI already (the hook patches a method, so it works there too).
    err = tmp_path / "err"
    killed = start_archsearch(*args, env=command_env(mnist_root, PYTHONPATH=str(hook)), cwd=tmp_path, stderr=err)
    assert killed.wait(timeout=600) == -signal.SIGKILL, err.read_text()
    half = load(url, "half")
    assert "kind" in half.user_attrs and "config" not in half.user_attrs  # the kill struck in between

    resumed = archsearch(*args, env=command_env(mnist_root), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    study = load(url, "half")
    assert study.user_attrs["kind"] == command and "config" in study.user_attrs
    assert sum(t.state in FINISHED for t in study.get_trials(deepcopy=False)) == 2


def test_a_half_made_study_of_another_kind_is_refused_in_one_line(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = open_storage(url)
    write_study(optuna.create_study(study_name="half", storage=storage), kind="grid")
    result = archsearch("search", "--study", "half", "--storage", url, "--trials", "1", "--epochs", "1", *QUICK,
                        env=command_env(mnist_root), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "archsearch: error: study 'half' is a grid study, not a search study; choose another --study"
    ]


def storages_for_races(tmp_path: Path) -> list[str]:
    urls = [f"sqlite:///{tmp_path / 'race.db'}", f"journal:{tmp_path / 'race.log'}"]
    return [*urls, PG] if PG else urls


# Rounds on a storage until this many had both runs try to create the study (one of them then meets Optuna's
# DuplicatedStudyError): the race the test is about, seen each time rather than hoped for. Two runs at a barrier
# race in about a quarter of the rounds on a journal and in most on SQLite and PostgreSQL; the most rounds is a
# hang guard.
RACES = 3
MAX_ROUNDS = 200


def test_simultaneous_creations_end_on_one_study(tmp_path, monkeypatch):
    """Two runs creating the same study at the same instant, on each storage, until they have raced RACES times."""
    config = {"budget": 20000, "trials": 5, "storage": "x"}
    duplicated: list[str] = []
    create = optuna.create_study

    def counted(*args, **kwargs) -> optuna.Study:
        try:
            return create(*args, **kwargs)
        except optuna.exceptions.DuplicatedStudyError:
            duplicated.append(kwargs["study_name"])
            raise

    monkeypatch.setattr(optuna, "create_study", counted)
    for url in storages_for_races(tmp_path):
        # Each run's storage, and one to check with, opened once (0.3 s each) and kept across the rounds.
        runs, checked = [open_storage(url), open_storage(url)], open_storage(url)
        duplicated.clear()
        for round_ in range(MAX_ROUNDS):
            if len(duplicated) >= RACES:
                break
            name = f"race-{uuid.uuid4().hex[:8]}-{round_}"
            start = threading.Barrier(2)
            outcomes: list[object] = []

            def create_at_once(storage, name=name, start=start, outcomes=outcomes) -> None:
                start.wait()
                try:
                    study = create_study(storage, name, "search", config, None, None)
                    outcomes.append(study.study_name)
                except Exception as error:  # recorded, so the assertion shows it
                    outcomes.append(error)

            threads = [threading.Thread(target=create_at_once, args=(storage,)) for storage in runs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert outcomes == [name, name], (url.split(":")[0], outcomes)
            study = optuna.load_study(study_name=name, storage=checked)
            assert study.user_attrs["kind"] == "search"
            assert study.user_attrs["config"]["budget"] == 20000
            if url == PG:
                optuna.delete_study(study_name=name, storage=checked)
        assert len(duplicated) >= RACES, (url.split(":")[0], round_)


# Journal: a killed run's trial does not block its resume --------------------------------------------


def test_journal_resume_after_sigkill_ends_within_the_grace_period(tmp_path, mnist_root):
    url = f"journal:{tmp_path / 'studies.log'}"
    config = study_file(tmp_path, "journal", url, trials=3)
    env = command_env(mnist_root)
    err = tmp_path / "err"
    search = start_archsearch(
        "search", "--config", str(config), "--device", "cpu", env={**env, **paced_epochs(tmp_path, PAUSE)},
        cwd=tmp_path, stderr=err,
    )  # fmt: skip
    try:
        wait_for(lambda: running_trials(url, "journal") >= 1, search, err)
        search.send_signal(signal.SIGKILL)
        search.wait(timeout=300)
    finally:
        search.kill()
    study = optuna.load_study(
        study_name="journal", storage=JournalStorage(JournalFileBackend(str(tmp_path / "studies.log")))
    )
    (stuck,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    resumed = archsearch("search", "--config", str(config), "--device", "cpu", env=env, cwd=tmp_path, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    trials = optuna.load_study(
        study_name="journal", storage=JournalStorage(JournalFileBackend(str(tmp_path / "studies.log")))
    ).get_trials(deepcopy=False)
    assert trials[stuck.number].state == TrialState.FAIL
    assert sum(t.state in FINISHED for t in trials) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == stuck.number]
    assert retry.params == stuck.params
    # It never waited on the dead trial (it says so whenever it waits on one).
    assert "waiting for running trial" not in resumed.stdout + resumed.stderr


def test_journal_storage_on_a_folder_is_one_line(tmp_path):
    result = archsearch("search", "--study", "x", "--storage", f"journal:{tmp_path}", "--trials", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "is a folder" in result.stderr


# Signals and limits ---------------------------------------------------------------------------------


def test_sigterm_fails_running_trials_stops_workers_and_says_how_to_resume(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    config = study_file(tmp_path, "term", url, trials=6)
    err = tmp_path / "err"
    search = start_archsearch(
        "search", "--config", str(config), "--workers", "2", "--device", "cpu",
        env=command_env(mnist_root, **paced_epochs(tmp_path, PAUSE, processes=2)), cwd=tmp_path, stderr=err,
    )  # fmt: skip
    try:
        wait_for(lambda: running_trials(url, "term") >= 2, search, err)
        workers = descendants(search.pid)
        assert workers
        search.send_signal(signal.SIGTERM)  # to the main process only, as `kill PID` or systemd would
        assert search.wait(timeout=300) == 143, err.read_text()
    finally:
        search.kill()
    text = err.read_text()
    assert "Traceback" not in text
    assert len([line for line in text.splitlines() if "Resume with: archsearch search" in line]) == 1, text
    assert not [pid for pid in workers if alive(pid)], "a worker outlived its parent"
    trials = load(url, "term").get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.FAIL for t in trials) == 2


def test_workers_end_when_their_parent_is_killed(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    config = study_file(tmp_path, "orphans", url, trials=6)
    err = tmp_path / "err"
    # One spawned worker (each runs the same watch on its parent), killed with its parent mid-trial: both
    # processes' first trials are paced and held at their first epoch until both have reached it.
    search = start_archsearch(
        "search", "--config", str(config), "--workers", "2", "--device", "cpu",
        env=command_env(mnist_root, **paced_epochs(tmp_path, PAUSE, processes=2)), cwd=tmp_path, stderr=err,
    )  # fmt: skip
    try:
        wait_for(lambda: running_trials(url, "orphans") >= 2, search, err)
        workers = children_of(search.pid)
        assert len(workers) == 1, workers
        search.send_signal(signal.SIGKILL)
        search.wait(timeout=300)
    finally:
        search.kill()
    deadline = time.monotonic() + 30
    while [pid for pid in workers if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if alive(pid)], "workers outlived a killed parent"


def test_timeout_stops_cleanly_and_the_same_command_resumes_to_exactly_n(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    # Paced trials of 2 epochs last at least 2 pauses: no trial starts after the 2 s, so each of the two
    # processes starts at most 3 of them, fewer than asked however slow the machine.
    asked = 10
    args = ("search", "--study", "timed", "--storage", url, "--trials", str(asked), "--epochs", "2",
            "--workers", "2", *QUICK)  # fmt: skip
    out, err = tmp_path / "out", tmp_path / "err"
    for run in ("first", "resumed"):
        (tmp_path / run).mkdir()
    first = start_archsearch(
        *args, "--timeout", "2s", env=command_env(mnist_root, **paced_epochs(tmp_path / "first", PAUSE)),
        cwd=tmp_path, stdout=out, stderr=err,
    )  # fmt: skip
    assert first.wait(timeout=600) == 0, err.read_text()
    line = next(line for line in out.read_text().splitlines() if line.startswith("stopped at --timeout"))
    done = int(line.split(": ", 1)[1].split(" of ")[0])
    assert 0 <= done < asked
    assert "Resume with: archsearch search --study=timed" in line
    trials = load(url, "timed").get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # The same command again, its two processes racing for the trials left (at least 4): each holds its first
    # trial at its first epoch until the other has one too.
    resumed = start_archsearch(
        *args, env=command_env(mnist_root, **paced_epochs(tmp_path / "resumed", 0.05, processes=2)),
        cwd=tmp_path, stderr=err,
    )  # fmt: skip
    assert resumed.wait(timeout=600) == 0, err.read_text()
    states = Counter(t.state for t in load(url, "timed").get_trials(deepcopy=False))
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == asked, states


# A full disk ----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs root, as CI has); skipped with the reason where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` until only about `leave` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    (folder / ".filler").write_bytes(b"\0" * max(0, free - leave))


def test_a_full_disk_is_one_line_leaves_no_partial_files_and_the_study_resumes(tmp_path, small_disk, mnist_root):
    env = command_env(mnist_root)
    url = f"sqlite:///{small_disk / 'studies.db'}"
    # The free space left takes the first trial's model and records (its write-ahead log grows meanwhile) and
    # runs out in the second of the trials asked: ten are many more than fit, and the resume trains them all.
    asked = 10
    args = ("search", "--study", "full", "--storage", url, "--trials", str(asked), "--epochs", "1", *QUICK)
    fill(small_disk, leave=900_000)
    result = archsearch(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    (line,) = result.stderr.splitlines()
    assert str(small_disk) in line and ("No space left" in line or "full" in line), line
    with sqlite3.connect(small_disk / "studies.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # A trial whose end could not be written stays RUNNING, owned by a process that is gone: the resume fails it.
    for trial in load(url, "full").get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        assert owner_is_gone(TrialRecord.of(trial).worker)

    # Exports and the report: one line, and nothing half-written left on the full disk.
    out_before = sorted(p.name for p in small_disk.iterdir())
    for command in (
        ("export", "--study", "full", "--storage", url, "--out", str(small_disk / "exports"), "--format", "html"),
        ("report", "--storage", url, "--out", str(small_disk / "report")),
    ):
        written = archsearch(*command, env=env, cwd=tmp_path)
        assert written.returncode == 2, written.stderr  # each page embeds plotly.js: megabytes
        assert len(written.stderr.splitlines()) == 1 and str(small_disk) in written.stderr, written.stderr
        assert sorted(p.name for p in small_disk.iterdir()) == out_before
    (small_disk / ".filler").unlink()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = archsearch(*args, env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sum(t.state in FINISHED for t in load(url, "full").get_trials(deepcopy=False)) == asked


def test_sys_executable_is_the_tests_python():
    """The fault tests find workers as children running this interpreter's `-m search worker`."""
    assert Path(sys.executable).with_name("archsearch") == ENTRY_POINT
