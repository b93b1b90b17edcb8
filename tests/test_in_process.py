"""The tests' `archsearch(...)` runs a command in the test process: it must answer as the console script does
and leave the process as it found it, or a later test would see another command's state."""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings

import optuna
import torch

from tests.conftest import archsearch


def process_state() -> dict:
    return {
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "argv": list(sys.argv),
        "streams": (sys.stdout, sys.stderr, sys.stdin),
        "handlers": [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)],
        "unraisablehook": sys.unraisablehook,
        "threads": torch.get_num_threads(),
        "optuna_verbosity": optuna.logging.get_verbosity(),
        "warning_filters": list(warnings.filters),
    }


def test_a_command_in_process_leaves_the_process_as_it_found_it(tmp_path):
    before = process_state()
    threads = "3" if before["threads"] != 3 else "2"
    result = archsearch("budget", "50000", "--json", env={"OMP_NUM_THREADS": threads}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) and result.stderr == ""
    assert process_state() == before


def test_bad_input_in_process_answers_as_the_script_does(tmp_path):
    """Exit status 2, one line on stderr, nothing on stdout and nothing written, in this process as in a
    process of its own."""
    args = ("search", "--study", "x", "--storage", f"journal:{tmp_path}", "--trials", "1")
    before = sorted(tmp_path.iterdir())
    here, alone = archsearch(*args, cwd=tmp_path), archsearch(*args, cwd=tmp_path, process=True)
    assert here.returncode == alone.returncode == 2, (here.stderr, alone.stderr)
    assert here.stderr == alone.stderr and len(here.stderr.splitlines()) == 1 and "is a folder" in here.stderr
    assert here.stdout == alone.stdout == ""
    assert sorted(tmp_path.iterdir()) == before
