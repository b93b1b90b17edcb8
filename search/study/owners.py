"""Which trials count toward a study's N, and who owns each, however many processes share it.

Before a trial runs it checks its rank among finished and running trials, and a surplus trial is
failed unrun. Each trial records its owner (host, process), so a trial whose process is gone is
failed and retried at once on the same host; elsewhere the storage's heartbeat does it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from search.study.config import StudyConfig
from search.study.record import SURPLUS, TrialRecord, write_trial

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED = (*FINISHED, TrialState.RUNNING)
# How long a running trial may go without recording its owner before it is taken for one whose process
# died at once: a study's default grace period for a missed heartbeat.
UNOWNED_GRACE_SECONDS = StudyConfig.grace_seconds


class Surplus(Exception):
    """A trial asked for after the study already had its N finished or running trials."""


@dataclass
class Counts:
    finished: int
    running: int
    waiting: int


def count_trials(study: optuna.Study) -> Counts:
    trials = study.get_trials(deepcopy=False)
    return Counts(
        sum(t.state in FINISHED for t in trials),
        sum(t.state == TrialState.RUNNING for t in trials),
        sum(t.state == TrialState.WAITING for t in trials),
    )


def owner_record() -> dict[str, Any]:
    """Who runs a trial: enough to tell later, on the same host, whether that process is gone."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), so a reused process id is not
    taken for the process that started a trial; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def runs_here(owner: Any) -> bool:
    """Whether a trial's owner record names this host, where its process can be looked up."""
    return isinstance(owner, dict) and owner.get("host") == socket.gethostname()


def owner_is_gone(owner: Any) -> bool:
    """True only when the owner ran on this host and its process no longer exists."""
    if not runs_here(owner) or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except (OverflowError, ValueError):
        return False
    start = owner.get("start")
    return start is not None and _process_start(pid) not in (None, start)


def fail_orphaned_trials(study: optuna.Study, grace_seconds: float = UNOWNED_GRACE_SECONDS) -> list[int]:
    """Fail the running trials whose process on this host is gone, and queue their retry.

    Storages with a heartbeat find such trials after the grace period anyway; a journal storage
    has none, so without this a resume after a SIGKILL would wait for that trial forever. So would
    any storage for a trial whose process was killed after asking for it and before recording its
    owner, its first act (check_rank), or Optuna its first heartbeat: such a trial, still without an
    owner `grace_seconds` after it started, is failed too."""
    failed = []
    now = datetime.now()  # Optuna's datetime_start is local time, without a zone
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = TrialRecord.of(trial).worker
        if owner is None:
            started = trial.datetime_start
            if started is None or (now - started).total_seconds() <= grace_seconds:
                continue
        elif not owner_is_gone(owner):
            continue
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        frozen = study.get_trials(deepcopy=False)[trial.number]
        if frozen.state == TrialState.FAIL and frozen.datetime_complete is not None:
            RetryHeartbeatStaleTrialCallback(max_retry=3)(study, frozen)
            failed.append(trial.number)
    return failed


@dataclass(frozen=True)
class Blocking:
    """The running trials a finished study waits for. `names` lists them with where they run, for a
    one-line message; `unchecked` is True when one runs where this process cannot see whether it is still
    alive (another host, or no owner recorded yet). On this host a gone owner's trial is failed at once,
    so the trials left there are running."""

    names: str
    unchecked: bool


def blocking_trials(study: optuna.Study) -> Blocking:
    parts, unchecked = [], False
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = TrialRecord.of(trial).worker
        where = f"process {owner.get('pid')} on host {owner.get('host')}" if isinstance(owner, dict) else "unknown"
        parts.append(f"#{trial.number} ({where})")
        unchecked |= not runs_here(owner)
    return Blocking(", ".join(parts), unchecked)


def check_rank(trial: optuna.Trial, target: int) -> None:
    """Fail a trial unrun when `target` earlier trials are already finished or running; record its owner."""
    earlier = trial.study.get_trials(deepcopy=False, states=COUNTED)
    if sum(t.number < trial.number for t in earlier) >= target:
        write_trial(trial, fail_reason=f"{SURPLUS}: {target} trials were already finished or running")
        raise Surplus()
    write_trial(trial, worker=owner_record())


def guard_surplus(objective: Callable[[optuna.Trial], float], target: int) -> Callable[[optuna.Trial], float]:
    def guarded(trial: optuna.Trial) -> float:
        check_rank(trial, target)
        return objective(trial)

    return guarded
