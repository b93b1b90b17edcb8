"""archsearch worker: join an existing study from any process or machine."""

from __future__ import annotations

import importlib
import signal
import time

from search.api.args import seed, trial_count
from search.api.handover import flag
from search.api.options import RUN
from search.api.running import (
    artifacts_dir,
    end_with_parent,
    is_spawned,
    resume_hint,
    run_with_progress,
    storage_failure,
    storage_url,
)
from search.cli.common import add_data_options, add_device_option, add_options, add_storage_options
from search.errors import Interrupted, Terminated, UsageError
from search.study.lifecycle import load_study, make_pruner, make_sampler
from search.study.record import StudyRecord
from search.study.storage import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HEARTBEAT_SECONDS,
    STORAGE_FAILURES,
    open_storage,
)

HELP = "join an existing search or grid study and run trials until it has its number of trials"

# Each study kind names the module whose `worker_setup(study, args, device, artifacts)` gives
# (sampler, pruner, objective, target); the search kind is built here.
KINDS = {"search": "search.cli.worker_cmd", "grid": "search.study.grid"}


def add_arguments(parser) -> None:
    add_storage_options(parser, study_required=True)
    parser.add_argument("--trials", type=trial_count, help="finished trials wanted (default: the study's own)")
    parser.add_argument("--worker-index", type=seed, default=0, help="varies the sampler seed per worker")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no per-trial lines")
    add_options(parser, [RUN["pack"], RUN["timeout"]])
    add_device_option(parser)
    add_data_options(parser)


def worker_setup(study, args, device, artifacts):
    from search.engine.data import load_data
    from search.study.config import study_from_dict
    from search.study.objective import SearchObjective

    config = study_from_dict(StudyRecord.of(study).settings, f"study {study.study_name}")
    data = load_data(args.data_dir, config.dataset, str(device), limit=config.data_limit or None)
    sampler = make_sampler(config.sampler, config.seed, args.worker_index)
    return sampler, make_pruner(config.pruner, config.epochs), SearchObjective(config, data, artifacts), config.trials


def run(args) -> int:
    end_with_parent()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    url = storage_url(args.storage)
    # Read-only until the study is known to be ours: refusing another tool's file leaves it as it was.
    storage = open_storage(url, read_only=True)
    study = load_study(storage, args.study)
    kind = StudyRecord.of(study).kind
    if kind not in KINDS:
        raise UsageError(f"study {args.study!r} was not made by archsearch (kind {kind!r}); nothing to run")
    config = StudyRecord.of(study).settings
    heartbeat = config.get("heartbeat_seconds", DEFAULT_HEARTBEAT_SECONDS)
    storage = open_storage(url, heartbeat, config.get("grace_seconds", DEFAULT_GRACE_SECONDS), must_exist=True)
    from search.engine.trainer import resolve_device  # torch loads only once the study is known good

    device = resolve_device(args.device, args.worker_index)  # workers spread over the visible GPUs
    artifacts = artifacts_dir(args.artifacts, study, url)
    sampler, pruner, objective, target = importlib.import_module(KINDS[kind]).worker_setup(
        study, args, device, artifacts
    )
    study = load_study(storage, args.study, sampler, pruner)
    try:
        target = args.trials or target
        run_with_progress(study, objective, target, args.quiet, deadline, pack=args.pack, storage=storage)
    except STORAGE_FAILURES as error:
        raise storage_failure(error, url) from None
    except KeyboardInterrupt as stop:
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        if is_spawned():  # the process that spawned this worker prints the one resume command
            return 128 + signum
        hint = resume_hint(["worker", flag("--study", args.study)], url)
        raise Interrupted(f"stopped; the running trial was marked failed. {hint}", signum) from None
    return 0
