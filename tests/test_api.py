"""The Python API: the CLI's studies from any folder, typed results, one exception type whose message
is the line the CLI prints, and a kernel interrupt handled as Ctrl-C in a terminal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from models.budget import BudgetRow, budget_table
from search import api
from search.cli import main
from search.errors import printable, worded_for_the_cli
from search.results.tables import BestTrial, TrialRow
from tests.conftest import command_env, paced_epochs, stored_states
from tests.studies import add_search_study

PAUSE = 0.3  # seconds a paced trial sleeps after each epoch it reports
QUICK = {"epochs": 1, "max_depth": 2, "data_limit": 2000, "device": "cpu", "quiet": True}

FROM_ANOTHER_FOLDER = """
import json, sys
import pandas
import plotly.graph_objects as go
from search import api

url = sys.argv[1]
run = api.search("profiles-50k", study="nb", storage=url, trials=3, epochs=1, max_depth=2, data_limit=300,
                 device="cpu", quiet=True)
rows = api.trials("nb", storage=url)
figures = api.figures("nb", storage=url)
best = api.best("nb", storage=url)
print(json.dumps({
    "finished": run.finished,
    "run_best": run.best.study_trial,
    "best": best.study_trial,
    "best_type": type(best).__name__,
    "best_params": best.params,
    "best_val_loss": best.val_loss,
    "frame_rows": len(pandas.DataFrame(rows)),
    "complete_val_losses": [r.val_loss for r in rows if r.state == "complete"],
    "figures": {name: isinstance(figure, go.Figure) for name, figure in figures.items()},
    "stored": api.trials.__module__,
}))
"""


def test_a_search_from_a_folder_outside_the_repository_by_preset_name(tmp_path, mnist_root, monkeypatch, capsys):
    # Run in this process, from the other folder (a fresh interpreter importing the package from outside the
    # repository is test_packaging's notebook, whose kernel starts in a temporary folder).
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    monkeypatch.setattr(sys, "argv", ["-c", f"sqlite:///{tmp_path / 'nb.db'}"])
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    exec(FROM_ANOTHER_FOLDER, {"__name__": "__main__"})
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["finished"] == 3 and result["frame_rows"] == 3
    assert result["best_type"] == "BestTrial" and result["run_best"] == result["best"]
    assert result["best_val_loss"] == min(result["complete_val_losses"])
    assert abs(result["best_params"] - 50_000) <= 0.02 * 50_000  # the preset's budget and tolerance
    assert result["figures"]["loss-vs-params"] and all(result["figures"].values())
    written = {path.name for path in tmp_path.iterdir()} - {"nb.db-wal", "nb.db-shm"}  # open here, as SQLite keeps
    assert sorted(written) == ["artifacts", "nb.db"]  # nothing else written here


def test_the_preset_settings_are_the_files_settings(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    url = f"sqlite:///{tmp_path / 'p.db'}"
    api.search("profiles-50k", study="p", storage=url, trials=1, **QUICK)
    stored = optuna.load_study(study_name="p", storage=url).user_attrs["config"]
    assert stored["budget"] == 50_000 and stored["space"]["max_depth"] == 2 and stored["epochs"] == 1
    assert stored["sampler"] == "tpe" and stored["trials"] == 1


def test_the_budget_table_is_the_budget_math():
    table = api.budget_table(50_000)
    assert table.rows == budget_table(50_000) and all(isinstance(row, BudgetRow) for row in table.rows)
    assert (table.min_depth, table.max_depth) == (1, (50_000 - 803) // 2)
    assert [row.depth for row in api.budget_table(100_000, [2, 4]).rows] == [2, 4]


def test_trials_and_best_read_a_stored_study_as_records(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = add_search_study(url, "s")
    rows = api.trials("s", storage=url)
    assert [row.number for row in rows] == [t.number for t in study.trials]
    assert all(isinstance(row, TrialRow) for row in rows)
    complete = [row for row in rows if row.state == "complete"]
    best = api.best("s", storage=url)
    assert isinstance(best, BestTrial) and best.objective == min(row.value for row in complete)
    assert best.widths == list(next(row.widths for row in complete if row.number == best.study_trial))
    assert best.study_trials == len(study.trials)


def test_the_cli_prints_the_api_record(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_search_study(url, "s")
    assert main(["best", "--study", "s", "--storage", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == api.best("s", storage=url).to_json()


def _missing_folder_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}"


# (the CLI's argv, the same request through the API); {url}: a storage with one search study "s".
SAME_MESSAGE = {
    "unknown preset": (["search", "--config", "no-such-preset", "--storage", "{url}"],
                       lambda url, tmp: api.search("no-such-preset", storage=url)),
    "missing study": (["best", "--study", "nope", "--storage", "{url}"],
                      lambda url, tmp: api.best("nope", storage=url)),
    "export of a missing study": (["export", "--study", "nope", "--storage", "{url}", "--out", "{tmp}/e"],
                                  lambda url, tmp: api.export("nope", storage=url, out=f"{tmp}/e")),
    "trials of a missing study": (["best", "--study", "nope", "--storage", "{url}"],
                                  lambda url, tmp: api.trials("nope", storage=url)),
    "budget too small for the depth": (["search", "--budget", "810", "--max-depth", "8", "--storage", "{url}"],
                                       lambda url, tmp: api.search(budget=810, max_depth=8, storage=url)),
    "settings that differ from the stored study": (
        ["search", "--study", "s", "--budget", "30000", "--storage", "{url}"],
        lambda url, tmp: api.search(study="s", budget=30_000, storage=url)),
    "a storage that cannot be opened": (["best", "--study", "s", "--storage", "{missing}"],
                                        lambda url, tmp: api.best("s", storage=_missing_folder_url(tmp))),
    "no study to report on": (["report", "--storage", "{missing}", "--out", "{tmp}/r"],
                              lambda url, tmp: api.report(storage=_missing_folder_url(tmp), out=f"{tmp}/r")),
    "normal init without its std": (["baseline", "--init", "normal"], lambda url, tmp: api.baseline(init="normal")),
}  # fmt: skip


def _flags_outside_commands(message: str) -> list[str]:
    """The `--flags` a message names, leaving out those of a quoted command to run (`archsearch ... --x`)."""
    return re.findall(r"--[a-z][a-z-]*", re.sub(r"`[^`]*`", "", message))


@pytest.mark.parametrize("case", SAME_MESSAGE.values(), ids=SAME_MESSAGE.keys())
def test_bad_input_raises_usage_error_with_the_line_the_cli_prints(case, tmp_path, capsys):
    """The same check and the same line, worded for its reader: the CLI's names flags, the API's arguments."""
    argv, call = case
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_search_study(url, "s")
    before = (tmp_path / "s.db").read_bytes()
    filled = [part.format(url=url, tmp=tmp_path, missing=_missing_folder_url(tmp_path)) for part in argv]
    assert main(filled) == 2
    printed = capsys.readouterr().err
    with pytest.raises(api.UsageError) as raised, worded_for_the_cli():
        call(url, tmp_path)
    assert printed == f"archsearch: error: {printable(str(raised.value))}\n"
    with pytest.raises(api.UsageError) as from_python:
        call(url, tmp_path)
    assert not _flags_outside_commands(str(from_python.value)), from_python.value
    assert (tmp_path / "s.db").read_bytes() == before
    assert not (tmp_path / "e").exists() and not (tmp_path / "r").exists()


# (the CLI's argv, the same request through the API, what the CLI's line says, what the API's message says)
WORDED = {
    "a depth the budget cannot hold": (
        ["search", "--budget", "810", "--max-depth", "8", "--storage", "{url}"],
        lambda url: api.search(budget=810, max_depth=8, storage=url),
        "lower --max-depth to at most 3 or raise --budget", "lower max_depth= to at most 3 or raise budget="),
    "a study stored with other settings": (
        ["search", "--study", "s", "--budget", "30000", "--storage", "{url}"],
        lambda url: api.search(study="s", budget=30_000, storage=url),
        "use another --study to start anew", "use another study= to start anew"),
    "a normal init without its spread": (
        ["baseline", "--init", "normal"], lambda url: api.baseline(init="normal"),
        "--init normal needs --init-value,", "init='normal' needs init_value=,"),
    "a missing database": (
        ["best", "--study", "s", "--storage", "{url}x"], lambda url: api.best("s", storage=f"{url}x"),
        "; check --storage", "; check storage="),
    "a dashboard beyond this machine": (
        ["dashboard", "--host", "192.0.2.1", "--storage", "{url}"],
        lambda url: api.dashboard(url, host="192.0.2.1"),
        "--host '192.0.2.1' goes beyond this machine", "host='192.0.2.1' goes beyond this machine"),
}  # fmt: skip


@pytest.mark.parametrize("case", WORDED.values(), ids=WORDED.keys())
def test_api_messages_name_arguments_where_the_cli_names_flags(case, tmp_path, capsys):
    argv, call, cli_words, api_words = case
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_search_study(url, "s")
    assert main([part.format(url=url) for part in argv]) == 2
    printed = capsys.readouterr().err
    with pytest.raises(api.UsageError) as raised:
        call(url)
    assert cli_words in printed and api_words not in printed
    assert api_words in str(raised.value) and cli_words not in str(raised.value)


BAD_KEYWORDS = {
    "budget as text": lambda url: api.search(budget="50000", storage=url),
    "no trials": lambda url: api.search(trials=0, storage=url),
    "an unknown setting": lambda url: api.search(budgett=50_000, storage=url),
    "a grid setting in a search": lambda url: api.search(depths=[1, 2], storage=url),
    "no depths": lambda url: api.grid(depths=[], storage=url),
    "a depth listed twice": lambda url: api.grid(depths=[2, 2], storage=url),
    "negative workers": lambda url: api.search(workers=-1, storage=url),
    "an empty pack": lambda url: api.grid(pack=0, storage=url),
    "a pack size as text": lambda url: api.search(pack="8", storage=url),
    "a negative timeout": lambda url: api.search(timeout=-5, storage=url),
    "an unknown device": lambda url: api.search(device="tpu", storage=url),
    "an unknown profile": lambda url: api.search(profiles=["wavy"], storage=url),
    "a budget below the smallest net": lambda url: api.budget_table(100),
    "depth zero in the table": lambda url: api.budget_table(50_000, [0]),
    "an unknown format": lambda url: api.export("s", storage=url, formats=["gif"]),
    "a NaN learning rate": lambda url: api.baseline(lr=float("nan")),
}


@pytest.mark.parametrize("call", BAD_KEYWORDS.values(), ids=BAD_KEYWORDS.keys())
def test_a_bad_keyword_is_one_usage_error_and_writes_nothing(call, tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with pytest.raises(api.UsageError) as raised:
        call(url)
    message = str(raised.value)
    assert message and "\n" not in message
    assert not (tmp_path / "new.db").exists()


INTERRUPTED = """
import sys
from search import api

