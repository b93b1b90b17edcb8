"""Running a study: one worker in this process with a progress bar, the extra worker processes, and
what a stop (Ctrl-C, SIGTERM, a kernel interrupt, a storage failure) leaves behind."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.api import signals
from search.api.handover import flag, worker_command
from search.api.progress import progress
from search.errors import Interrupted, Terminated, UsageError, worded
from search.study.config import DEFAULT_STORAGE
from search.study.record import StudyRecord, TrialRecord
from search.study.storage import (
    JOURNAL_PREFIX,
    STORAGE_ENV,
    STORAGE_FAILURES,
    describe,
    disk_full,
    failure_reason,
    has_password,
    is_disk_full,
    public_url,
    scrub,
    sqlite_path,
)
from search.study.workers import Blocking, PackSize, count_trials, run_until

PARENT_ENV = "ARCHSEARCH_PARENT_PID"  # set for spawned workers: they end when this process does


def summary_line(trial: FrozenTrial) -> str:
    record = TrialRecord.of(trial)
    widths = list(record.widths) if record.widths else None
    params = "" if record.params is None else record.params
    shape = f"{record.profile:<10} {widths!s:<24} {params!s:>7}"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    if trial.state == TrialState.COMPLETE:
        val_loss = record.val_loss if record.val_loss is not None else float("nan")
        return (
            f"#{trial.number:<4} {shape}  value {trial.value:.4f}  val loss {val_loss:.4f}"
            f"  val acc {record.val_accuracy or 0:.2%}  {seconds:.1f} s"
        )
    return f"#{trial.number:<4} {shape}  {trial.state.name.lower()}: {record.reason}  {seconds:.1f} s"


def run_with_progress(
    study: optuna.Study,
    objective,
    target: int,
    quiet: bool = False,
    deadline: float | None = None,
    pack: PackSize = 1,
    storage: optuna.storages.BaseStorage | None = None,
) -> bool:
    """One worker in this process, with a bar over the study's finished trials and a line per trial.

    False when `deadline` stopped it before `target` trials finished."""
    with progress(target, study.study_name, quiet, unit="trial") as bar:
        bar.update(min(count_trials(study).finished, target))

        def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            if not quiet and not (trial.state == TrialState.FAIL and TrialRecord.of(trial).is_surplus):
                bar.write(summary_line(trial))
            bar.n = min(count_trials(study).finished, target)
            bar.refresh()

        def on_wait(blocking: Blocking) -> None:
            if quiet:
                return
            line = f"waiting for running trial(s) {blocking.names} to finish"
            if blocking.unchecked:
                line += (
                    "; if such a process is gone, resume on its host, which fails its trial at once "
                    "(or, with a heartbeat, wait for its grace period)"
                )
            bar.write(line)

        return run_until(
            study, objective, target, on_trial, deadline=deadline, on_wait=on_wait,
            bookkeeping=signals.deferred, training=signals.immediate, pack=pack, storage=storage,
        )  # fmt: skip


def run_study(
    study: optuna.Study,
    objective,
    target: int,
    resume: list[str],
    url: str,
    workers: int,
    worker_args: list[str],
    timeout: float | None,
    pack: PackSize = 1,
    storage: optuna.storages.BaseStorage | None = None,
    quiet: bool = False,
) -> bool:
    """The run that `search` and `grid` share: spawn the extra workers, run one here, and on Ctrl-C or
    SIGTERM fail the running trials everywhere, then raise Interrupted with the one resume command.
    `worker_args`: the workers' settings (search/api/handover.py), the timeout and pack among them.

    False when --timeout stopped it first (the message says how far it got)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    processes: list[subprocess.Popen] = []
    try:
        with cores_shared(workers):
            processes = spawn_workers(workers, worker_args, url)
            finished = run_with_progress(study, objective, target, quiet, deadline, pack, storage)
    except STORAGE_FAILURES as error:
        stop_workers(processes, signal.SIGTERM)
        raise storage_failure(error, url) from None
    except KeyboardInterrupt as stop:
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        stop_workers(processes, signum)
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        raise Interrupted(
            f"{what}; the running trials were marked failed. {resume_hint(resume, url)}", signum
        ) from None
    except Exception:  # bad input found inside a trial (a full artifact folder, say): the workers stop too
        stop_workers(processes, signal.SIGTERM)
        raise
    stop_workers(processes, None)
    if not finished and not quiet:
        done = min(count_trials(study).finished, target)
        stopped = worded(cli="stopped at --timeout", api="stopped at the timeout")
        print(f"{stopped}: {done} of {target} trials finished. {resume_hint(resume, url)}")
    return finished


