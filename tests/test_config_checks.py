"""Every setting's limits, in process: the config dataclasses, TOML-like dicts and the flag types.

Bad input must end in one UsageError (or ArgumentTypeError, for a flag) whose message is one
printable line, never in another exception after a study was written.
"""

from __future__ import annotations

import argparse
import math
import os
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.budget import MAX_BUDGET, MAX_DEPTH
from search.api import args as flag_types
from search.api.options import RUN, RunOptions
from search.engine.config import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_SEED, TrainConfig
from search.errors import UsageError
from search.study.config import (
    MAX_DATA_LIMIT,
    MAX_GRACE_SECONDS,
    MAX_HEARTBEAT_SECONDS,
    MAX_SEED_COUNT,
    MAX_STUDY_FILE_BYTES,
    MAX_STUDY_NAME_LENGTH,
    MAX_TRIALS,
    SearchSpace,
    StudyConfig,
    check_study_name,
    load_toml,
    study_from_dict,
)
from search.study.grid import GridConfig, config_from_dict

REPO = Path(__file__).resolve().parents[1]
INF, NAN = math.inf, math.nan
HUGE = 10**30


def refused(make, says: str = "") -> str:
    """Call `make`, expect a UsageError, and return its message after checking it is one printable line."""
    with pytest.raises(UsageError) as caught:
        make()
    message = str(caught.value)
    assert message.isprintable(), message
    assert says in message, message
    return message


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"epochs": 0}, "epochs must be positive"),
        ({"epochs": MAX_EPOCHS + 1}, "at most 10,000"),
        ({"epochs": True}, "epochs must be a whole number"),
        ({"epochs": 2.0}, "epochs must be a whole number"),
        ({"batch_size": -1}, "batch_size must be between 0"),
        ({"batch_size": MAX_BATCH_SIZE + 1}, "batch_size must be between 0"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"lr": -1e-3}, "lr must be positive"),
        ({"lr": NAN}, "lr must be a finite number"),
        ({"lr": INF}, "lr must be a finite number"),
        ({"lr": HUGE**20}, "lr must be a finite number"),
        ({"lr": "0.1"}, "lr must be a number"),
        ({"momentum": 1.5}, "momentum must be in [0, 1]"),
        ({"momentum": NAN}, "momentum must be a finite number"),
        ({"weight_decay": -INF}, "weight_decay must be a finite number"),
        ({"weight_decay": -0.1}, "weight_decay must be 0 or more"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"dropout": NAN}, "dropout must be a finite number"),
        ({"seed": -1}, "seed must be between 0 and 4,294,967,295"),
        ({"seed": MAX_SEED + 1}, "seed must be between 0 and 4,294,967,295"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
        ({"schedule": ""}, "unknown schedule ''"),
        ({"activation": None}, "unknown activation None"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_train_config_refuses(changes, says):
    refused(lambda: TrainConfig(**changes), says)


def test_train_config_edges_are_accepted():
    TrainConfig(epochs=MAX_EPOCHS, batch_size=0, lr=1e8, momentum=1.0, dropout=0.0, seed=MAX_SEED)
    TrainConfig(batch_size=MAX_BATCH_SIZE, lr=1, weight_decay=0)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"max_depth": 0}, "max_depth must be positive"),
        ({"max_depth": MAX_DEPTH + 1}, f"at most {MAX_DEPTH}"),
        ({"max_depth": 20_000}, f"at most {MAX_DEPTH}"),
        ({"profiles": ()}, "profiles is empty"),
        ({"profiles": ("uniform", "uniform")}, "profiles lists a value twice"),
        ({"profiles": ("zigzag",)}, "unknown profile 'zigzag'"),
        ({"taper": (0.0, 1.0)}, "taper range low must be in (0, 1]"),
        ({"taper": (0.5, 1.5)}, "taper range high must be in (0, 1]"),
        ({"taper": (0.9, 0.1)}, "taper range must satisfy low <= high"),
        ({"free_width": (0.1, INF)}, "free_width range high must be a finite number"),
        ({"weight_decay": (0.0, 0.1)}, "weight_decay range low must be positive"),
        ({"weight_decay": (1e-6, INF)}, "weight_decay range high must be a finite number"),
        ({"weight_decay": (NAN, 1e-2)}, "weight_decay range low must be a finite number"),
        ({"dropout": (0.0, 0.1, 0.2)}, "dropout range must be two numbers"),
        ({"dropout": (0.2,)}, "dropout range must be two numbers"),
        ({"dropout": (0.0, 1.0)}, "dropout range high must be in [0, 1)"),
        ({"dropout": (-0.1, 0.2)}, "dropout range low must be in [0, 1)"),
        ({"lr": (0.0, 1e-2)}, "lr range low must be"),
        ({"lr": (-INF, 1e-2)}, "lr range low must be a finite number"),
        ({"lr": [1e-4, 1e-2]}, "lr range must be two numbers"),
        ({"optimizers": ()}, "optimizers is empty"),
        ({"optimizers": ("adam", "adam")}, "optimizers lists a value twice"),
        ({"schedules": ()}, "schedules is empty"),
        ({"activations": ()}, "activations is empty"),
        ({"activations": ("swish",)}, "unknown activation 'swish'"),
        ({"batch_sizes": ()}, "batch_sizes is empty"),
        ({"batch_sizes": (0, 64)}, "every value of batch_sizes must be positive"),
        ({"batch_sizes": (64, MAX_BATCH_SIZE + 1)}, "every value of batch_sizes must be positive"),
        ({"batch_sizes": (64, True)}, "must be a whole number"),
        ({"batch_sizes": (64, 64)}, "batch_sizes lists a value twice"),
        ({"allow_zero_weight_decay": 1}, "allow_zero_weight_decay must be true or false"),
    ],
)
def test_search_space_refuses(changes, says):
    refused(lambda: SearchSpace(**changes), says)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"budget": 804}, "budget must be between 805 and 10,000,000"),
        ({"budget": 10**15}, "budget must be between 805 and 10,000,000"),
        ({"budget": 50_000.0}, "budget must be a whole number"),
        ({"tolerance": 0.0}, "tolerance must be in (0, 0.5]"),
        ({"tolerance": 0.9}, "tolerance must be in (0, 0.5]"),
        ({"tolerance": NAN}, "tolerance must be a finite number"),
        ({"trials": 0}, "trials must be positive"),
        ({"trials": MAX_TRIALS + 1}, "trials must be positive and at most 1,000,000"),
        ({"epochs": HUGE}, "epochs must be positive and at most"),
        ({"seed": -5}, "seed must be between 0"),
        ({"seed": 2**64}, "seed must be between 0"),
        ({"sampler": "cmaes"}, "unknown sampler 'cmaes'"),
        ({"pruner": "never"}, "unknown pruner 'never'"),
        ({"dataset": "cifar10"}, "unknown dataset 'cifar10'"),
        ({"data_limit": -1}, "data_limit must be between 0"),
        ({"data_limit": MAX_DATA_LIMIT + 1}, "data_limit must be between 0"),
        ({"heartbeat_seconds": 0}, "heartbeat_seconds must be positive"),
        ({"heartbeat_seconds": MAX_HEARTBEAT_SECONDS + 1}, "heartbeat_seconds must be positive and at most 3,600"),
        ({"grace_seconds": MAX_GRACE_SECONDS + 1}, "grace_seconds must be positive and at most 86,400"),
        ({"grace_seconds": 5}, "grace_seconds must be larger than heartbeat_seconds"),
        ({"name": "a/b"}, "study name must not contain / or \\"),
        ({"space": {}}, "space must be a table"),
        ({"storage": None}, "storage must be a URL"),
    ],
)
def test_study_config_refuses(changes, says):
    refused(lambda: StudyConfig(**changes), says)


