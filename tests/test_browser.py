"""The dashboard and exported plots in a real headless Chromium, plus the dashboard's live API."""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import optuna
import pytest

from search.study.record import write_trial
from tests.conftest import ENTRY_POINT, archsearch, free_port
from tests.studies import SEARCH_TRIALS, add_grid_study, add_search_study

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
OWN_FIGURES = ("loss-vs-params", "loss-by-profile", "best-shapes", "loss-vs-weight-decay")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if path is None and os.environ.get("ARCHSEARCH_REQUIRE_BROWSER"):
        pytest.fail("ARCHSEARCH_REQUIRE_BROWSER is set (.ci/run sets it) but no chromium binary is on PATH")
    if path is None:
        pytest.skip("no chromium binary on PATH; install Debian's chromium (apt-get install chromium) to run this test")
    return path


def dump_dom(chromium: str, url: str, profile) -> str:
    """The page's DOM after its scripts ran, as headless Chromium sees it."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",
    ]
    done = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=300) as response:
        return json.load(response)


@pytest.fixture()
def dashboard(tmp_path):
    """`archsearch dashboard` on a storage with a grid and a search study; yields (storage, base URL)."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    add_grid_study(storage)
    add_search_study(storage)
    port = free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "w") as sink:  # a file, not a pipe: the server logs every request and must never block on it
        server = subprocess.Popen(
            [str(ENTRY_POINT), "dashboard", "--storage", storage, "--port", str(port), "--refresh", "1"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                get_json(f"{base}/api/studies")
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 120 s"
                time.sleep(0.5)
        yield storage, base
    finally:
        server.terminate()
        server.wait(timeout=300)


def study_id(base: str, name: str) -> int:
    summaries = get_json(f"{base}/api/studies")["study_summaries"]
    return next(s["study_id"] for s in summaries if s["study_name"] == name)


@pytest.mark.browser
def test_dashboard_shows_the_study_its_trials_and_our_figures(dashboard, chromium, tmp_path):
    _, base = dashboard
    number = study_id(base, "profiles")
    trials_page = dump_dom(chromium, f"{base}/dashboard/studies/{number}/trials", tmp_path / "profile")
    assert "profiles" in trials_page
    assert all(f"Trial {n}" in trials_page for n in range(len(SEARCH_TRIALS) + 1))
    study_page = dump_dom(chromium, f"{base}/dashboard/studies/{number}", tmp_path / "profile")
    for name in OWN_FIGURES:
        figure = study_page.split(f'id="user-defined-plot:archsearch-{name}"', 1)
        assert len(figure) == 2 and 'class="main-svg"' in figure[1][:3000], name


@pytest.mark.browser
def test_exported_plots_render_and_png_is_written(chromium, tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    add_grid_study(storage)
    out = tmp_path / "out"
    result = archsearch("export", "--study", "ksweep", "--storage", storage, "--out", str(out))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert (out / "k-sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = dump_dom(chromium, (out / "k-sweep.html").as_uri(), tmp_path / "profile")
    assert 'class="main-svg"' in page and "Final training loss of uniform MLPs" in page and "P = 50,000" in page


def test_dashboard_shows_trials_and_curves_added_while_it_runs(dashboard):
    storage, base = dashboard
    number = study_id(base, "profiles")
    study = optuna.load_study(study_name="profiles", storage=storage)
    trial = study.ask()
    trial.report(0.75, 1)
    running = {"number": trial.number, "state": "Running", "intermediate_values": [{"step": 1, "value": 0.75}]}
    wait_for(base, number, lambda detail: running.items() <= detail["trials"][-1].items(), "the running trial")
    write_trial(trial, profile="uniform", widths=(25,), params=19_885, weight_decay=0.0)
    study.tell(trial, 0.19)

    def refreshed(detail: dict) -> bool:
        # optuna-dashboard stores a figure as 2,045-character chunks, one write each, so a poll in the middle
        # of the figures' refresh reads a figure of old and new chunks; the next poll reads it whole.
        try:
            graphs = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
        except json.JSONDecodeError:
            return False
        points = [p for data in graphs["archsearch-loss-vs-params"]["data"] for p in data["customdata"]]
        return [trial.number, "25", 19_885] in points

    wait_for(base, number, refreshed, "our figures with the new trial")


def wait_for(base: str, number: int, condition, what: str, seconds: float = 600) -> None:
    """Poll the study's API until `condition` holds; the dashboard caches trials for a few seconds."""
    deadline = time.monotonic() + seconds
    while not condition(get_json(f"{base}/api/studies/{number}")):
        assert time.monotonic() < deadline, f"the dashboard did not show {what} within {seconds} s"
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "sqlite:///{tmp}/missing.db"], "no study database at"),
        (["--port", "70000"], "must be between 1 and 65535"),
        (["--port", "{busy}"], "pick another --port"),
        (["--host", "no-such-host.invalid"], "unknown --host"),
    ],
)
def test_bad_dashboard_input_is_one_line(tmp_path, args, message):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    add_grid_study(storage, budgets=(20_000,), depths=(1,), seeds=1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.format(tmp=tmp_path, busy=busy.getsockname()[1]) for a in args]
        if "--storage" not in args:
            args += ["--storage", storage]
        result = archsearch("dashboard", *args, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "missing.db").exists()
    assert optuna.load_study(study_name="ksweep", storage=storage).metric_names is None