try:
    api.search(study="k", storage=sys.argv[1], budget=20000, trials=int(sys.argv[2]), epochs=3, max_depth=2,
               data_limit=300, pruner="none", device="cpu", quiet=True)
    print("FINISHED")
except api.Interrupted as stop:
    print("INTERRUPTED", stop)
"""


def test_a_kernel_interrupt_fails_the_running_trial_and_the_same_call_resumes_to_exactly_n(
    tmp_path, mnist_root, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    # Paced (conftest.paced_epochs): each epoch of the kernel's trials lasts PAUSE seconds, asleep, so the
    # interrupt lands mid-trial; the kernel is a process of its own, as SIGINT must reach it.
    env = {**os.environ, **command_env(mnist_root), **paced_epochs(tmp_path, PAUSE)}
    worker = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, url, "4"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600  # a hang guard
    while True:  # a kernel interrupt is SIGINT to the kernel's process
        states = _states(url)
        if states.count(TrialState.COMPLETE) >= 1 and TrialState.RUNNING in states:
            break
        assert time.monotonic() < deadline and worker.poll() is None, states
        time.sleep(0.1)
    worker.send_signal(signal.SIGINT)
    out, _ = worker.communicate(timeout=300)
    assert out.startswith("INTERRUPTED interrupted; the running trials were marked failed. Resume with:"), out
    states = _states(url)
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 1
    # The same call again, in this process (unpaced): it resumes the study to exactly 4 finished trials.
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    monkeypatch.setattr(sys, "argv", ["-c", url, "4"])
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    exec(INTERRUPTED, {"__name__": "__main__"})
    assert capsys.readouterr().out.strip() == "FINISHED"
    assert _states(url).count(TrialState.COMPLETE) == 4


def _states(url: str) -> list[TrialState]:
    return stored_states(url, "k")


def test_every_setting_of_the_cli_is_a_keyword_of_the_api():
    import inspect

    from search.api.options import DATA_OPTIONS, GRID_OPTIONS, SEARCH_OPTIONS

    for function, options in ((api.search, SEARCH_OPTIONS), (api.grid, GRID_OPTIONS)):
        keywords = inspect.signature(function).parameters
        assert {option.name for option in (*options, *DATA_OPTIONS)} <= set(keywords)


def test_the_api_says_what_it_runs_unless_quiet(tmp_path, mnist_root, monkeypatch, capsys):
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    url = f"sqlite:///{tmp_path / 'q.db'}"
    run = api.search(study="q", storage=url, budget=20_000, trials=2, **{**QUICK, "quiet": False})
    out = capsys.readouterr().out
    assert out.startswith("study 'q' in sqlite:///") and out.count("\n#") == 2
    assert run.best_summary.startswith(f"#{run.best.study_trial} ")


def test_a_progress_bar_shows_in_a_notebook_kernel_and_not_in_a_pipe(monkeypatch):
    import types

    from search.api.progress import progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress(3, "pipe").disable
    shell = type("ZMQInteractiveShell", (), {})  # the class name is what marks a Jupyter kernel
    kernel = types.SimpleNamespace(get_ipython=lambda: shell())
    monkeypatch.setitem(sys.modules, "IPython", kernel)
    assert not progress(3, "notebook").disable
    assert progress(3, "notebook", quiet=True).disable


def test_this_process_gets_its_cores_back_once_its_workers_are_done(tmp_path):
    """Spawned workers share the cores out (one thread each on 2 cores); what runs after them in this
    process, a frontier's retraining, has them all again."""
    import torch

    from search.api import running

    before = torch.get_num_threads()
    url = f"sqlite:///{tmp_path / 'none.db'}"
    with running.cores_shared(2):
        workers = running.spawn_workers(2, ["--study", "none", "--storage", url], url)
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 2)
    running.stop_workers(workers, None)
    assert torch.get_num_threads() == before