def test_study_config_edges_are_accepted():
    StudyConfig(budget=MAX_BUDGET, tolerance=0.5, trials=MAX_TRIALS, seed=MAX_SEED, heartbeat_seconds=3600,
                grace_seconds=MAX_GRACE_SECONDS, data_limit=MAX_DATA_LIMIT)  # fmt: skip
    StudyConfig(name="")  # `search` names a study after its budget once the flags are merged


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"budgets": ()}, "budgets is empty"),
        ({"budgets": (50_000, 50_000)}, "budgets lists a value twice"),
        ({"budgets": (10**15,)}, "every value of budgets must be at most 10,000,000"),
        ({"budgets": (False,)}, "must be a whole number"),
        ({"budgets": (800,)}, "800 (no hidden layer fits below 805 parameters)"),
        ({"depths": ()}, "depths is empty"),
        ({"depths": (0,)}, "every value of depths must be positive"),
        ({"depths": (1, MAX_DEPTH + 1)}, f"at most {MAX_DEPTH}"),
        ({"depths": (1, 1)}, "depths lists a value twice"),
        ({"seeds": 0}, "seeds must be positive"),
        ({"seeds": MAX_SEED_COUNT + 1}, "seeds must be positive and at most 1,000"),
        ({"budgets": tuple(range(1000, 1000 + 20_000)), "depths": (1,), "seeds": 100}, "at most 1,000,000 points"),
        ({"heartbeat_seconds": 10**9}, "heartbeat_seconds must be positive and at most"),
        ({"data_limit": 2**40}, "data_limit must be between 0"),
        ({"name": ""}, "study name must not be empty"),
        ({"name": ".."}, "study name must not be '..'"),
        ({"train": {"epochs": 1}}, "train must be a table"),
        ({"train": TrainConfig(seed=3)}, "seed and device are not grid settings"),
    ],
)
def test_grid_config_refuses(changes, says):
    refused(lambda: GridConfig(**changes), says)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"budget": INF}, "budget must be of type int, got inf"),
        ({"tolerance": INF}, "tolerance must be a finite number, got inf"),
        ({"tolerance": NAN}, "tolerance must be a finite number, got nan"),
        ({"tolerance": 10**400}, "tolerance must be a finite number"),
        ({"budget": 10**5000}, "got a value too large to show"),
        ({"budget": True}, "budget must be of type int, got True"),
        ({"trials": "many"}, "trials must be of type int"),
        ({"space": {"lr": [1e-4, INF]}}, "lr must be a finite number"),
        ({"space": {"lr": [NAN, 1e-2]}}, "lr must be a finite number"),
        ({"space": {"dropout": [0.0, 0.1, 0.2]}}, "dropout must be a list of exactly 2 values"),
        ({"space": {"taper": []}}, "taper must be a list of exactly 2 values"),
        ({"space": {"taper": 0.5}}, "taper must be a list"),
        ({"space": {"batch_sizes": []}}, "batch_sizes is empty"),
        ({"space": {"batch_sizes": [64, True]}}, "batch_sizes must be of type int, got True"),
        ({"space": {"batch_sizes": [64.0]}}, "batch_sizes must be of type int, got 64.0"),
        ({"space": {"optimizers": []}}, "optimizers is empty"),
        ({"space": {"activations": []}}, "activations is empty"),
        ({"space": {"schedules": []}}, "schedules is empty"),
        ({"space": {"max_depth": 20_000}}, f"max_depth must be positive and at most {MAX_DEPTH}"),
        ({"space": [1, 2]}, "[space] must be a table"),
        ({"space": {"lr": [[1e-4], [1e-2]]}}, "lr must be of type float"),
        ({"budget": 10**15}, "budget must be between 805 and 10,000,000"),
        ({"seed": 2**32}, "seed must be between 0 and 4,294,967,295"),
        ({"seed": -1}, "seed must be between 0"),
        ({"name": ""}, "study name must not be empty"),
        ({"name": "x" * (MAX_STUDY_NAME_LENGTH + 1)}, "study name must be at most 200 characters"),
        ({"name": "two\nlines"}, "control or invisible characters"),
        ({"bugdet": 1}, "unknown key(s) bugdet"),
        ({"a\nb": 1}, "unknown key(s) 'a\\nb'"),
    ],
)
def test_study_from_dict_refuses(raw, says):
    refused(lambda: study_from_dict(raw, "bad.toml"), says)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"budgets": []}, "budgets is empty"),
        ({"budgets": [10**15]}, "at most 10,000,000"),
        ({"budgets": [50_000.0]}, "budgets must be of type int"),
        ({"depths": [20_000]}, f"at most {MAX_DEPTH}"),
        ({"depths": [1, True]}, "depths must be of type int, got True"),
        ({"seeds": 10**6}, "seeds must be positive and at most 1,000"),
        ({"seeds": INF}, "seeds must be of type int"),
        ({"train": {"lr": INF}}, "lr must be a finite number"),
        ({"train": {"lr": NAN}}, "lr must be a finite number"),
        ({"train": {"batch_size": -1}}, "batch_size must be between 0"),
        ({"train": {"epochs": 10**9}}, "epochs must be positive and at most"),
        ({"train": {"momentum": [0.9]}}, "momentum must be of type float"),
        ({"train": "adam"}, "[train] must be a table"),
        ({"grace_seconds": 10**9}, "grace_seconds must be positive and at most 86,400"),
        ({"name": "\udcff"}, "study name must be valid UTF-8"),
        ({"name": "a/b"}, "must not contain / or \\"),
        ({"budget": 50_000}, "unknown key(s) budget"),
    ],
)
def test_config_from_dict_refuses(raw, says):
    refused(lambda: config_from_dict(raw, "grid.toml"), says)


