"""The dashboard is not a door: read-only unless --allow-edits, on this machine only unless --public.

optuna-dashboard has no login and its API deletes and creates studies, so these check the guard in
front of it (a WSGI middleware), the real server behind the installed command, and the refusal to
listen beyond loopback, which must come before the command writes anything into the storage.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import sqlalchemy

from search.api.serving import is_loopback
from search.errors import worded_for_the_cli
from search.results.dashboard import guard, read_only_reason
from search.study.storage import open_storage
from tests.conftest import ENTRY_POINT, archsearch, free_port, start_archsearch
from tests.forked_cli import ForkedProcess

WRITES = ("POST", "PUT", "DELETE", "PATCH")
READS = ("GET", "HEAD", "OPTIONS")


def fake_dashboard(calls: list[str]):
    """A WSGI app that records each request it gets and answers 200."""

    def app(environ, start_response):
        calls.append(environ["REQUEST_METHOD"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"inner"]

    return app


def call(app, method: str, body: bytes = b"") -> tuple[str, bytes, io.BytesIO]:
    """(status line, body, request body stream) of one request to a WSGI app."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/api/studies/1", "wsgi.input": io.BytesIO(body)}
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    setup_testing_defaults(environ)
    started = []
    answer = b"".join(app(environ, lambda status, headers, exc_info=None: started.append(status)))
    return started[0], answer, environ["wsgi.input"]


@pytest.mark.parametrize("method", READS)
def test_reading_reaches_the_dashboard(method):
    calls = []
    status, answer, _ = call(guard(fake_dashboard(calls)), method)
    assert (status, answer, calls) == ("200 OK", b"inner", [method])


@pytest.mark.parametrize("method", [*WRITES, "delete", "PROPFIND"])
def test_anything_else_is_refused_before_the_dashboard(method):
    calls = []
    body = json.dumps({"study_name": "new", "directions": ["minimize"]}).encode()
    status, answer, stream = call(guard(fake_dashboard(calls)), method, body)
    assert status == "403 Forbidden"
    assert json.loads(answer) == {"reason": read_only_reason()}
    assert calls == []
    assert stream.tell() == len(body)  # read, so that closing the connection does not reset it


def test_the_refusal_names_the_setting_as_the_dashboard_was_started():
    """--allow-edits for `archsearch dashboard`, allow_edits=True for the API; fixed when the guard is built,
    since requests are served on other threads."""
    from_python = guard(fake_dashboard([]))
    with worded_for_the_cli():
        from_the_cli = guard(fake_dashboard([]))
    api_reason = json.loads(call(from_python, "DELETE")[1])["reason"]
    cli_reason = json.loads(call(from_the_cli, "DELETE")[1])["reason"]
    assert "allow_edits=True" in api_reason and "--allow-edits" not in api_reason
    assert "--allow-edits" in cli_reason and "allow_edits=" not in cli_reason


def test_allow_edits_lets_everything_through():
    calls = []
    app = guard(fake_dashboard(calls), allow_edits=True)
    for method in (*READS, *WRITES):
        assert call(app, method, b"{}")[:2] == ("200 OK", b"inner")
    assert calls == [*READS, *WRITES]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("example.org", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def request(method: str, url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=300) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def names(url: str) -> list[str]:
    return optuna.get_all_study_names(open_storage(url, must_exist=True))


@contextlib.contextmanager
def dashboard(url: str, log: Path, *flags: str):
    """`archsearch dashboard` on `url` at a free loopback port, once it answers; yields its base URL."""
    port = free_port()
    command = [str(ENTRY_POINT), "dashboard", "--storage", url, "--port", str(port), "--refresh", "0", *flags]
    with open(log, "w") as sink:  # a file, not a pipe: the server logs every request and must never block on it
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                request("GET", f"{base}/api/meta")
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 120 s"
                time.sleep(0.3)
        yield base
    finally:
        server.kill()
        server.wait(timeout=300)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request, tmp_path):
    """A storage URL holding one study of two finished trials; yields (URL, the study's name).

    The PostgreSQL one lives in a schema of its own, dropped afterwards: the dashboard lists and
    updates every study of its storage, and other tests' studies share the database."""
    name = f"guard-{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'studies.db'}"
        add_study(url, name)
        yield url, name
        return
    server = os.environ.get("ARCHSEARCH_TEST_PG")
    if not server:
        pytest.skip("ARCHSEARCH_TEST_PG is unset: start a server with `. .ci/postgres.sh` (.ci/run does)")
    schema = f"guard_{uuid.uuid4().hex[:8]}"
    parsed = sqlalchemy.engine.make_url(server)
    engine = sqlalchemy.create_engine(parsed.set(drivername="postgresql+psycopg2"))
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        in_schema = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
        url = in_schema.render_as_string(hide_password=False)
        add_study(url, name)
        yield url, name
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def add_study(url: str, name: str) -> None:
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=name)
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0) ** 2, n_trials=2)
    # Closed now rather than whenever the garbage collector reaches it: the last connection to a SQLite file
    # checkpoints its journal into it, which would change the file under a test that compares its bytes.
    storage.engine.dispose()


