"""Every setting is declared once (search/api/options.py) and reaches each place that takes it unchanged:
the API's typed keywords (names, types, defaults), the CLI's flags, the study files' keys and the command
line a run hands its workers. A keyword, flag or key added, renamed or retyped in one place only fails here.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import typing
from collections.abc import Sequence
from pathlib import Path

import pytest

from search import api
from search.api.handover import resume_flags, worker_args, worker_command
from search.api.options import (
    BASELINE_OPTIONS,
    BASELINE_SEED,
    DATA_OPTIONS,
    FRONTIER_OPTIONS,
    GRID_OPTIONS,
    GRID_RUN_OPTIONS,
    HANDED_OPTIONS,
    RUN,
    RUN_OPTIONS,
    SEARCH_OPTIONS,
    Option,
    RunOptions,
)
from search.cli import build_parser
from search.study.config import MAX_SEED_COUNT, StudyConfig, study_from_dict
from search.study.grid import config_from_dict

# Each run function: its declared options, and the parameters it has besides them.
FUNCTIONS = {
    "search": ((*RUN_OPTIONS, *SEARCH_OPTIONS, *DATA_OPTIONS), {"config", "quiet"}),
    "grid": ((*GRID_RUN_OPTIONS, *GRID_OPTIONS, *DATA_OPTIONS), {"config", "quiet"}),
    "frontier": (
        (*RUN_OPTIONS, *FRONTIER_OPTIONS, *DATA_OPTIONS),
        {"config", "quiet", "budgets", "seeds", "warm_start"},
    ),
}
BASELINE_KEYWORDS = (*BASELINE_OPTIONS, RUN["device"], RUN["data_dir"], *DATA_OPTIONS)
FUNCTIONS["baseline"] = (BASELINE_KEYWORDS, {"init", "init_value", "seed", "quiet"})
FUNCTIONS["init_study"] = (BASELINE_KEYWORDS, {"seeds", "quiet"})
COMMANDS = {"search": FUNCTIONS["search"][0], "grid": FUNCTIONS["grid"][0], "frontier": FUNCTIONS["frontier"][0]}
COMMANDS["worker"] = tuple(RUN[name] for name in ("study", "storage", "pack", "timeout", "device", "data_dir"))
COMMANDS["baseline"] = (*BASELINE_KEYWORDS, BASELINE_SEED)


def keyword_type(option: Option) -> typing.Any:
    """The type of an option's API keyword: a list may be any sequence; a study's setting may be None
    (left as its study file has it)."""
    hint = option.type
    if typing.get_origin(hint) is tuple:
        hint = Sequence[typing.get_args(hint)[0]]
    return hint | None if option.stored else hint


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_api_keywords_are_the_declared_options(function):
    """Same names, types and defaults; typed keyword-only parameters that help() and a type checker see."""
    options, others = FUNCTIONS[function]
    plain = inspect.unwrap(getattr(api, function))
    parameters = inspect.signature(getattr(api, function)).parameters
    hints = typing.get_type_hints(plain)
    assert set(parameters) == {option.name for option in options} | others
    assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for option in options:
        parameter = parameters[option.name]
        assert parameter.kind is parameter.KEYWORD_ONLY, option.name
        assert hints[option.name] == keyword_type(option), option.name
        assert parameter.default == (None if option.stored else option.default), option.name


def subcommand(command: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_the_cli_flags_are_the_declared_options(command):
    """Each option's flag, read by the option's own reader, defaulting as its keyword does."""
    actions = {action.dest: action for action in subcommand(command)._actions}
    for option in COMMANDS[command]:
        action = actions[option.name]
        assert action.option_strings == [option.flag], option.name
        assert action.type == option.read, option.name
        assert action.choices is None  # a choice is checked once, by the option's dataclass
        assert action.default == (None if option.stored else option.default), option.name


def test_a_flag_is_refused_by_the_same_check_as_the_keyword(tmp_path, capsys):
    """One range check: the dataclass's, whether the value came from a flag or a keyword."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for flag, keyword in (
        ("--workers=0", {"workers": 0}),
        ("--epochs=0", {"epochs": 0}),
        ("--max-depth=0", {"max_depth": 0}),
    ):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["search", flag, f"--storage={url}"])
        assert exited.value.code == 2
        printed = capsys.readouterr().err
        with pytest.raises(api.UsageError) as raised:
            api.search(storage=url, quiet=True, **keyword)
        assert str(raised.value) in printed, (printed, raised.value)
    assert not (tmp_path / "x.db").exists()


TOO_MANY_SEEDS = tuple(range(MAX_SEED_COUNT + 1))

