"""The Python API at its boundary: a wrongly typed or empty argument to any public function is one UsageError
line, raised before anything runs, and nothing is written.

The functions and their parameters come from `search.api` itself (every public function, every parameter of
its signature, the settings keywords included, each typed), so a new one is covered without touching this file. Each
(function, parameter) gets generated wrong values: values no parameter takes (an object, bytes, a dict, a set),
values of another type than its annotation, and empty or invalid text where text has rules (a storage, a
path, a study name). The issue's examples are among them.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import shutil
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from search import api
from search.api.calls import conforms
from search.api.frontier import MAX_FRONTIER_NAME_LENGTH
from tests.studies import add_search_study

PUBLIC = {
    name: getattr(api, name)
    for name in api.__all__
    if inspect.isfunction(getattr(api, name)) and inspect.signature(getattr(api, name)).parameters
}
REQUIRED = {"study": "s", "budget": 50_000}  # valid values of the parameters without a default

NO_PARAMETER_TAKES = [object(), b"bytes", {"a": 1}, {}, {1, 2}, [object()], (None,)]
ANY_TYPE = [None, "", " ", "x", 0, -1, 2**64, 1.5, math.nan, True, [], [1], ["x"], (1, 2)]
# Text of the right type that these parameters must still refuse, before anything runs.
REFUSED_TEXT = {
    "storage": ["", " ", "\t"],
    "study": ["", " ", "a/b", "x" * 300, "a\nb", "--"],
    **{name: ["", " "] for name in ("config", "data_dir", "artifacts", "out", "export", "init_json")},
}


def wrong_values(function: str, parameter: str) -> list:
    """Values `parameter` of `function` must refuse at the boundary."""
    hint = typing.get_type_hints(inspect.unwrap(PUBLIC[function]))[parameter]  # every parameter is annotated
    typed = [value for value in ANY_TYPE if not conforms(value, hint)]
    return NO_PARAMETER_TAKES + typed + REFUSED_TEXT.get(parameter, [])


CASES = [(function, parameter) for function in PUBLIC for parameter in inspect.signature(PUBLIC[function]).parameters]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "studies.db"
    add_search_study(f"sqlite:///{path}", "s")
    return path


@pytest.fixture
def folder(template, tmp_path, monkeypatch) -> Path:
    """A working folder with a study "s", the current folder and the default storage's home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARCHSEARCH_STORAGE", raising=False)
    shutil.copy(template, tmp_path / "studies.db")
    return tmp_path


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def check_refused(folder: Path, function: str, parameter: str, value) -> None:
    signature = inspect.signature(PUBLIC[function])
    arguments = {name: REQUIRED[name] for name, p in signature.parameters.items() if p.default is p.empty}
    if "storage" in signature.parameters:
        arguments["storage"] = f"sqlite:///{folder / 'studies.db'}"
    arguments[parameter] = value
    before = snapshot(folder)
    with pytest.raises(api.UsageError) as raised:
        PUBLIC[function](**arguments)
    message = str(raised.value)
    assert message and "\n" not in message, message
    assert snapshot(folder) == before, (function, parameter, value)


@pytest.mark.parametrize(("function", "parameter"), CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_a_wrong_argument_is_one_usage_error_and_writes_nothing(function, parameter, folder):
    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=st.sampled_from(wrong_values(function, parameter)))
    def check(value):
        check_refused(folder, function, parameter, value)

    check()


ISSUE_EXAMPLES = [
    ("trials", "storage", 0), ("trials", "storage", []), ("trials", "storage", ""), ("search", "storage", 1.5),
    ("best", "data_dir", 1), ("search", "config", 1), ("export", "out", 1), ("report", "out", ["r"]),
    ("frontier", "budgets", 10_000), ("export", "formats", None), ("best", "study", None), ("trials", "study", []),
    ("figures", "study", 2**64), ("search", "workers", 0), ("grid", "storage", 0),
]  # fmt: skip


@pytest.mark.parametrize(("function", "parameter", "value"), ISSUE_EXAMPLES)
def test_the_issues_examples_are_refused(function, parameter, value, folder):
    check_refused(folder, function, parameter, value)


def test_a_path_may_be_a_path_object(folder):
    """os.PathLike is a path too: handed on as text, not refused."""
    done = api.export("s", storage=f"sqlite:///{folder / 'studies.db'}", out=folder / "e", formats=["html"])
    assert done.folder == folder / "e" and done.files


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(length=st.integers(MAX_FRONTIER_NAME_LENGTH - 3, 400))
@example(length=199)
def test_a_frontier_name_is_limited_in_what_the_user_typed(length, folder):
    """The limit is said for the name given, never for NAME@BUDGET, which the user did not type."""
    name = "f" * length
    with pytest.raises(api.UsageError) as raised:
        api.frontier(study=name, budgets=(), storage=f"sqlite:///{folder / 'studies.db'}")
    message = str(raised.value)
    if length > MAX_FRONTIER_NAME_LENGTH:
        assert f"at most {MAX_FRONTIER_NAME_LENGTH} characters" in message and f"got {length:,}" in message, message
    else:
        assert "budgets is empty" in message, message  # the name passed; the empty budgets did not
    assert "@" not in message.split("(", 1)[0]
