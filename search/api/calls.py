"""What every API function shares: one exception type for bad input, stops handled as in the terminal,
and keyword settings converted and checked as a study file's keys are."""

from __future__ import annotations

import collections.abc
import contextlib
import functools
import inspect
import os
import threading
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from search.api import signals
from search.api.options import Option, apply_settings
from search.checks import shown
from search.errors import UsageError, as_usage_error
from search.study.config import check_study_name, to_value
from search.study.quiet import optuna_quieted

Function = TypeVar("Function", bound=Callable[..., Any])


@typing.overload
def api_call(function: Function) -> Function: ...


@typing.overload
def api_call(*, check_study: Callable[[str], None]) -> Callable[[Function], Function]: ...


def api_call(
    function: Function | None = None, *, check_study: Callable[[str], None] = check_study_name
) -> Function | Callable[[Function], Function]:
    """Bad input of any kind leaves as a UsageError whose message is the line the CLI prints, naming keyword
    arguments where the CLI names flags (search/errors.py `argument`). Optuna is kept quiet for the length
    of the call only (search/study/quiet.py): a caller's own studies log as before.

    Every argument is checked at the boundary, before the function runs: against its annotation (a path
    may also be an os.PathLike, handed on as text), and by name where text has rules of its own (a study
    name, by `check_study`; a storage, a path). A value of the right type is then checked by the function
    itself. `@api_call` or, for a study name with rules of its own, `@api_call(check_study=...)`."""
    if function is None:
        return functools.partial(api_call, check_study=check_study)
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function)

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:  # a missing argument, one too many, an unknown keyword
            raise UsageError(f"{function.__name__}(): {error}") from None
        for name, value in list(bound.arguments.items()):
            bound.arguments[name] = checked_argument(function.__name__, name, value, hints.get(name, Any))
            if name == "study" and value is not None:
                check_study(value)
        try:
            with optuna_quieted():
                return function(*bound.args, **bound.kwargs)
        except UsageError:
            raise
        except Exception as error:
            usage = as_usage_error(error)
            if usage is None:
                raise
            raise usage from None

    return call  # type: ignore[return-value]


# Arguments that name a file or folder: text or an os.PathLike, never empty (an unset variable in a script).
PATH_ARGUMENTS = ("config", "data_dir", "artifacts", "out", "export", "init_json")


def checked_argument(function: str, name: str, value: Any, hint: Any) -> Any:
    """`value` for parameter `name`, once it is of its type and, for text with rules of its own, follows them."""
    if name in PATH_ARGUMENTS and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not conforms(value, hint):
        raise UsageError(f"{function}(): {name} must be {described(hint)}, got {shown(value)}")
    if isinstance(value, str) and name in (*PATH_ARGUMENTS, "storage") and not value.strip():
        what = "a storage URL" if name == "storage" else "a path"
        raise UsageError(f"{function}(): {name} is empty; give {what}, or leave it out for the default")
    return value


def conforms(value: Any, hint: Any) -> bool:
    """Whether `value` is of the annotated type: a bool is no number, text is no sequence of values."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, option) for option in typing.get_args(hint))
    if hint is None or hint is type(None):
        return value is None
    if origin in (Sequence, collections.abc.Sequence, list, tuple):
        (item, *_) = typing.get_args(hint) or (Any,)
        return isinstance(value, list | tuple) and all(conforms(part, item) for part in value)
    if hint is bool or isinstance(value, bool):
        return hint is bool and isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)


def described(hint: Any) -> str:
    """A parameter's type as a message says it."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(described(option) for option in typing.get_args(hint))
    if origin in (Sequence, collections.abc.Sequence, list, tuple):
        (item, *_) = typing.get_args(hint) or (Any,)
        return f"a list of {described(item).removeprefix('a ')}s"
    names = {int: "a whole number", float: "a number", str: "text", bool: "True or False", type(None): "None"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


@contextlib.contextmanager
def stops_handled() -> Iterator[None]:
    """Ctrl-C, SIGTERM and a notebook's kernel interrupt as the CLI handles them: the running trials are
    marked failed and the study resumes. Signal handlers can only be set from the main thread; a run in
    another thread keeps Python's own KeyboardInterrupt handling."""
    if threading.current_thread() is threading.main_thread():
        with signals.handled():
            yield
    else:
        yield


def with_settings(config: Any, settings: dict[str, Any], options: Sequence[Option]) -> Any:
    """`config` with the given keyword `settings` laid over it, each converted as a study file's key is
    (a list to a tuple, a whole number to a float where the field is one) and checked where the config is built."""
    values = {o.name: to_value(settings[o.name], o.type, o.name) for o in options if o.name in settings}
    return apply_settings(config, values, options)
