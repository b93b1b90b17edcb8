"""optuna-dashboard on our storage, with the figures it cannot draw itself attached to each study.

Optuna's dashboard reads trials and intermediate values straight from the storage, so a running
search shows up live. Our own figures are snapshots saved into the study, refreshed while the
dashboard runs whenever the number of finished trials changes.

optuna-dashboard has no login, and its API creates, renames and deletes studies, tells trials, and
writes notes, user attributes, preferences and artifacts. So it is served read-only unless asked:
a small WSGI middleware answers 403 to every method other than GET, HEAD and OPTIONS. The method
alone decides because, in optuna-dashboard 0.21, no GET route writes (the pages, /api/meta,
/api/studies and a study's detail, parameter importances, plots, the CSV download, static files,
artifact downloads and the schema-migration notice only read), every route that writes is a POST,
PUT or DELETE (the schema migration that notice offers included), and none of the plain viewing
uses those: the only POSTs that merely read are the LLM queries, which answer only with an LLM
provider configured, and we never configure one.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import optuna_dashboard
import plotly.graph_objects as go
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore

from search.errors import worded
from search.results.frontier_plot import frontier_plot
from search.results.plots import Plot, own_plots
from search.results.tables import frontier_names, frontier_rows
from search.study.lifecycle import study_names
from search.study.record import StudyRecord
from search.study.workers import FINISHED

GRAPH_PREFIX = "archsearch-"
OBJECTIVES = {"grid": "final training loss", "search": "validation loss"}
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DISCARD_LIMIT = 16 * 2**20  # bytes of a refused request's body read before answering; a bigger one may see a reset


def attach(study: optuna.Study) -> list[str]:
    """Save (or overwrite) our figures in the study, under stable ids; returns the ids.

    The dashboard draws them in boxes 450 pixels high, so each figure gives up its own height.
    """
    if study.metric_names is None:
        study.set_metric_names([OBJECTIVES[StudyRecord.of(study).kind]])
    ids = []
    for plot in (p for p in own_plots(study) if isinstance(p, Plot)):
        ids.append(GRAPH_PREFIX + plot.name)
        figure = go.Figure(plot.figure).update_layout(height=None, title_font_size=14)
        optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=ids[-1])
    return ids


def attach_all(storage, seen: dict[str, int]) -> dict[str, int]:
    """Attach figures to every study whose finished-trial count differs from `seen`; the new counts."""
    counts, changed, studies = {}, set(), []
    for name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        studies.append(study)
        counts[name] = len(study.get_trials(deepcopy=False, states=FINISHED))
        if seen.get(name) != counts[name] and StudyRecord.of(study).kind in OBJECTIVES:
            attach(study)
            changed.add(StudyRecord.of(study).frontier)
    for frontier in frontier_names(studies):
        if frontier in changed:
            attach_frontier(studies, frontier)
    return counts


def attach_frontier(studies: list[optuna.Study], name: str) -> None:
    """The frontier's figure, saved in each of its budgets' studies (a frontier has no study of its own)."""
    plot = frontier_plot(frontier_rows(studies, name), name)
    if not isinstance(plot, Plot):
        return
    figure = go.Figure(plot.figure).update_layout(height=None, title_font_size=14)
    for study in studies:
        if StudyRecord.of(study).frontier == name:
            optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=GRAPH_PREFIX + plot.name)


def keep_attached(storage, seen: dict[str, int], seconds: float, stop: threading.Event) -> None:
    """Refresh the figures every `seconds` until `stop` is set; meant for a daemon thread."""
    while not stop.wait(seconds):
        try:
            seen = attach_all(storage, seen)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            continue  # the database was busy with a worker's write; the next round tries again


def artifact_store(studies: list[optuna.Study], default: Path) -> FileSystemArtifactStore | None:
    """The first study's artifacts folder that exists (saved models), else `default` if it exists."""
    folders = [Path(a) for a in (StudyRecord.of(s).artifacts for s in studies) if a is not None] + [default]
    return next((FileSystemArtifactStore(f) for f in folders if f.is_dir()), None)


def read_only_reason() -> str:
    """Why a read-only dashboard refuses a change, worded for whoever started it: `archsearch dashboard`
    (--allow-edits) or the API (allow_edits=True)."""
    edits = worded(cli="--allow-edits", api="allow_edits=True")
    return f"read-only dashboard: start it with {edits} to change or delete studies"


def guard(app, allow_edits: bool = False):
    """The WSGI app `app`, answering 403 to any request that could change something unless `allow_edits`.
    The refusal is worded here, where the dashboard starts: requests are served on threads of their own,
    which do not see whether a command or the API started it."""
    if allow_edits:
        return app
    reason = read_only_reason()

    def read_only(environ, start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() in READ_METHODS:
            return app(environ, start_response)
        _discard_body(environ)
        body = json.dumps({"reason": reason}).encode()
        # The dashboard's own errors are JSON with a "reason", which its pages show to the user.
        start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return read_only


def _discard_body(environ) -> None:
    """Read a refused request's body: closing a connection with unread data makes the kernel reset it,
    and the client may then lose the 403 it has not read yet."""
    try:
        remaining = min(int(environ.get("CONTENT_LENGTH") or 0), DISCARD_LIMIT)
    except ValueError:
        return
    stream = environ["wsgi.input"]
    while remaining > 0:
        chunk = stream.read(min(remaining, 2**16))
        if not chunk:
            return
        remaining -= len(chunk)


class _RequestHandler(WSGIRequestHandler):
    """Logs each request to stderr as optuna_dashboard.run_server does (through bottle's wsgiref
    adapter), and like it names the client by address, without a reverse DNS lookup per request."""

    def address_string(self) -> str:
        return self.client_address[0]


class _IPv6Server(WSGIServer):
    address_family = socket.AF_INET6


def serve(storage, host: str, port: int, store: FileSystemArtifactStore | None, allow_edits: bool = False) -> None:
    """Block serving the dashboard, read-only unless `allow_edits`, until interrupted.

    optuna_dashboard.run_server cannot take a wrapped app, so this does what it does with the
    standard library's server, minus bottle's start-up banner (the command prints its own line)."""
    app = guard(optuna_dashboard.wsgi(storage, artifact_store=store), allow_edits)
    server_class = _IPv6Server if ":" in host else WSGIServer
    with make_server(host, port, app, server_class, _RequestHandler) as server:
        # Requests are served on another thread, so Ctrl-C and SIGTERM land here, in the wait, and never
        # inside a request: wsgiref's handler logs and drops any exception raised there, a stop included.
        serving = threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True)
        serving.start()
        try:
            while serving.is_alive():
                serving.join(0.5)
        except KeyboardInterrupt:
            pass  # as with run_server, Ctrl-C just ends serving
        finally:
            server.shutdown()