def test_dashboard_reads_but_refuses_changes_unless_allowed(storage_url, tmp_path):
    url, name = storage_url
    created = f"{name}-created"
    with dashboard(url, tmp_path / "read-only.log") as base:
        status, answer = request("GET", f"{base}/api/studies")
        assert status == 200
        number = {s["study_name"]: s["study_id"] for s in json.loads(answer)["study_summaries"]}[name]
        for page in (f"/dashboard/studies/{number}", f"/api/studies/{number}", f"/csv/{number}"):
            assert request("GET", base + page)[0] == 200, page
        assert len(json.loads(request("GET", f"{base}/api/studies/{number}")[1])["trials"]) == 2

        status, answer = request("DELETE", f"{base}/api/studies/{number}", {"remove_associated_artifacts": True})
        with worded_for_the_cli():
            from_the_command = read_only_reason()
        assert (status, json.loads(answer)) == (403, {"reason": from_the_command})
        status, _ = request("POST", f"{base}/api/studies", {"study_name": created, "directions": ["minimize"]})
        assert status == 403
    assert len(optuna.load_study(study_name=name, storage=open_storage(url)).trials) == 2
    assert names(url) == [name]

    with dashboard(url, tmp_path / "edits.log", "--allow-edits") as base:
        assert request("DELETE", f"{base}/api/studies/{number}")[0] == 204
    assert name not in names(url)


def test_listening_beyond_this_machine_needs_public(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    add_study(url, "guarded")
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    result = archsearch("dashboard", "--storage", url, "--host", "0.0.0.0", "--port", str(free_port()), timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archsearch: error: "), result.stderr
    assert "--public" in lines[0] and "read every study" in lines[0]
    assert result.stdout == ""
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("flags", "rights"), [((), "can read every study"), (("--allow-edits",), "can read, change and delete every study")]
)
def test_public_start_up_line_warns(tmp_path, flags, rights):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    add_study(url, "public")
    port = free_port("0.0.0.0")
    log, errors = tmp_path / "stdout.log", tmp_path / "stderr.log"
    command = [str(ENTRY_POINT), "dashboard", "--storage", url, "--host", "0.0.0.0", "--port", str(port)]
    with open(log, "w") as out, open(errors, "w") as err:
        server = subprocess.Popen([*command, "--public", "--refresh", "0", *flags], stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while "\n" not in log.read_text():
            assert server.poll() is None, errors.read_text()[-2000:]
            assert time.monotonic() < deadline, "no start-up line within 120 s"
            time.sleep(0.2)
        line = log.read_text().splitlines()[0]
    finally:
        server.kill()
        server.wait(timeout=300)
    assert f"anyone who can reach port {port} on 0.0.0.0 {rights} in the storage" in line, line


def test_sigterm_stops_the_dashboard_even_in_the_middle_of_a_request(storage_url, tmp_path):
    """A stop that lands while a request is served is not lost: wsgiref logs and drops any exception
    raised inside a request, so the requests run on a thread of their own and the stop lands in the wait."""
    url, _ = storage_url
    for attempt in range(5):  # each a process of its own, forked from one that imported the CLI already
        log, errors = tmp_path / f"log-{attempt}", tmp_path / f"errors-{attempt}"
        port = free_port()
        command = ["dashboard", "--storage", url, "--port", str(port), "--refresh", "0"]
        server = start_archsearch(*command, env={}, cwd=tmp_path, stdout=log, stderr=errors)
        try:
            stop_under_load(server, f"http://127.0.0.1:{port}")
            assert server.wait(timeout=300) in (0, 128 + signal.SIGTERM), (log.read_text() + errors.read_text())[-2000:]
        finally:
            server.kill()
            server.wait(timeout=300)


def stop_under_load(server: ForkedProcess, base: str) -> None:
    """SIGTERM while another thread keeps the dashboard answering its largest request."""
    deadline = time.monotonic() + 600  # a hang guard
    while True:
        try:
            request("GET", f"{base}/api/studies")
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
    answered = threading.Event()

    def keep_asking() -> None:
        while server.poll() is None:
            with contextlib.suppress(OSError):
                request("GET", f"{base}/api/studies/1")
                answered.set()

    threading.Thread(target=keep_asking, daemon=True).start()
    assert answered.wait(300), "the dashboard never answered its largest request"
    server.send_signal(signal.SIGTERM)