def test_where_with_control_characters_stays_one_line():
    message = refused(lambda: study_from_dict({"trials": "x"}, "file\nname\udcff.toml"))
    assert "file\\nname\\udcff.toml" in message


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.toml")), ids=lambda path: path.name)
def test_shipped_study_files_load(path):
    raw = load_toml(path)
    config = config_from_dict(raw, path.name) if "budgets" in raw else study_from_dict(raw, path.name)
    assert config.name == path.stem


@pytest.mark.parametrize(
    "name",
    ["profiles-50k", "my study", "it's; rm -rf", 'quote"d', "Müller-Äpfel", "研究", "x" * MAX_STUDY_NAME_LENGTH, "..a"],
)
def test_printable_study_names_are_allowed(name):
    check_study_name(name)
    StudyConfig(name=name)
    GridConfig(name=name)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * (MAX_STUDY_NAME_LENGTH + 1), "at most 200 characters"),
        ("a\udcffb", "must be valid UTF-8, got 'a\\udcffb'"),
        ("\ud800", "must be valid UTF-8"),
        ("a\nb", "control or invisible"),
        ("a\tb", "control or invisible"),
        ("a\x00b", "control or invisible"),
        ("a\x1b[31mred", "control or invisible"),
        ("a\u202eb", "control or invisible"),
        ("a\u2028b", "control or invisible"),
        (".", "must not be '.'"),
        ("..", "must not be '..'"),
        ("a/b", "must not contain / or \\"),
        ("a\\b", "must not contain / or \\"),
        (None, "study name must be text"),
    ],
)
def test_bad_study_names_are_refused(name, says):
    refused(lambda: check_study_name(name), says)
    if isinstance(name, str):
        with pytest.raises(argparse.ArgumentTypeError, match="study name"):
            flag_types.study_name(name)


