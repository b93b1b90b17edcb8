"""archsearch dashboard: optuna-dashboard on the studies' storage, with our figures attached.

The dashboard has no login, so by default it only listens on this machine and only reads:
`--public` is needed to listen on any other address, `--allow-edits` to change or delete studies.
"""

from __future__ import annotations

import argparse

from search import api
from search.api.args import non_negative_int, storage
from search.api.serving import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REFRESH_SECONDS, MAX_PORT, MAX_REFRESH_SECONDS
from search.cli.common import STORAGE_HELP

HELP = "serve optuna-dashboard for a storage (live trials and learning curves, plus our own figures)"


def port(text: str) -> int:
    value = non_negative_int(text)
    if not 1 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PORT}, got {text}")
    return value


def refresh_seconds(text: str) -> int:
    return non_negative_int(text, high=MAX_REFRESH_SECONDS)


def add_arguments(parser) -> None:
    parser.add_argument("--storage", type=storage, help=STORAGE_HELP)
    parser.add_argument("--port", type=port, default=DEFAULT_PORT)
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}, this machine only; any other address needs --public)",
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
        default=DEFAULT_REFRESH_SECONDS,
        help=f"seconds between updates of our figures (0: never; at most {MAX_REFRESH_SECONDS})",
    )


def run(args) -> int:
    api.dashboard(
        args.storage,
        host=args.host,
        port=args.port,
        public=args.public,
        allow_edits=args.allow_edits,
        refresh=args.refresh,
    )
    return 0
