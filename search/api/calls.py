"""What every API function shares: one exception type for bad input, stops handled as in the terminal,
and keyword settings checked against the same option tables as the CLI's flags."""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from search.api import signals
from search.api.options import ConfigOption, apply_config_options
from search.errors import UsageError, as_usage_error
from search.study.config import field_type, to_value

Function = TypeVar("Function", bound=Callable[..., Any])


def api_call(function: Function) -> Function:
    """Bad input of any kind leaves as a UsageError whose message is the line the CLI prints."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except UsageError:
            raise
        except Exception as error:
            usage = as_usage_error(error)
            if usage is None:
                raise
            raise usage from None

    return call  # type: ignore[return-value]


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


def with_settings(config: Any, settings: dict[str, Any], options: Sequence[ConfigOption], caller: str) -> Any:
    """`config` with keyword `settings` laid over it, each converted and checked as a study file's key is."""
    known = {option.dest: option for option in options}
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise UsageError(f"{caller}() got unknown setting(s) {', '.join(unknown)}; its settings: {', '.join(known)}")
    values = {}
    for name, value in settings.items():
        if value is not None:
            values[name] = to_value(value, field_type(type(config), known[name].path), name)
    return apply_config_options(config, _Given(values), options)


class _Given:
    """The given settings as apply_config_options reads flags: absent ones are None."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def __getattr__(self, name: str) -> Any:
        return self.values.get(name)


def settings_signature(function: Callable, options: Sequence[ConfigOption]) -> inspect.Signature:
    """The function's signature with each setting as a keyword, so help() and a notebook's completion
    list them; the defaults come from the study file, or the config's own, so they show as None."""
    signature = inspect.signature(function)
    fixed = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    names = {p.name for p in fixed}
    extra = [
        inspect.Parameter(option.dest, inspect.Parameter.KEYWORD_ONLY, default=None)
        for option in options
        if option.dest not in names
    ]
    return signature.replace(parameters=[*fixed, *extra])