def test_messages_about_surrogates_print_on_an_ascii_terminal():
    message = refused(lambda: check_study_name("bad\udcffname"))
    message.encode("ascii")


def bad_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "study.toml"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'name = "\xff\xfe"\n', "is not UTF-8 text"),
        (bytes(range(256)), "is not UTF-8 text"),
        (b"budget = [\n", "is not valid TOML"),
        (b"budget = " + b"1" * 5000 + b"\n", "holds a number too long to read"),
        (b"a = " + b"[" * 100_000 + b"]" * 100_000, "nests lists or tables too deeply"),
        (b"# " + b"x" * MAX_STUDY_FILE_BYTES, "is larger than 1,000,000 bytes"),
        (b"a = 1\x00\n", "is not valid TOML"),
    ],
)
def test_unreadable_study_files_are_one_line(tmp_path, content, says):
    path = bad_file(tmp_path, content)
    refused(lambda: load_toml(path), says)


def test_study_file_that_is_a_folder_or_missing_or_special(tmp_path):
    refused(lambda: load_toml(tmp_path), "is a folder")
    refused(lambda: load_toml(tmp_path / "none.toml"), "not found")
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    refused(lambda: load_toml(fifo), "is not a regular file")
    refused(lambda: load_toml(tmp_path / "new\nline.toml"), "study file " + str(tmp_path) + "/new\\nline.toml")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_study_file_without_permission(tmp_path):
    path = bad_file(tmp_path, b"budget = 50000\n")
    path.chmod(0)
    refused(lambda: load_toml(path), "cannot read study file")


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (flag_types.positive_int, "12", 12),
        (flag_types.non_negative_int, "0", 0),
        (flag_types.non_negative_float, "0", 0.0),
        (flag_types.finite_float, "-2.5", -2.5),
        (flag_types.budget, "805", 805),
        (flag_types.budget, str(MAX_BUDGET), MAX_BUDGET),
        (flag_types.depth, str(MAX_DEPTH), MAX_DEPTH),
        (flag_types.whole_numbers, "0, -1,7", (0, -1, 7)),
        (flag_types.batch_size_form, "full", 0),
        (flag_types.pack_form, "auto", "auto"),
        (flag_types.pack_form, "-3", -3),
        (flag_types.int_list, "1,2, 4", [1, 2, 4]),
        (flag_types.depth_list, "1,8,64", [1, 8, 64]),
        (flag_types.study_name, "my study", "my study"),
    ],
)
def test_flag_types_accept(parse, text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("parse", "text", "says"),
    [
        (flag_types.positive_int, "0", "must be positive"),
        (flag_types.positive_int, str(10**30), "at most 9,223,372,036,854,775,807"),
        (flag_types.positive_int, "1" * 5000, "not a whole number"),
        (flag_types.positive_int, "1.5", "not a whole number"),
        (flag_types.non_negative_int, "-1", "must be between 0"),
        (flag_types.non_negative_float, "-0.1", "must be 0 or more"),
        (flag_types.non_negative_float, "nan", "must be a finite number"),
        (flag_types.non_negative_float, "inf", "must be a finite number"),
        (flag_types.non_negative_float, "-inf", "must be a finite number"),
        (flag_types.non_negative_float, "1e400", "must be a finite number"),
        (flag_types.finite_float, "NaN", "must be a finite number"),
        (flag_types.finite_float, "abc", "not a number"),
        (flag_types.budget, "804", "between 805 and 10,000,000"),
        (flag_types.budget, str(10**15), "between 805 and 10,000,000"),
        (flag_types.depth, "20000", f"at most {MAX_DEPTH}"),
        (flag_types.depth, "0", "must be positive"),
        (flag_types.whole_numbers, "1,2.5", "expected comma-separated whole numbers"),
        (flag_types.pack_form, "x", "not a whole number"),
        (flag_types.int_list, "1,two", "expected comma-separated"),
        (flag_types.int_list, ",,", "expected at least one value"),
        (flag_types.int_list, "1,1", "lists 1 twice"),
        (flag_types.depth_list, "1,20000", "expected comma-separated numbers of hidden layers"),
        (flag_types.study_name, "a\nb", "control or invisible"),
        (flag_types.study_name, "\udcff", "valid UTF-8"),
    ],
)
def test_flag_types_refuse(parse, text, says):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse(text)
    message = str(caught.value)
    assert says in message and message.isprintable(), message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("45s", 45),
        ("2h", 7200),
        ("3600", 3600),
        ("1.5h", 5400),
        (".5m", 30),
        ("1d", 86_400),
        ("2H", 7200),
        ("1h0m5s", 3605),
        ("30d", 30 * 86_400),
        ("0.5", 0.5),
    ],
)
def test_duration_accepts(text, seconds):
    assert flag_types.duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "expected a duration such as"),
        ("   ", "expected a duration such as"),
        ("-5m", "expected a duration such as"),
        ("-5", "expected a duration such as"),
        ("nan", "expected a duration such as"),
        ("inf", "expected a duration such as"),
        ("1e3", "expected a duration such as"),
        ("soon", "expected a duration such as"),
        ("1h30", "expected a duration such as"),
        ("30m1h", "expected a duration such as"),
        ("1hh", "expected a duration such as"),
        ("1h\n2m\udcff", "expected a duration such as"),
    ],
)
def test_duration_refuses(text, says):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        flag_types.duration(text)
    message = str(caught.value)
    assert says in message and message.isprintable(), message
    if says.startswith("expected"):
        assert "1h30m" in message and "plain seconds" in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0", "timeout must be positive"),
        ("0h0m", "timeout must be positive"),
        ("31d", "must be at most 30 days"),
        ("721h", "must be at most 30 days"),
        ("9" * 400, "timeout must be a finite number"),
    ],
)
def test_a_timeout_flag_out_of_range_is_refused_by_the_one_check(text, says):
    """--timeout reads a duration's form, then RunOptions checks its range, as it does an API keyword's."""
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        RUN["timeout"].read(text)
    message = str(caught.value)
    assert says in message and message.isprintable(), message
    with pytest.raises(UsageError, match=says):
        RunOptions(timeout=flag_types.duration(text))


