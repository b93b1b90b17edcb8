"""archsearch dashboard: optuna-dashboard on the studies' storage, with our figures attached.

The dashboard has no login, so by default it only listens on this machine and only reads:
`--public` is needed to listen on any other address, `--allow-edits` to change or delete studies.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import threading

from search.api.args import non_negative_int, storage
from search.api.running import storage_url
from search.cli.common import STORAGE_HELP
from search.errors import UsageError
from search.results import dashboard
from search.study.lifecycle import load_study, study_names
from search.study.storage import default_artifacts, describe, open_storage

HELP = "serve optuna-dashboard for a storage (live trials and learning curves, plus our own figures)"


def port(text: str) -> int:
    value = non_negative_int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {text}")
    return value


MAX_REFRESH_SECONDS = 86_400  # a day; longer is the same as never (0)


def refresh_seconds(text: str) -> int:
    return non_negative_int(text, high=MAX_REFRESH_SECONDS)


def add_arguments(parser) -> None:
    parser.add_argument("--storage", type=storage, help=STORAGE_HELP)
    parser.add_argument("--port", type=port, default=8080)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; any other address needs --public)",
    )
    parser.add_argument(
        "--public",
        action="store_true",
        help="allow a --host beyond this machine: the dashboard has no login, so anyone who can reach its port "
        "can read every study in the storage (and, with --allow-edits, change or delete them)",
    )
    parser.add_argument(
        "--allow-edits",
        action="store_true",
        help="let the dashboard change and delete studies (create, rename, delete, notes, tell trials, artifacts); "
        "it has no login, so this lets anyone who can reach the dashboard change and delete studies",
    )
    parser.add_argument(
        "--refresh",
        type=refresh_seconds,
        default=30,
        help=f"seconds between updates of our figures (0: never; at most {MAX_REFRESH_SECONDS})",
    )


def run(args) -> int:
    _check_public(args.host, args.port, args.public)
    url = storage_url(args.storage)
    storage = open_storage(url, read_only=True)  # our figures are its only writes: no tables, no WAL switch
    names = study_names(storage)
    if not names:
        raise UsageError(f"no study in {describe(url)} yet; run `archsearch search` first")
    _check_free(args.host, args.port)
    seen = dashboard.attach_all(storage, {})
    store = dashboard.artifact_store([load_study(storage, n) for n in names], default_artifacts(url))
    stop = threading.Event()
    if args.refresh:
        refresher_storage = open_storage(url, read_only=True)
        threading.Thread(
            target=dashboard.keep_attached, args=(refresher_storage, seen, args.refresh, stop), daemon=True
        ).start()
    mode = "edits allowed" if args.allow_edits else "read-only"
    print(
        f"optuna-dashboard for {describe(url)} ({len(names)} studies, {mode}) at "
        f"http://{_url_host(args.host)}:{args.port}/dashboard/{_exposure(args)} ; Ctrl-C stops it",
        flush=True,
    )
    try:
        dashboard.serve(storage, args.host, args.port, store, allow_edits=args.allow_edits)
    finally:
        stop.set()
    return 0


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
    unless --public says that this is meant. A mistyped host name gets the unknown-host line instead."""
    if public or is_loopback(host):
        return
    try:
        socket.getaddrinfo(host, number)
    except (socket.gaierror, UnicodeError, TypeError):  # a name that no DNS label can spell: the last two
        raise UsageError(_unknown_host(host)) from None
    raise UsageError(
        f"--host {host!r} goes beyond this machine (loopback: 127.0.0.1, ::1, localhost) and the dashboard has "
        f"no login; add --public if anyone who can reach port {number} on {host} may read every study in the "
        "storage (and, with --allow-edits, change or delete them)"
    )


def _exposure(args) -> str:
    """The warning that goes into the start-up line when the dashboard listens beyond this machine."""
    if is_loopback(args.host):
        return ""
    rights = "read, change and delete" if args.allow_edits else "read"
    return f" ; warning: anyone who can reach port {args.port} on {args.host} can {rights} every study in the storage"


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
            hint = "; pick another --port" if error.errno == errno.EADDRINUSE else ""
            raise UsageError(f"cannot listen on {host}:{number}: {error.strerror}{hint}") from None


def _unknown_host(host: str) -> str:
    return f"unknown --host {host!r}; use an address such as 127.0.0.1"