def storage_failure(error: Exception, url: str) -> UsageError:
    """A storage that stopped working mid-run (a full disk, a lost server) as one line; the trial it
    could still mark is failed, so the same command resumes once the cause is gone."""
    reason = failure_reason(error)
    path = None if url.startswith(JOURNAL_PREFIX) else sqlite_path(url)
    if path is not None and is_disk_full(reason):
        return disk_full(path.resolve().parent)
    return UsageError(f"storage {describe(url)} failed: {scrub(reason, url)}; the study resumes with the same command")


def spawn_workers(count: int, args: list[str], url: str) -> list[subprocess.Popen]:
    """Extra worker processes of this same program, each with its own worker index.

    The storage URL goes through the environment, never the command line, where `ps` shows it to
    every user with its password. The cores are shared out: W processes each running torch's
    default of one thread per core oversubscribe the CPU and run many times slower than W
    processes with cores/W threads each.
    """
    if count < 2:
        return []
    threads = threads_per_worker(count)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), STORAGE_ENV: url, PARENT_ENV: str(os.getpid())}
    commands = [worker_command(args, index) for index in range(1, count)]  # each read back before any starts
    return [subprocess.Popen(command, env=env) for command in commands]


def threads_per_worker(count: int) -> int:
    return max(1, (os.cpu_count() or 1) // count)


@contextlib.contextmanager
def cores_shared(count: int) -> Iterator[None]:
    """This process takes its share of the cores while `count` workers run (W processes each running
    torch's default of one thread per core oversubscribe the CPU), and all of them again afterwards:
    what follows in this process (a frontier's retraining) has the CPU to itself."""
    if count < 2:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads_per_worker(count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stop_workers(workers: list[subprocess.Popen], signum: int | None) -> None:
    """Pass Ctrl-C or SIGTERM on to the workers (None: let them finish), then wait for them."""
    for worker in workers:
        if signum is not None and worker.poll() is None:
            worker.send_signal(signum)
    for worker in workers:
        worker.wait()


def end_with_parent() -> None:
    """A spawned worker stops (as on SIGTERM: its trial failed) as soon as the process that spawned it
    is gone, however it died: a parent killed with SIGKILL leaves no orphans training on."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    if os.getppid() == int(parent):
        threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
    else:
        os.kill(os.getpid(), signal.SIGTERM)


def is_spawned() -> bool:
    return bool(os.environ.get(PARENT_ENV))


def resume_hint(resume: list[str], url: str) -> str:
    """The command that resumes, quoted so that it is safe to paste, with no password in it; each of
    `resume`'s flags is one `--flag=value` word (search/api/handover.py's `flag`)."""
    command = shlex.join(["archsearch", *resume, flag("--storage", public_url(url))])
    hint = f"Resume with: {command}"
    if has_password(url):
        hint += f" (the password is left out: put it in ~/.pgpass, or the full URL in ${STORAGE_ENV})"
    return hint


def storage_url(given: str | None = None, default: str = DEFAULT_STORAGE) -> str:
    """The storage a command uses: the one given, else $ARCHSEARCH_STORAGE, else the default database."""
    return given or os.environ.get(STORAGE_ENV) or default


def artifacts_dir(given: str | None, study: optuna.Study | None, url: str) -> Path:
    """Where a study's models go: the folder given, else the one the study remembers, else beside SQLite."""
    from search.study.storage import default_artifacts

    if given:
        return Path(given)
    if study is not None and StudyRecord.of(study).artifacts is not None:
        return Path(StudyRecord.of(study).artifacts)
    return default_artifacts(url)