# Property tests: any TOML-representable value under any known key ends in a config or a UsageError.

TOML_SCALARS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, -1, 805, 10**15, 2**32, 2**63 - 1]),
    st.integers(4300, 4400).map(lambda digits: 10**digits),  # too long for int's repr
    st.floats(),
    st.sampled_from([INF, -INF, NAN, 0.0, 0.5, 1.0, 1e-4]),
    st.booleans(),
    st.text(max_size=8),
    st.text(alphabet=st.characters(codec=None), max_size=4),  # control characters and lone surrogates too
    st.sampled_from(["adam", "sgd", "tanh", "uniform", "tpe", "median", "mnist", "auto", "\udcff", "a/b", ""]),
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def tables(keys: list[str], nested: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Dicts of some of `keys`, each with any TOML value, or for a nested table's key a table of its own."""
    value_of = {key: st.one_of(nested[key], TOML_VALUES) if key in nested else TOML_VALUES for key in keys}
    return st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)).flatmap(
        lambda chosen: st.fixed_dictionaries({key: value_of[key] for key in chosen})
    )


def field_names(cls: type) -> list[str]:
    return list(cls.__dataclass_fields__)


STUDY_DICTS = tables(field_names(StudyConfig), {"space": tables(field_names(SearchSpace), {})})
GRID_DICTS = tables(field_names(GridConfig), {"train": tables(field_names(TrainConfig), {})})
PROPERTY_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def config_or_usage_error(build, raw: dict) -> None:
    try:
        build(raw, "fuzz.toml")
    except UsageError as error:
        assert str(error).isprintable(), str(error)


