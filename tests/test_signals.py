"""Ctrl-C and SIGTERM land where they can be handled: never lost in a finalizer, never inside Optuna's
record of a trial or a storage call (search/api/signals.py)."""

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from search.api import signals
from search.errors import Terminated
from search.study.storage import open_storage
from search.study.workers import run_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A finalizer that receives the signal: Python runs the handler inside __del__, where a raised
# exception is printed as "Exception ignored" and dropped.
FINALIZER_SCRIPT = """
import os, signal, time
from search.api import signals

class Collected:
    def __del__(self):
        os.kill(os.getpid(), signal.{name})
        for _ in range(1000):
            pass

def work():
    Collected()
    deadline = time.monotonic() + {seconds}
    while time.monotonic() < deadline:  # ordinary code, until the stop comes back or for {seconds} s
        pass
    print("ran on")

try:
    if {handled}:
        with signals.handled():
            work()
    else:  # both set: a process started in the background by a shell inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        work()
except KeyboardInterrupt as stop:
    print("stopped", type(stop).__name__)
"""


# Handled, the stop comes back 10 ms after the finalizer: the loop's minute is a hang guard. Unhandled, Python
# ran the handler inside the finalizer and dropped what it raised ("Exception ignored"), so nothing is left
# to come back: a second of ordinary code after it (a hundred times the module's 10 ms) shows the program
# running on without waiting out the guard.
HANG_GUARD_SECONDS = 60
RUN_ON_SECONDS = 1


def run_script(name: str, handled: bool) -> subprocess.CompletedProcess:
    seconds = HANG_GUARD_SECONDS if handled else RUN_ON_SECONDS
    script = textwrap.dedent(FINALIZER_SCRIPT).format(name=name, handled=handled, seconds=seconds)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_python_alone_loses_a_stop_raised_in_a_finalizer():
    """The failure the module exists for, shown: without it the program runs on."""
    result = run_script("SIGINT", handled=False)
    assert result.stdout.split() == ["ran", "on"]
    assert "Exception ignored" in result.stderr


@pytest.mark.parametrize(("name", "raised"), [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "Terminated")])
def test_a_stop_swallowed_by_a_finalizer_is_raised_again(name, raised):
    result = run_script(name, handled=True)
    assert result.stdout.split() == ["stopped", raised], result.stderr
    assert result.stderr == ""


class SignalWhileRecorded(optuna.storages.InMemoryStorage):
    """Sends SIGINT to this process while Optuna records a trial's end (inside study.tell)."""

    def set_trial_state_values(self, trial_id, state, values=None):
        if state == TrialState.COMPLETE:
            os.kill(os.getpid(), signal.SIGINT)
        return super().set_trial_state_values(trial_id, state, values)


def test_a_stop_while_optuna_records_a_trial_waits_for_the_record():
    study = optuna.create_study(storage=SignalWhileRecorded())
    with signals.handled(), pytest.raises(KeyboardInterrupt) as stop:
        run_until(study, lambda trial: 1.0, 3, bookkeeping=signals.deferred, training=signals.immediate)
    assert type(stop.value) is KeyboardInterrupt
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


class SlowRecord(optuna.storages.InMemoryStorage):
    """Records a trial's end only once a stop swallowed by a finalizer has come back (a minute at most, a hang
    guard), so that it lands inside the record however late the timer that sends it again runs."""

    def set_trial_state_values(self, trial_id, state, values=None):
        deadline = time.monotonic() + 60
        while state == TrialState.COMPLETE and signals._State.redeliver is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().set_trial_state_values(trial_id, state, values)