# Flags outside the option tables, each with the API call its keyword makes: (command line, call). A flag
# reads its form only and is refused by the API's own check of that keyword, so both say the same.
CHECKED_AS_THEIR_KEYWORD = {
    "baseline --lr": (["baseline", "--lr=0"], lambda url: api.baseline(lr=0.0, quiet=True)),
    "baseline --epochs": (["baseline", "--epochs=10001"], lambda url: api.baseline(epochs=10_001, quiet=True)),
    "baseline --batch-size": (["baseline", "--batch-size=-1"], lambda url: api.baseline(batch_size=-1, quiet=True)),
    "baseline --seed": (["baseline", "--seed=-1"], lambda url: api.baseline(seed=-1, quiet=True)),
    "baseline --seeds": (["baseline", "--seeds=0,-1"], lambda url: api.init_study(seeds=(0, -1), quiet=True)),
    "baseline --seeds repeated": (["baseline", "--seeds=2,2"], lambda url: api.init_study(seeds=(2, 2), quiet=True)),
    "baseline --seeds too many": (
        ["baseline", "--seeds=" + ",".join(map(str, TOO_MANY_SEEDS))],
        lambda url: api.init_study(seeds=TOO_MANY_SEEDS, quiet=True),
    ),
    "report --init-epochs": (["report", "--init-epochs=0"], lambda url: api.report(storage=url, init_epochs=0)),
    "report --seeds": (["report", "--seeds=4294967296"], lambda url: api.report(storage=url, seeds=[2**32])),
    "frontier --budgets list": (
        ["frontier", "--budgets=5000,100"],
        lambda url: api.frontier(storage=url, budgets=[5000, 100]),
    ),
    "frontier --budgets range": (
        ["frontier", "--budgets=100:5000"],
        lambda url: api.frontier(storage=url, budgets=[100, 5000]),
    ),
    "frontier --budgets above the largest": (
        ["frontier", "--budgets=5000:20000000:3"],
        lambda url: api.frontier(storage=url, budgets=[5000, 20_000_000]),
    ),
    "frontier --budgets repeated": (
        ["frontier", "--budgets=5000,5000"],
        lambda url: api.frontier(storage=url, budgets=[5000, 5000]),
    ),
    "frontier --seeds": (
        ["frontier", "--budgets=5000", "--seeds=0"],
        lambda url: api.frontier(storage=url, budgets=[5000], seeds=0),
    ),
    "best --seeds": (["best", "x", "--seeds=101"], lambda url: api.best("x", storage=url, seeds=101)),
    "worker --trials": (["worker", "--study=x", "--trials=0"], lambda url: api.worker("x", storage=url, trials=0)),
    "worker --worker-index": (
        ["worker", "--study=x", "--worker-index=-1"],
        lambda url: api.worker("x", storage=url, worker_index=-1),
    ),
}


@pytest.mark.parametrize("case", CHECKED_AS_THEIR_KEYWORD)
def test_a_flag_outside_the_tables_is_refused_by_its_keywords_check(case, tmp_path, capsys):
    """One range check, the API's, whether the value came from a flag or a keyword; the flag's refusal
    names it, at parse time, before anything is written."""
    command, call = CHECKED_AS_THEIR_KEYWORD[case]
    url = f"sqlite:///{tmp_path / 'x.db'}"
    flag = command[-1].partition("=")[0]
    uses_storage = command[0] in ("report", "frontier", "best", "worker")
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, *([f"--storage={url}"] if uses_storage else [])])
    assert exited.value.code == 2
    printed = capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(api.UsageError) as raised:
        call(url)
    assert printed == f"archsearch {command[0]}: error: argument {flag}: {raised.value}"
    assert not list(tmp_path.iterdir())


def toml_value(value: typing.Any) -> typing.Any:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(
    "option",
    [*SEARCH_OPTIONS, *GRID_OPTIONS, *DATA_OPTIONS],
    ids=lambda option: f"{option.owner.__name__}.{option.path}",
)
def test_every_stored_option_is_a_study_file_key(option):
    """The option's path is a key of its study file ([table] key for a nested one), read as the same value."""
    *tables, key = option.path.split(".")
    value = option.default
    raw: dict = {key: toml_value(value)}
    for table in reversed(tables):
        raw = {table: raw}
    config = study_from_dict({"name": "x", **raw}) if option.owner is StudyConfig else config_from_dict(raw, "grid")
    assert isinstance(config, option.owner)
    read = config
    for part in option.path.split("."):
        read = getattr(read, part)
    assert read == value and read == option.read(flag_text(option, value))


def flag_text(option: Option, value: typing.Any) -> str:
    """A value as its flag's text."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return option.text(value)


def test_every_run_option_is_a_field_of_run_options():
    assert [option.name for option in RUN_OPTIONS] == [field.name for field in dataclasses.fields(RunOptions)]
    assert all(option.owner is RunOptions for option in RUN_OPTIONS)


def test_the_worker_command_line_reads_back_as_the_run_options_handed():
    """Every handed option, at a value other than its default, reaches the worker's parser unchanged."""
    run = RunOptions("-z", "sqlite:///x.db", 3, "auto", 1_728_000.0, "cpu", "-d", "/a b")
    command = worker_command(worker_args(run), 2)
    args = build_parser().parse_args(command[3:])
    assert {option.name: getattr(args, option.name) for option in HANDED_OPTIONS} == {
        option.name: getattr(run, option.name) for option in HANDED_OPTIONS
    }
    assert all(getattr(run, option.name) != option.default for option in HANDED_OPTIONS)
    assert args.storage is None  # the storage goes through the environment, never the command line
    assert resume_flags(run) == ["--workers=3", "--pack=auto", "--data-dir=-d", "--device=cpu"]
    assert resume_flags(RunOptions()) == []


def test_no_signature_is_patched():
    """The API's parameters are written out, not assigned to __signature__ at import."""
    root = Path(__file__).resolve().parents[1]
    sources = [*root.joinpath("search").rglob("*.py"), *root.joinpath("models").rglob("*.py")]
    assert sources and not [path for path in sources if "__signature__" in path.read_text()]