@PROPERTY_SETTINGS
@given(STUDY_DICTS)
def test_any_study_dict_gives_a_config_or_a_usage_error(raw):
    config_or_usage_error(study_from_dict, raw)


@PROPERTY_SETTINGS
@given(GRID_DICTS)
def test_any_grid_dict_gives_a_config_or_a_usage_error(raw):
    config_or_usage_error(config_from_dict, raw)


@PROPERTY_SETTINGS
@given(st.text(alphabet=st.characters(codec=None), max_size=12))
def test_any_flag_text_gives_a_value_or_one_line(text):
    for parse in (flag_types.positive_int, flag_types.non_negative_float, flag_types.duration, flag_types.whole_numbers,
                  flag_types.batch_size_form, flag_types.study_name):  # fmt: skip
        try:
            parse(text)
        except argparse.ArgumentTypeError as error:
            assert str(error).isprintable(), str(error)


def with_one_value(raw: dict, table: str) -> st.SearchStrategy:
    """`raw` (a shipped study file) with one key, at the top or in `table`, set to any TOML value."""
    places = [(key,) for key in raw if key != table] + [(table, key) for key in raw[table]]

    def replaced(place: tuple[str, ...], value: object) -> dict:
        changed = {**raw, table: dict(raw[table])}
        (changed if len(place) == 1 else changed[table])[place[-1]] = value
        return changed

    return st.builds(replaced, st.sampled_from(places), TOML_VALUES)


SHIPPED_STUDY = tomllib.loads((REPO / "studies" / "profiles-50k.toml").read_text())
SHIPPED_GRID = tomllib.loads((REPO / "studies" / "ksweep.toml").read_text())


@PROPERTY_SETTINGS
@given(with_one_value(SHIPPED_STUDY, "space"))
def test_a_study_file_with_any_one_value_gives_a_config_or_a_usage_error(raw):
    config_or_usage_error(study_from_dict, raw)


@PROPERTY_SETTINGS
@given(with_one_value(SHIPPED_GRID, "train"))
def test_a_grid_file_with_any_one_value_gives_a_config_or_a_usage_error(raw):
    config_or_usage_error(config_from_dict, raw)


def test_toml_parses_inf_and_nan_which_the_configs_refuse():
    raw = tomllib.loads("tolerance = inf\n[space]\nlr = [nan, 1e-2]\n")
    refused(lambda: study_from_dict(raw, "inf.toml"), "tolerance must be a finite number")
