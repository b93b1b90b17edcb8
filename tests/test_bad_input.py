"""Every command, every kind of bad input: exit 2, one line on stderr, no traceback, the study untouched.

To extend: add a `Case` to CASES. Placeholders in its arguments:
  {db}        SQLite URL of a database holding two real, finished studies: search "real", grid "realgrid"
  {folder}    a folder of the case's own (also the command's working directory)
  {file}      a plain file, so "{file}/out" is a folder that cannot be created (root ignores permissions)
  {damaged}   a data root whose MNIST files are garbage
  {malformed} a file that is not valid TOML (nor JSON); {unknown_key}, {wrong_type}: TOML study files
  {pg_bad}    the test PostgreSQL server's URL with a wrong password (the case needs ARCHSEARCH_TEST_PG)

Each command runs against its own byte-identical copy of the database, so the cases run two or three at
a time on the 2-core machine; the copy is hashed before and after.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from tests.conftest import archsearch, command_env

PG = os.environ.get("ARCHSEARCH_TEST_PG")
ONE_LINE_ERROR = re.compile(r"^archsearch( [a-z]+)?: error: \S.*$")


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    postgres: bool = False
    says: str = ""  # a part of the message, where the cause matters


def case(id: str, *args: str, says: str = "") -> Case:
    if "{damaged}" in args:  # read and refused, never a download attempt
        says = says or "cannot read mnist"
    if "{pg_bad}" in args:
        says = says or "password authentication failed"
    return Case(id, args, postgres="{pg_bad}" in args, says=says)


STUDY = ("--study", "real", "--storage", "{db}")
FRESH = ("--study", "fresh", "--storage", "{db}")
GRID = ("--study", "realgrid", "--storage", "{db}")
NEW_GRID = ("--study", "freshgrid", "--storage", "{db}")
NO_DB = "sqlite:///{folder}/none/studies.db"

CASES = [
    case("unknown-command", "fly"),
    # budget
    case("budget-zero", "budget", "0"),
    case("budget-word", "budget", "lots"),
    case("budget-below-smallest-net", "budget", "100"),
    case("budget-depths-word", "budget", "50000", "--depths", "1,two"),
    # baseline
    case("baseline-lr-nan", "baseline", "--lr", "nan"),
    case("baseline-lr-zero", "baseline", "--lr", "0", says="argument --lr: lr must be positive"),
    case("baseline-seeds-negative", "baseline", "--init-study", "--seeds", "0,-1", says="--seeds: every value"),
    case("baseline-unknown-init", "baseline", "--init", "orthogonal"),
    case("baseline-normal-init-without-std", "baseline", "--init", "normal"),
    case("baseline-unknown-dataset", "baseline", "--dataset", "cifar10"),
    case("baseline-damaged-data", "baseline", "--data-dir", "{damaged}", "--epochs", "1"),
    # search
    case("search-trials-zero", "search", *STUDY, "--trials", "0"),
    case("search-workers-negative", "search", *STUDY, "--workers", "-1"),
    case("search-pack-neither-a-size-nor-auto", "search", *STUDY, "--pack", "Auto"),
    case("search-budget-below-smallest-net", "search", *FRESH, "--budget", "500"),
    case("search-tolerance-too-wide", "search", *FRESH, "--tolerance", "0.9"),
    case("search-too-deep-for-budget", "search", *FRESH, "--budget", "810", "--max-depth", "8"),
    case("search-unknown-sampler", "search", *FRESH, "--sampler", "cmaes"),
    case("search-unknown-profile", "search", *FRESH, "--profiles", "uniform,zigzag"),
    case("search-missing-toml", "search", "--config", "{folder}/nowhere.toml", "--storage", "{db}"),
    case("search-malformed-toml", "search", "--config", "{malformed}", "--storage", "{db}"),
    case("search-toml-unknown-key", "search", "--config", "{unknown_key}", "--storage", "{db}"),
    case("search-toml-wrong-type", "search", "--config", "{wrong_type}", "--storage", "{db}"),
    case("search-other-settings-than-stored", "search", *STUDY, "--budget", "30000", says="other settings"),
    case("search-damaged-data", "search", *STUDY, "--data-dir", "{damaged}"),
    case("search-unwritable-artifacts", "search", *STUDY, "--artifacts", "{file}/artifacts"),
    case("search-unwritable-storage-folder", "search", "--study", "x", "--storage", "sqlite:///{file}/studies.db"),
    case("search-storage-wrong-scheme", "search", "--study", "x", "--storage", "ftp://host/studies"),
    case("search-storage-unparseable", "search", "--study", "x", "--storage", "not a url"),
    case("search-postgres-wrong-password", "search", "--study", "x", "--storage", "{pg_bad}"),
    # grid
    case("grid-budget-below-smallest-net", "grid", *NEW_GRID, "--budgets", "500", "--depths", "1"),
    case("grid-seeds-zero", "grid", *NEW_GRID, "--seeds", "0"),
    case("grid-unknown-optimizer", "grid", *NEW_GRID, "--optimizer", "lion"),
    case("grid-malformed-toml", "grid", "--config", "{malformed}", "--storage", "{db}"),
    case("grid-other-settings-than-stored", "grid", *GRID, "--seeds", "2", says="other settings"),
    case("grid-damaged-data", "grid", *GRID, "--data-dir", "{damaged}"),
    case("grid-storage-wrong-scheme", "grid", "--study", "x", "--storage", "ftp://host/studies"),
    case("grid-postgres-wrong-password", "grid", "--study", "x", "--storage", "{pg_bad}"),
    # frontier
    case("frontier-reversed-range", "frontier", "--storage", "{db}", "--budgets", "40000:10000"),
    case("frontier-budget-below-smallest-net", "frontier", "--storage", "{db}", "--budgets", "100:5000"),
    case("frontier-budgets-repeated", "frontier", "--storage", "{db}", "--budgets", "10000,10000", says="lists"),
    case("frontier-one-point", "frontier", "--storage", "{db}", "--budgets", "10000:40000:1"),
    case("frontier-seeds-zero", "frontier", "--storage", "{db}", "--budgets", "10000:40000", "--seeds", "0"),
    case("frontier-unwritable-out", "frontier", "--storage", "{db}", "--budgets", "10000:40000", "--out", "{file}/o"),
    case(
        "frontier-damaged-data", "frontier", "--storage", "{db}", "--budgets", "10000,20000", "--data-dir", "{damaged}"
    ),
    case("frontier-postgres-wrong-password", "frontier", "--storage", "{pg_bad}", "--budgets", "10000,20000"),
    # worker
    case("worker-without-study", "worker", "--storage", "{db}"),
    case("worker-trials-zero", "worker", *STUDY, "--trials", "0", says="argument --trials: trials must be positive"),
    case("worker-index-negative", "worker", *STUDY, "--worker-index", "-1", says="--worker-index: worker_index"),
    case("worker-unknown-study", "worker", "--study", "nosuch", "--storage", "{db}"),
    case("worker-missing-database", "worker", "--study", "real", "--storage", NO_DB),
    case("worker-damaged-data", "worker", *STUDY, "--data-dir", "{damaged}"),
    case("worker-storage-wrong-scheme", "worker", "--study", "real", "--storage", "redis://localhost/0"),
    case("worker-postgres-wrong-password", "worker", "--study", "x", "--storage", "{pg_bad}"),
    # best
    case("best-unknown-study", "best", "--study", "nosuch", "--storage", "{db}"),
    *(
        case(f"{command}-{study}-study", command, "--study", study, "--storage", "{db}", says="not")
        for command in ("best", "export", "worker")
        for study in ("theirs", "theirs-multi")
    ),
    case("best-missing-database", "best", "--study", "real", "--storage", NO_DB),
    case("best-unwritable-export", "best", *STUDY, "--export", "{file}/model.pt"),
    case("best-postgres-wrong-password", "best", "--study", "x", "--storage", "{pg_bad}"),
    # export
    case("export-unknown-study", "export", "--study", "nosuch", "--storage", "{db}"),
    case("export-unknown-format", "export", *STUDY, "--format", "gif"),
    case("export-unwritable-out", "export", *STUDY, "--out", "{file}/out"),
    case("export-missing-database", "export", "--study", "real", "--storage", NO_DB),
    case("export-postgres-wrong-password", "export", "--study", "x", "--storage", "{pg_bad}"),
    # report
    case("report-init-epochs-zero", "report", "--storage", "{db}", "--init-epochs", "0", says="--init-epochs: epochs"),
    case("report-unwritable-out", "report", "--storage", "{db}", "--out", "{file}/out"),
    case("report-missing-init-json", "report", "--storage", "{db}", "--init-json", "{folder}/none.json"),
    case("report-storage-wrong-scheme", "report", "--storage", "ftp://host/studies"),
    case("report-postgres-wrong-password", "report", "--storage", "{pg_bad}"),
    # dashboard
    case("dashboard-port-out-of-range", "dashboard", "--storage", "{db}", "--port", "70000"),
    case("dashboard-missing-database", "dashboard", "--storage", NO_DB),
    case("dashboard-postgres-wrong-password", "dashboard", "--storage", "{pg_bad}"),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def database_state(folder: Path) -> tuple[str, str | None]:
    """The database file's hash, and its write-ahead log's if one was left behind."""
    wal = folder / "studies.db-wal"
    return sha256(folder / "studies.db"), sha256(wal) if wal.exists() and wal.stat().st_size else None


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, mnist_root):
    """One real database with a finished search and a finished grid, then every case against a copy of it."""
    root = tmp_path_factory.mktemp("bad-input")
    env = command_env(mnist_root)
    url = f"sqlite:///{root / 'studies.db'}"
    quick = ("--epochs", "1", "--data-limit", "200", "--device", "cpu")
    made = archsearch("search", "--study", "real", "--storage", url, "--trials", "2", "--budget", "20000",
                      "--max-depth", "2", *quick, env=env, cwd=root)  # fmt: skip
    assert made.returncode == 0, made.stderr
    made = archsearch("grid", "--study", "realgrid", "--storage", url, "--budgets", "5000", "--depths", "1",
                      "--seeds", "1", *quick, env=env, cwd=root)  # fmt: skip
    assert made.returncode == 0, made.stderr
    # Studies that another Optuna program made in the same database: one plain, one multi-objective.
    plain = optuna.create_study(study_name="theirs", storage=url)
    plain.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    multi = optuna.create_study(study_name="theirs-multi", storage=url, directions=["minimize", "maximize"])
    multi.optimize(lambda trial: (trial.suggest_float("x", 0, 1), 1.0), n_trials=2)
    del plain, multi
    gc.collect()  # their connections closed, so no -wal file is left
    assert not (root / "studies.db-wal").exists()
    original = database_state(root)

    damaged = root / "damaged" / "MNIST" / "raw"
    damaged.mkdir(parents=True)
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        (damaged / f"{name}-idx{1 if 'labels' in name else 3}-ubyte.gz").write_bytes(b"this is not gzip data")
    (root / "plain.txt").write_text("a file, not a folder\n")
    (root / "malformed.toml").write_text("budget = [\n")
    (root / "unknown_key.toml").write_text("bugdet = 50000\n")
    (root / "wrong_type.toml").write_text('budget = "large"\n')
    values = {
        "damaged": str(root / "damaged"),
        "file": str(root / "plain.txt"),
        "malformed": str(root / "malformed.toml"),
        "unknown_key": str(root / "unknown_key.toml"),
        "wrong_type": str(root / "wrong_type.toml"),
        "pg_bad": wrong_password(PG) if PG else "",
    }

    def run(case: Case):
        folder = root / "cases" / case.id
        folder.mkdir(parents=True)
        shutil.copyfile(root / "studies.db", folder / "studies.db")
        fill = {**values, "folder": str(folder), "db": f"sqlite:///{folder / 'studies.db'}"}
        args = [arg.format(**fill) for arg in case.args]
        before = database_state(folder)
        result = archsearch(*args, env=env, cwd=folder, timeout=120)
        return result, before, database_state(folder)

    runnable = [c for c in CASES if PG or not c.postgres]
    results = {c.id: run(c) for c in runnable}
    assert database_state(root) == original
    return original, results


def wrong_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(password="not-the-password").render_as_string(hide_password=False)


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.postgres] if c.postgres else []) for c in CASES]
)
def test_bad_input_is_one_line_exit_2_and_harmless(case: Case, request):
    if case.postgres and not PG:
        pytest.skip("ARCHSEARCH_TEST_PG is unset: start a server with `. .ci/postgres.sh` (.ci/run does)")
    original, results = request.getfixturevalue("outcomes")
    result, before, after = results[case.id]
    assert before == original
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and ONE_LINE_ERROR.match(lines[0]), result.stderr
    assert after == before, "the bad command changed the database"
    assert case.says in lines[0]
    assert "not-the-password" not in lines[0]


def test_every_command_has_bad_input_cases():
    from search.cli import COMMANDS

    covered = {c.args[0] for c in CASES}
    assert set(COMMANDS) <= covered, f"add cases for: {', '.join(sorted(set(COMMANDS) - covered))}"
