"""Ctrl-C and SIGTERM as one exception, raised where it can be handled.

Python raises KeyboardInterrupt at whatever line runs when the signal lands. Three kinds of place go
wrong: a finalizer (a garbage-collected SQLAlchemy session, say), where Python prints "Exception
ignored" and goes on as if nothing happened; Optuna's bookkeeping around a trial, where Optuna 5 has
no handler for it and fails with an UnboundLocalError, its trial left running; and any storage call,
where SQLAlchemy's session is left failing every later call. So a stop is raised at once only outside
Optuna's bookkeeping and storage calls (`deferred`; search/study/storage.py runs each storage call
inside it while `handled` is active), and one swallowed by a finalizer is raised again at the next
line of ordinary code. Signals reach only the main thread, so only its code defers them: a storage
call from another thread (a heartbeat) changes nothing here.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from search.errors import Terminated
from search.study.storage import storage_calls_within

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    raise_now = True  # False inside `deferred`: a stop waits for its end or for the trial's objective
    pending: int | None = None  # a stop that arrived while deferred
    delivered = False  # the stop was raised: later signals (a second press, the terminal's copy) are ignored
    redeliver: int | None = None  # the stop was swallowed by a finalizer: raise it again
    in_hook = False
    active = False  # inside `handled`: a nested one (the API under the CLI) changes nothing
    unraisable_hook: Callable[[Any], None] = staticmethod(sys.__unraisablehook__)  # for everything else


def _stop(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum: int, frame: Any) -> None:
    if _State.redeliver is not None:
        if _State.in_hook:  # raised here, it would be lost again
            _redeliver_soon()
            return
        signum, _State.redeliver = _State.redeliver, None
    elif _State.delivered or _State.pending is not None:
        return
    if not _State.raise_now:
        _State.pending = signum
        return
    _State.delivered = True
    raise _stop(signum)


def _on_unraisable(unraisable: Any) -> None:
    """A stop raised inside a finalizer is lost to Python: ask for it again instead of printing it."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _State.delivered:
        _State.redeliver = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        _State.in_hook = True
        try:
            _redeliver_soon()
        finally:
            _State.in_hook = False
        return
    _State.unraisable_hook(unraisable)


def _redeliver_soon() -> None:
    """The stop again, a moment later, from another thread: by then the finalizer has returned."""
    timer = threading.Timer(0.01, _thread.interrupt_main, (_State.redeliver,))
    timer.daemon = True
    timer.start()


@contextmanager
def handled(then_ignore: bool = False) -> Iterator[None]:
    """Ctrl-C and SIGTERM routed through this module while the block runs (one command).

    `then_ignore`, for the console script, ignores them afterwards instead of restoring the previous
    handlers: a late stop (the copy of Ctrl-C that a worker gets from the process that spawned it,
    after the terminal's) has nothing left to stop, and raised while Python exits it would print a
    traceback from the finalizers run there."""
    if _State.active:  # a command of the CLI calling the API: the outer block already routes stops here
        yield
        return
    _State.raise_now, _State.pending, _State.delivered, _State.redeliver = True, None, False, None
    _State.active = True
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    previous_hook = _State.unraisable_hook = sys.unraisablehook
    sys.unraisablehook = _on_unraisable
    try:
        with storage_calls_within(deferred):
            yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if then_ignore else handler)
        sys.unraisablehook = previous_hook
        _State.active = False


def raise_held(signum: int) -> None:
    """A stop that arrived before `handled` began (the CLI holds them while it starts): raised now, inside
    the block, as if it had arrived here; later copies of it are ignored."""
    _State.delivered = True
    raise _stop(signum)


def _raise_pending() -> None:
    if _State.pending is not None and _State.raise_now:
        signum, _State.pending = _State.pending, None
        _State.delivered = True
        raise _stop(signum)


@contextmanager
def _raising(now: bool) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = _State.raise_now
    _State.raise_now = now
    try:
        _raise_pending()
        yield
    finally:
        _State.raise_now = before
    _raise_pending()


def deferred() -> Any:
    """Around Optuna's own code (asking for a trial, recording it, its callbacks, every storage call): a
    stop that arrives here is raised when the block ends, or as soon as a trial's objective starts inside it."""
    return _raising(False)


def immediate() -> Any:
    """Around a trial's objective inside `deferred`: a stop is raised at once, and Optuna, which catches
    it there, marks the trial failed before passing it on."""
    return _raising(True)
