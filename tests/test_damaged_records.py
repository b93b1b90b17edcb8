"""A study whose stored attributes are damaged (edited by hand, written by another tool): every command that
reads it says which field of which record is damaged, in one line with exit 2, and changes nothing.

The damage is generated over every field of the record types (search/study/record.py): each field of a
trial's record, set on every trial of a search and a grid study, and each field of a study's record, set on
both studies, takes values of other types (the issue's `params = 'oops'` among them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from search.cli import main
from search.engine.config import TrainConfig
from search.study.record import FIELD_TYPES, StudyRecord, TrialRecord, conforms
from tests.studies import add_grid_study, add_search_study

# Generated damaged values per field, beside the explicit ones below (more: ARCHSEARCH_DAMAGE_EXAMPLES=N).
EXAMPLES = int(os.environ.get("ARCHSEARCH_DAMAGE_EXAMPLES", "2"))
WRONG = ["oops", "", 5, -1, 1.5, None, True, [], ["a"], [1, "x"], {}, {"a": 1}, [[1]], {"1": [None]}]
# Settings tables whose contents are damaged: read key by key, they are checked as settings are.
DAMAGED_SETTINGS = {
    "train_config": [{"lr": "x"}, {"optimizer": 5}, {"activation": "zigzag"}, {"epochs": -1}, {"unknown": 1}],
    "config": [{"budget": "x"}, {"data_limit": "x"}, {"trials": 0}, {"budgets": "x"}, {"unknown": 1}],
    "baseline": [{"a": 1}, {"train_loss": "x", "test_loss": 0.4, "train_accuracy": 0.9, "test_accuracy": 0.9}],
    "retrained": [{"a": 1}, {"trained_on": 5, "train_loss": 0.1, "test_loss": 0.1, "test_accuracy": 0.9}],
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("damaged")
    url = f"sqlite:///{folder / 'studies.db'}"
    add_search_study(url, "s")
    add_grid_study(url, "g", budgets=(20_000,), depths=(1, 2), seeds=1)
    damage(folder / "studies.db", "trial", "train_config", dataclasses.asdict(TrainConfig()))  # as trials store it
    return folder / "studies.db"


def damage(database: Path, table: str, field: str, value: object) -> None:
    """Set `field` to `value` in every row's attributes of `table` (trial or study), as another tool would."""
    owner = "trial_id" if table == "trial" else "study_id"
    with sqlite3.connect(database) as connection:
        owners = [row[0] for row in connection.execute(f"SELECT {owner} FROM {table}s".replace("ys", "ies"))]
        for key in owners:
            connection.execute(f"DELETE FROM {table}_user_attributes WHERE {owner} = ? AND key = ?", (key, field))
            connection.execute(
                f"INSERT INTO {table}_user_attributes ({owner}, key, value_json) VALUES (?, ?, ?)",
                (key, field, json.dumps(value)),
            )
    connection.close()


def commands(url: str, out: Path) -> list[list[str]]:
    return [
        ["best", "--study", "s", "--storage", url],
        ["export", "--study", "g", "--storage", url, "--out", str(out), "--format", "html"],
        ["report", "--storage", url, "--out", str(out)],
    ]


def check_refused(template: Path, folder: Path, table: str, field: str, value: object, capsys) -> None:
    database = folder / "studies.db"
    shutil.copy(template, database)
    damage(database, table, field, value)
    before = database.read_bytes()
    url = f"sqlite:///{database}"
    for argv in commands(url, folder / "report"):
        status = main(argv)
        err = capsys.readouterr().err
        assert status == 2, (argv, err)
        assert err.count("\n") == 1 and "damaged" in err and repr(field) in err, (argv, err)
    assert database.read_bytes() == before
    assert not (folder / "report").exists()


def wrong_values(field: str, hint) -> st.SearchStrategy:
    return st.sampled_from([value for value in WRONG if not conforms(value, hint)] + DAMAGED_SETTINGS.get(field, []))


def test_the_undamaged_studies_are_read_by_every_command(template, tmp_path, capsys):
    """The cases below start from studies every command reads: a refusal is the damage's doing."""
    shutil.copy(template, tmp_path / "studies.db")
    for argv in commands(f"sqlite:///{tmp_path / 'studies.db'}", tmp_path / "report"):
        assert main(argv) == 0, (argv, capsys.readouterr().err)


TRIAL_FIELDS = [f.name for f in dataclasses.fields(TrialRecord)]
STUDY_FIELDS = [f.name for f in dataclasses.fields(StudyRecord)]


@pytest.mark.parametrize("field", TRIAL_FIELDS)
def test_a_damaged_trial_record_is_one_line_naming_the_field(field, template, tmp_path, capsys):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=wrong_values(field, FIELD_TYPES[TrialRecord][field]))
    def check(value):
        check_refused(template, tmp_path, "trial", field, value, capsys)

    for value in ["oops"] * (field == "params") + DAMAGED_SETTINGS.get(field, []):  # the issue's, and damaged tables
        check = example(value=value)(check)
    check()


@pytest.mark.parametrize("field", STUDY_FIELDS)
def test_a_damaged_study_record_is_one_line_naming_the_field(field, template, tmp_path, capsys):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=wrong_values(field, FIELD_TYPES[StudyRecord][field]))
    def check(value):
        check_refused(template, tmp_path, "study", field, value, capsys)

    for value in DAMAGED_SETTINGS.get(field, []):
        check = example(value=value)(check)
    check()
