"""optuna-dashboard on the studies' storage, with our figures attached (`archsearch dashboard`).

The dashboard has no login, so by default it only listens on this machine and only reads: `public` is
needed to listen on any other address, `allow_edits` to change or delete studies.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading

from search.api.calls import api_call
from search.api.running import storage_url
from search.checks import check_int
from search.errors import UsageError, argument, worded
from search.results import dashboard as served
from search.study.lifecycle import load_study, study_names
from search.study.storage import default_artifacts, describe, open_storage

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_REFRESH_SECONDS = 30
MAX_PORT = 65535
MAX_REFRESH_SECONDS = 86_400  # a day; longer is the same as never (0)


@api_call
def dashboard(
    storage: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    public: bool = False,
    allow_edits: bool = False,
    refresh: int = DEFAULT_REFRESH_SECONDS,
) -> None:
    """Serve optuna-dashboard for a storage until interrupted (`archsearch dashboard`): live trials and
    learning curves, plus our own figures, updated every `refresh` seconds (0: never).

    Read-only unless `allow_edits`; on this machine only unless `public` (it has no login)."""
    check_int("port", port, 1, MAX_PORT)
    check_int("refresh", refresh, 0, MAX_REFRESH_SECONDS, "0 never updates the figures")
    _check_public(host, port, public)
    url = storage_url(storage)
    opened = open_storage(url, read_only=True)  # our figures are its only writes: no tables, no WAL switch
    names = study_names(opened)
    if not names:
        raise UsageError(f"no study in {describe(url)} yet; run `archsearch search` first")
    _check_free(host, port)
    seen = served.attach_all(opened, {})
    store = served.artifact_store([load_study(opened, n) for n in names], default_artifacts(url))
    stop = threading.Event()
    if refresh:
        refresher_storage = open_storage(url, read_only=True)
        threading.Thread(
            target=served.keep_attached, args=(refresher_storage, seen, refresh, stop), daemon=True
        ).start()
    mode = "edits allowed" if allow_edits else "read-only"
    print(
        f"optuna-dashboard for {describe(url)} ({len(names)} studies, {mode}) at "
        f"http://{_url_host(host)}:{port}/dashboard/{_exposure(host, port, allow_edits)} ; Ctrl-C stops it",
        flush=True,
    )
    try:
        served.serve(opened, host, port, store, allow_edits=allow_edits)
    finally:
        stop.set()


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only: localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may well resolve to a public address


def _check_public(host: str, number: int, public: bool) -> None:
    """Refuse, with one line and before anything touches the storage, to listen beyond this machine
    unless `public` says that this is meant. A mistyped host name gets the unknown-host line instead."""
    if public or is_loopback(host):
        return
    try:
        socket.getaddrinfo(host, number)
    except (socket.gaierror, UnicodeError, TypeError):  # a name that no DNS label can spell: the last two
        raise UsageError(_unknown_host(host)) from None
    public_too = worded(cli="add --public", api="pass public=True")
    edits = worded(cli="--allow-edits", api="allow_edits=True")
    raise UsageError(
        f"{argument('host', repr(host))} goes beyond this machine (loopback: 127.0.0.1, ::1, localhost) and the "
        f"dashboard has no login; {public_too} if anyone who can reach port {number} on {host} may read every "
        f"study in the storage (and, with {edits}, change or delete them)"
    )


def _exposure(host: str, port: int, allow_edits: bool) -> str:
    """The warning that goes into the start-up line when the dashboard listens beyond this machine."""
    if is_loopback(host):
        return ""
    rights = "read, change and delete" if allow_edits else "read"
    return f" ; warning: anyone who can reach port {port} on {host} can {rights} every study in the storage"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_free(host: str, number: int) -> None:
    """Fail with one line, before figures are written into the storage, when the address cannot be served."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, number))
        except (socket.gaierror, UnicodeError, TypeError):
            raise UsageError(_unknown_host(host)) from None
        except OSError as error:
            hint = f"; pick another {argument('port')}" if error.errno == errno.EADDRINUSE else ""
            raise UsageError(f"cannot listen on {host}:{number}: {error.strerror}{hint}") from None


def _unknown_host(host: str) -> str:
    return f"unknown {argument('host', repr(host))}; use an address such as 127.0.0.1"
