"""archsearch dashboard: optuna-dashboard on the studies' storage, with our figures attached."""

from __future__ import annotations

import argparse
import errno
import socket
import threading

from search import dashboard
from search.cli.args import non_negative_int
from search.config import DEFAULT_STORAGE
from search.errors import UsageError
from search.studies import default_artifacts, describe, load_study, open_storage, study_names

HELP = "serve optuna-dashboard for a storage (live trials and learning curves, plus our own figures)"


def port(text: str) -> int:
    value = non_negative_int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {text}")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--port", type=port, default=8080)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)"
    )
    parser.add_argument(
        "--refresh", type=non_negative_int, default=30, help="seconds between updates of our figures (0: never)"
    )


def run(args) -> int:
    storage = open_storage(args.storage, must_exist=True)
    names = study_names(storage)
    if not names:
        raise UsageError(f"no study in {describe(args.storage)} yet; run `archsearch search` first")
    _check_free(args.host, args.port)
    seen = dashboard.attach_all(storage, {})
    store = dashboard.artifact_store([load_study(storage, n) for n in names], default_artifacts(args.storage))
    stop = threading.Event()
    if args.refresh:
        refresher_storage = open_storage(args.storage, must_exist=True)
        threading.Thread(
            target=dashboard.keep_attached, args=(refresher_storage, seen, args.refresh, stop), daemon=True
        ).start()
    print(
        f"optuna-dashboard for {describe(args.storage)} ({len(names)} studies) at "
        f"http://{args.host}:{args.port}/dashboard/ ; Ctrl-C stops it",
        flush=True,
    )
    try:
        dashboard.serve(storage, args.host, args.port, store)
    finally:
        stop.set()
    return 0


def _check_free(host: str, number: int) -> None:
    """Fail with one line, before figures are written into the storage, when the address cannot be served."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, number))
        except socket.gaierror:
            raise UsageError(f"unknown --host {host!r}; use an address such as 127.0.0.1") from None
        except OSError as error:
            hint = "; pick another --port" if error.errno == errno.EADDRINUSE else ""
            raise UsageError(f"cannot listen on {host}:{number}: {error.strerror}{hint}") from None