class StoppedWhileCollected:
    """A finalizer that receives a stop: Python drops it there, and the module raises it again 10 ms later."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass


def test_a_stop_raised_again_after_a_finalizer_still_waits_for_the_record():
    """The objective returns just after a finalizer swallowed the stop, so it comes back while Optuna records
    the trial: raised there, Optuna 5 would fail with an UnboundLocalError and leave the trial running."""

    def objective(trial):
        StoppedWhileCollected()
        return 1.0

    study = optuna.create_study(storage=SlowRecord())
    with signals.handled(), pytest.raises(KeyboardInterrupt) as stop:
        run_until(study, objective, 3, bookkeeping=signals.deferred, training=signals.immediate)
    assert type(stop.value) is KeyboardInterrupt
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def test_a_stop_during_the_objective_fails_its_trial_at_once_and_repeats_are_ignored():
    def objective(trial):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**7):
            pass
        raise AssertionError("the stop was not raised inside the objective")

    def record_again(study, trial):
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler repeating SIGTERM during the cleanup

    study = optuna.create_study()
    with signals.handled(), pytest.raises(Terminated):
        run_until(study, objective, 3, on_trial=record_again, bookkeeping=signals.deferred, training=signals.immediate)
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_a_stop_in_a_trial_callback_is_raised_before_another_trial_starts():
    started = []

    def objective(trial):
        started.append(trial.number)
        return 1.0

    def stop_in_bookkeeping(study, trial):
        os.kill(os.getpid(), signal.SIGINT)

    study = optuna.create_study()
    with signals.handled(), pytest.raises(KeyboardInterrupt):
        run_until(
            study, objective, 3, on_trial=stop_in_bookkeeping, bookkeeping=signals.deferred, training=signals.immediate
        )
    assert started == [0]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def test_handlers_are_restored_after_the_command():
    before = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
    hook = sys.unraisablehook
    with signals.handled():
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    assert {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS} == before
    assert sys.unraisablehook is hook


def test_a_nested_block_changes_nothing_and_other_unraisables_still_reach_the_hook_before():
    """The API inside a CLI command: one set of handlers, and an ordinary exception in a finalizer goes
    to the hook that was there before (a nested block once made the hook call itself)."""
    seen = []

    class Noisy:
        def __del__(self):
            raise ValueError("in a finalizer")

    original = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: seen.append(type(unraisable.exc_value).__name__)
    try:
        with signals.handled():
            handler = signal.getsignal(signal.SIGINT)
            with signals.handled():
                assert signal.getsignal(signal.SIGINT) is handler
                Noisy()
            assert signal.getsignal(signal.SIGINT) is handler
    finally:
        sys.unraisablehook = original
    assert seen == ["ValueError"]


def test_a_stop_after_the_command_is_done_ends_nothing_and_prints_nothing():
    """A worker's second copy of Ctrl-C (its parent passes it on) can land while Python runs its exit
    handlers; the console script's exit then stays quiet, with the command's own status."""
    script = textwrap.dedent("""
        import atexit, os, signal, sys
        def late_stop():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        atexit.register(late_stop)
        sys.argv = ["archsearch", "budget", "5000"]
        from search.cli import run
        run()
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert "5000" in result.stdout
    assert result.stderr == ""


class StopAtLine:
    """A trace function that sends SIGTERM to this process at the `n`-th line Python runs in a file whose
    path ends with `suffix`, as a signal may arrive at any line."""

    def __init__(self, suffix: str, n: int):
        self.suffix, self.n, self.seen, self.sent_at = suffix, n, 0, None

    def __call__(self, frame, event, arg):
        if not frame.f_code.co_filename.endswith(self.suffix):
            return None  # no line events for this frame: tracing every line of every file is slow
        if event == "line":
            self.seen += 1
            if self.seen == self.n:
                self.sent_at = f"{self.suffix}:{frame.f_lineno}"
                os.kill(os.getpid(), signal.SIGTERM)
        return self


def test_a_stop_inside_a_storage_call_waits_for_the_call_and_the_storage_goes_on(tmp_path):
    """A stop may land on any line of a storage call made while a trial trains (trial.report here). One raised
    inside SQLAlchemy's session bookkeeping (sqlalchemy/orm/state_changes.py) left a session that failed every
    later call with an IllegalStateChangeError: Optuna could not mark the trial failed and ended with an
    UnboundLocalError, its write lock on the database still held (a stop on 5 of its 284 lines in one report),
    or turned the stop into a StorageInternalError (10 more). So the stop lands on every fourth line of that
    file in turn (7 of those 15 on SQLAlchemy 2.1), and must wait for the call."""
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'studies.db'}"))
    landed = []
    for n in itertools.count(4, 4):
        stop = StopAtLine("sqlalchemy/orm/state_changes.py", n)

        def objective(trial, stop=stop):
            sys.settrace(stop)
            try:
                trial.report(0.5, 1)
            finally:
                sys.settrace(None)
            return 1.0

        with signals.handled():
            try:
                run_until(study, objective, 1, bookkeeping=signals.deferred, training=signals.immediate)
                stopped = False
            except Terminated:
                stopped = True
        if stop.sent_at is None:  # the call ran fewer such lines than n: each sampled one has had its stop
            assert not stopped
            break
        assert stopped, stop.sent_at
        last = study.trials[-1]
        assert last.state == TrialState.FAIL and last.intermediate_values == {1: 0.5}, (stop.sent_at, last)
        with sqlite3.connect(tmp_path / "studies.db", timeout=0, isolation_level=None) as probe:
            probe.execute("BEGIN IMMEDIATE")  # no write lock left held: another process could not write for 120 s
            probe.execute("ROLLBACK")
        landed.append(stop.sent_at)
    assert len(landed) >= 10, landed
    assert [t.state for t in study.trials][-1] == TrialState.COMPLETE


def test_a_storage_call_in_another_thread_does_not_hold_back_a_stop_of_the_main_thread():
    """Storage calls defer a stop, and a heartbeat thread makes them too; signals reach only the main thread,
    so a deferral elsewhere must not hold the main thread's stop (or raise it in the heartbeat thread)."""
    deferring, done = threading.Event(), threading.Event()
    raised_in_thread = []

    def heartbeat():
        try:
            with signals.deferred():
                deferring.set()
                done.wait(10)
        except KeyboardInterrupt as stop:
            raised_in_thread.append(stop)

    thread = threading.Thread(target=heartbeat)
    with signals.handled(), signals.immediate():
        thread.start()
        deferring.wait(10)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**7):
                pass
            stopped = False
        except Terminated:
            stopped = True
        finally:
            done.set()
            thread.join()
    assert stopped and not raised_in_thread
