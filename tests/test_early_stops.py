"""Ctrl-C and SIGTERM at generated early moments of a command's start: one line (a spawned worker's: none)
and exit status 130 or 143, never a traceback.

A moment is the start of an import: a start-up hook (sitecustomize.py) sends the signal to its own process
when the command begins to import a chosen module, an event rather than a clock. The modules are every one
outside the standard library that the command imports once Python has handed over to `search.cli` (recorded
by the same hook in a first run), so a new import is covered as it appears; the heavy ones (Optuna,
SQLAlchemy, torch) are among them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.study.record import write_study
from tests.conftest import ENTRY_POINT
from tests.studies import add_search_study

HOOK = """
import os, signal, sys

class _StopAtImport:
    started = False  # the console script (or `python -m search`) has begun to import search.cli

    def find_spec(self, name, path, target=None):
        if name == "search.cli":
            type(self).started = True
            return None
        if not self.started or name.partition(".")[0] in sys.stdlib_module_names:
            return None  # Python's own start, and the standard library's two modules search.cli needs first
        record = os.environ.get("EARLY_RECORD")
        if record:
            with open(record, "a") as out:
                out.write(name + "\\n")
        elif name == os.environ.get("EARLY_MODULE"):
            sys.meta_path.remove(self)
            with open(os.environ["EARLY_SENT"], "w") as sent:
                sent.write(name)
            os.kill(os.getpid(), getattr(signal, os.environ["EARLY_SIGNAL"]))
        return None

sys.meta_path.insert(0, _StopAtImport())
"""

QUICK = ("--trials", "1", "--budget", "20000", "--max-depth", "2", "--epochs", "1", "--data-limit", "200")
STATUS = {"SIGINT": 130, "SIGTERM": 143}


@pytest.fixture(scope="module")
def world(tmp_path_factory, mnist_root) -> dict:
    folder = tmp_path_factory.mktemp("early")
    (folder / "hook").mkdir()
    (folder / "hook" / "sitecustomize.py").write_text(HOOK)
    url = f"sqlite:///{folder / 'studies.db'}"
    study = add_search_study(url, "s")
    # The worker's recording run trains the study's one trial left: 1 epoch on 200 images, not all of MNIST.
    write_study(study, config={**study.user_attrs["config"], "epochs": 1, "data_limit": 200})
    env = {**os.environ, "PYTHONPATH": str(folder / "hook"), "ARCHSEARCH_DATA": str(mnist_root), "OMP_NUM_THREADS": "1"}
    world = {"folder": folder, "url": url, "env": env, "modules": {}}
    for kind, command in commands(world, folder / "recorded.db").items():
        record = folder / f"{kind}.imports"
        done = subprocess.run(command, env={**env, **child_env(kind), "EARLY_RECORD": str(record)},
                              cwd=folder, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode in (0, 2), done.stderr  # the worker may find nothing left to run
        world["modules"][kind] = sorted(set(record.read_text().split()))
    return world


def commands(world: dict, fresh: Path | None = None) -> dict[str, list[str]]:
    """Each command; the search makes a new study in `fresh` (a new database), so every run imports as much."""
    new = f"sqlite:///{fresh}" if fresh else world["url"]
    return {
        "budget": [str(ENTRY_POINT), "budget", "5000"],
        "search": [str(ENTRY_POINT), "search", "--study", "n", "--storage", new, "--device", "cpu", *QUICK],
        "worker": [sys.executable, "-m", "search", "worker", "--study=s", "--storage", world["url"], "--device", "cpu",
                   "--trials", "7", "--quiet"],
    }  # fmt: skip


def child_env(kind: str) -> dict[str, str]:
    """A spawned worker's environment: its parent is this test process."""
    return {"ARCHSEARCH_PARENT_PID": str(os.getpid())} if kind == "worker" else {}


def test_the_recorded_moments_include_the_heavy_imports(world):
    assert {"optuna", "sqlalchemy"} <= set(world["modules"]["search"]), world["modules"]["search"]
    assert "torch" in world["modules"]["worker"] and "search.api" in world["modules"]["budget"]


@pytest.mark.parametrize("kind", ["budget", "search", "worker"])
def test_a_stop_while_a_command_starts_is_one_line_or_none(kind, world, tmp_path):
    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
    @given(module=st.sampled_from(world["modules"][kind]), signame=st.sampled_from(sorted(STATUS)))
    def check(module, signame):
        sent = tmp_path / "sent"
        sent.unlink(missing_ok=True)
        fresh = tmp_path / "fresh.db"
        fresh.unlink(missing_ok=True)
        env = {**world["env"], **child_env(kind), "EARLY_MODULE": module, "EARLY_SIGNAL": signame,
               "EARLY_SENT": str(sent)}  # fmt: skip
        command = commands(world, fresh)[kind]
        done = subprocess.run(command, env=env, cwd=world["folder"], capture_output=True, text=True, timeout=300)
        assert sent.exists(), f"{module} was not imported"
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
        assert done.returncode == STATUS[signame], (module, signame, done.returncode, done.stderr)
        lines = done.stderr.splitlines()
        if kind == "worker":
            assert lines == [], done.stderr  # its parent says how to resume
        else:
            assert len(lines) == 1 and lines[0].startswith("archsearch: "), done.stderr
            assert ("terminated" if signame == "SIGTERM" else "interrupted") in lines[0], done.stderr

    check()
