"""The layers stay layers: pure math < engine (torch, no Optuna) < study (Optuna, no torch at import)
< results < API < CLI. Each module may import only from its own layer and the ones below it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, archsearch, command_env

# Lower layers first; a module may import its own layer and any earlier one, never a later one.
LAYERS = [
    ("models", ("models",)),
    ("shared", ("search.errors", "search.checks", "search.files")),
    ("engine", ("search.engine",)),
    ("study", ("search.study",)),
    ("results", ("search.results",)),
    ("api", ("search.api",)),
    ("cli", ("search.cli", "search.__main__")),
]
PURE = ("models.budget", "models.profiles", "models.catalog", "search.errors", "search.checks", "search.engine.config")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_under(*packages: str) -> list[str]:
    found = []
    for package in packages:
        folder = REPO.joinpath(*package.split("."))
        found += [module_name(path) for path in sorted(folder.rglob("*.py"))] if folder.is_dir() else [package]
    return found


def layer_of(module: str) -> int:
    if module == "search":  # the root package: a docstring, below everything
        return 1
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def imported_modules(module: str) -> set[str]:
    """Every module an `import` or `from ... import` in the file names, at any depth (lazy imports too)."""
    path = REPO.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


ALL = modules_under("models", "search")


@pytest.mark.parametrize("module", ALL)
def test_no_module_imports_a_layer_above_its_own(module):
    own = layer_of(module)
    above = sorted(
        name
        for name in imported_modules(module)
        if name.split(".")[0] in ("models", "search") and _is_module(name) and layer_of(name) > own
    )
    assert not above, f"{module} ({LAYERS[own][0]}) imports {above} from a layer above it"


def _is_module(name: str) -> bool:
    """`from search.study import grid` names search.study.grid; `from search.checks import shown` names a function."""
    path = REPO.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


# What the CLI may import from the search package: the API it is a thin layer over, itself, and the errors it
# turns into exit statuses. The study, results and engine layers it reaches only through search.api.
CLI_MAY_IMPORT = ("search.api", "search.cli", "search.errors")


@pytest.mark.parametrize("module", modules_under("search.cli", "search.__main__"))
def test_the_cli_imports_only_the_api_from_search(module):
    reached = sorted(
        name
        for name in imported_modules(module)
        if name.split(".")[0] == "search"
        and name != "search"
        and not any(name == allowed or name.startswith(allowed + ".") for allowed in CLI_MAY_IMPORT)
    )
    assert not reached, f"{module} imports {reached}: reach them through search.api"


@pytest.mark.parametrize("module", ALL)
def test_no_module_imports_relatively(module):
    """The layer checks read absolute imports only; a relative one would slip past them (ruff's TID252 too)."""
    path = REPO.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    relative = [node.lineno for node in ast.walk(ast.parse(path.read_text())) if getattr(node, "level", 0)]
    assert not relative, f"{module} imports relatively at line(s) {relative}"


@pytest.mark.parametrize("module", modules_under("search.engine", *PURE))
def test_the_engine_and_pure_modules_never_import_optuna(module):
    assert not [name for name in imported_modules(module) if name.split(".")[0] in ("optuna", "optuna_dashboard")]


def loaded_by(code: str) -> list[str]:
    """The heavy libraries in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in ('torch', 'optuna') if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_study_results_api_and_cli_loads_no_torch():
    modules = modules_under("search.study", "search.results", "search.api", "search.cli")
    assert "torch" not in loaded_by("\n".join(f"import {name}" for name in modules))


def test_importing_the_engine_loads_no_optuna():
    assert "optuna" not in loaded_by("\n".join(f"import {name}" for name in modules_under("search.engine")))


def test_pure_modules_load_neither():
    assert loaded_by("\n".join(f"import {name}" for name in PURE)) == []


@pytest.fixture(scope="module")
def small_storage(tmp_path_factory, mnist_root) -> str:
    folder = tmp_path_factory.mktemp("layers")
    url = f"sqlite:///{folder / 'studies.db'}"
    env = command_env(mnist_root)
    quick = ("--epochs", "1", "--data-limit", "200", "--device", "cpu")
    made = archsearch("search", "--study", "s", "--storage", url, "--trials", "2", "--budget", "20000",
                      "--max-depth", "2", *quick, env=env, cwd=folder)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return url


@pytest.mark.parametrize(
    "argv",
    [
        ["budget", "50000"],
        ["best", "--study", "s", "--storage", "{url}", "--json"],
        ["export", "--study", "s", "--storage", "{url}", "--out", "{tmp}/exported", "--format", "html"],
        ["report", "--storage", "{url}", "--out", "{tmp}/report"],
    ],
    ids=lambda argv: argv[0],
)
def test_reading_commands_run_without_torch(argv, small_storage, tmp_path):
    filled = [part.format(url=small_storage, tmp=tmp_path) for part in argv]
    code = (
        "import contextlib, io, os\nfrom search.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    status = main({filled!r})\n"
        "assert status == 0, status"
    )
    env_root = os.environ.get("ARCHSEARCH_DATA")
    assert env_root is None or Path(env_root).is_dir()
    assert "torch" not in loaded_by(code)


# A module a reader can hold: past this many lines, split it by concern (as search/engine/packed/ is).
MAX_MODULE_LINES = 600


@pytest.mark.parametrize("folder", ["search", "models", "bench"])
def test_no_module_is_longer_than_a_reader_can_hold(folder):
    files = sorted(REPO.joinpath(folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    lines = {path.relative_to(REPO).as_posix(): len(path.read_text().splitlines()) for path in files}
    too_long = {path: count for path, count in lines.items() if count > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {too_long}"
