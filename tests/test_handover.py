"""What reaches the worker processes a run spawns, and the commands a run prints: generated settings.

Every setting a run hands its workers goes through the worker's own parser (the real `search.cli` parser)
and must come back as the same value; a study name starting with "-" stays a name in every command line
built or printed; a seed at the top of its range gives every trial a valid seed; 0 workers is refused.
"""

from __future__ import annotations

import json
import math
import shlex

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from search import api
from search.api.args import MAX_DURATION_SECONDS
from search.api.handover import worker_args, worker_command
from search.api.options import MAX_WORKERS, RunOptions
from search.api.running import resume_hint
from search.cli import build_parser, main
from search.engine.config import DEVICES, MAX_SEED, TrainConfig
from search.errors import UsageError
from search.study.config import check_study_name
from search.study.objective import trial_seed
from search.study.workers import AUTO_PACK, MAX_PACK
from tests.conftest import archsearch


def valid_name(name: str) -> bool:
    try:
        check_study_name(name)
    except UsageError:
        return False
    return True


NAMES = st.one_of(
    st.sampled_from(["-z", "-", "--study", "a b", "x;touch PWNED;#", "é", "=x", "-" * 200]),
    st.text(alphabet="-=az ;'\"é$", min_size=1, max_size=12),
).filter(valid_name)
TIMEOUTS = st.one_of(
    st.sampled_from([1_002_240.0, 1_728_000.0, float(MAX_DURATION_SECONDS), 1e-05, 5e-324, 0.1, 45.0]),
    st.floats(min_value=0, max_value=MAX_DURATION_SECONDS, exclude_min=True),
    st.integers(1, MAX_DURATION_SECONDS),
)
PATHS = st.one_of(st.sampled_from(["-d", "--data", "a=b", "/x y", "~"]), st.text(alphabet="-=/a. é", min_size=1))


@settings(max_examples=400, deadline=None)
@given(
    study=NAMES,
    device=st.sampled_from(DEVICES),
    pack=st.one_of(st.integers(1, MAX_PACK), st.just(AUTO_PACK)),
    timeout=st.none() | TIMEOUTS,
    data_dir=st.none() | PATHS,
    artifacts=st.none() | PATHS,
    index=st.integers(1, MAX_WORKERS - 1),
)
@example(study="-z", device="cpu", pack=1, timeout=1_002_240.0, data_dir=None, artifacts=None, index=1)
def test_every_setting_handed_to_a_worker_reads_back_as_given(study, device, pack, timeout, data_dir, artifacts, index):
    try:
        handed = worker_args(RunOptions(study, None, 2, pack, timeout, device, data_dir, artifacts))
    except UsageError as refused:  # only what the worker's parser would misread: "--" as a path
        assert "--" in (data_dir, artifacts), refused
        return
    command = worker_command(handed, index)
    assert command[1:4] == ["-m", "search", "worker"]
    args = build_parser().parse_args(command[3:])
    assert (args.study, args.device, args.pack, args.worker_index, args.quiet) == (study, device, pack, index, True)
    assert args.timeout == timeout  # the same float, to the last bit
    assert args.data_dir == (data_dir or None)
    assert args.artifacts == artifacts


@settings(max_examples=200, deadline=None)
@given(study=NAMES, storage=st.sampled_from(["sqlite:///x.db", "journal:-j.log", "sqlite:///a b.db"]))
@example(study="-z", storage="sqlite:///x.db")
def test_a_printed_resume_command_pastes_back_to_the_same_study(study, storage):
    hint = resume_hint(["worker", f"--study={study}"], storage)
    words = shlex.split(hint.removeprefix("Resume with: "))
    assert words[0] == "archsearch"
    args = build_parser().parse_args(words[1:])
    assert (args.study, args.storage) == (study, storage)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, MAX_SEED), number=st.integers(0, 10**7))
@example(seed=MAX_SEED, number=1)
def test_every_trial_of_any_study_seed_has_a_valid_seed(seed, number):
    derived = trial_seed(seed, number)
    TrainConfig(seed=derived)  # refuses a seed beyond MAX_SEED
    if seed + number <= MAX_SEED:
        assert derived == seed + number  # studies seeded as before keep their trials' seeds


def exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exited:  # the parser's refusal
        return exited.code


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workers=st.one_of(st.integers(-3, 0), st.integers(MAX_WORKERS + 1, 10**6), st.just(0)))
@example(workers=0)
def test_too_few_or_too_many_workers_are_refused_in_one_line(workers, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    assert exit_status(["search", "--study", "w", "--storage", url, "--workers", str(workers)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers" in err and "got" in err, err
    with pytest.raises(UsageError, match="workers must be"):
        api.search(study="w", storage=url, workers=workers, quiet=True)
    assert not (tmp_path / "w.db").exists()


def test_a_dash_study_at_the_top_seed_with_a_long_timeout_runs_its_workers(tmp_path, mnist_root):
    """The issue's examples together: `--study=-z`, `--seed 4294967295`, `--timeout 20d` (1.728e+06 s), 2 workers."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    done = archsearch(
        "search", "--study=-z", "--storage", url, "--seed", str(MAX_SEED), "--workers", "2", "--timeout", "20d",
        "--trials", "3", "--budget", "20000", "--max-depth", "2", "--epochs", "1", "--data-limit", "200",
        "--device", "cpu", env={"ARCHSEARCH_DATA": str(mnist_root)}, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr, done.stderr  # a worker that refused its command line says so here
    details = done.stdout.rsplit("Details: ", 1)[1].strip()
    assert shlex.split(details)[2:4] == ["--study=-z", f"--storage={url}"]
    shown = archsearch(*shlex.split(details)[1:], "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    best = json.loads(shown.stdout)
    assert best == api.best("-z", storage=url).to_json()
    states = [row.state for row in api.trials("-z", storage=url)]
    assert states.count(TrialState.COMPLETE.name.lower()) == 3
    assert math.isfinite(best["val_loss"])


def test_a_data_folder_named_like_a_flag_reaches_the_initialization_study(tmp_path, mnist_root, monkeypatch):
    """`report --init-study` runs `baseline` in a process of its own: its settings go as --flag=value too."""
    from tests.studies import add_search_study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "-d").mkdir()
    (tmp_path / "-d" / "MNIST").symlink_to(mnist_root / "MNIST")
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_search_study(url, "s")
    done = api.report(
        storage=url, out=str(tmp_path / "r"), init_study=True, init_epochs=1, seeds=[0], data_dir="-d", data_limit=200
    )
    assert done.init_answered and done.path.is_file()


GIVEN_PATHS = PATHS.filter(lambda path: path != "--")  # "--" as a path is refused on the first command line


def _frontier_resume_words(argv: list[str], storage: str) -> list[str]:
    """The printed resume command of `archsearch frontier ARGV`, as the frontier builds it from what the CLI
    hands the API, split as a shell splits it."""
    from search.api.frontier import DEFAULT_FRONTIER, frontier_resume
    from search.api.options import DATA_OPTIONS, FRONTIER_OPTIONS, given_settings
    from search.cli.common import given as cli_given

    args = build_parser().parse_args(["frontier", *argv])
    keywords = cli_given(args, (*FRONTIER_OPTIONS, *DATA_OPTIONS))
    settings = given_settings({o.name: keywords.get(o.name) for o in (*FRONTIER_OPTIONS, *DATA_OPTIONS)},
                              (*FRONTIER_OPTIONS, *DATA_OPTIONS))  # fmt: skip
    run = RunOptions(args.study or DEFAULT_FRONTIER, storage, args.workers, args.pack, args.timeout, args.device,
                     args.data_dir, args.artifacts)  # fmt: skip
    resume = frontier_resume(args.config, run, args.budgets, args.seeds, args.warm_start, settings)
    hint = resume_hint(resume, storage)
    return shlex.split(hint.removeprefix("Resume with: "))


@settings(max_examples=100, deadline=None)
@given(study=NAMES, warm=st.booleans(), config=st.none() | GIVEN_PATHS, data_dir=st.none() | GIVEN_PATHS)
@example(study="x;touch PWNED;#", warm=False, config="a b.toml", data_dir="-d")
def test_a_frontier_resume_command_asks_again_for_all_that_was_asked(study, warm, config, data_dir):
    storage = "sqlite:///a b.db"
    argv = [f"--study={study}", "--budgets", "266610,100000,636010", "--seeds", "2", "--trials", "16",
            "--epochs", "5", "--profiles", "uniform,free", "--tolerance", "0.05", "--max-depth", "3",
            "--sampler", "random", "--pruner", "none", "--seed", "7", "--warm-start-top", "2",
            "--dataset", "kmnist", "--data-limit", "300", "--workers", "2", "--pack", "auto",
            "--device", "cpu", "--timeout", "90m", "--artifacts", "my models"]  # fmt: skip
    argv += [f"--config={config}"] * (config is not None) + [f"--data-dir={data_dir}"] * (data_dir is not None)
    argv += ["--no-warm-start"] * (not warm)
    words = _frontier_resume_words(argv, storage)
    assert words[:2] == ["archsearch", "frontier"]
    asked = vars(build_parser().parse_args(["frontier", *argv]))
    again = vars(build_parser().parse_args(words[1:]))
    asked["storage"] = storage
    # Everything asked comes back but the timeout, which a resume leaves out as `search`'s does.
    assert again.pop("timeout") is None
    assert {k: v for k, v in again.items() if k != "func"} == {
        k: v for k, v in asked.items() if k not in ("timeout", "func")
    }
    assert again["profiles"] == ("uniform", "free") and again["warm_start"] is warm and again["trials"] == 16


def test_a_frontier_resume_command_repeats_no_setting_that_was_not_given():
    words = _frontier_resume_words(["--budgets", "10000:40000:3"], "sqlite:///x.db")
    assert words == ["archsearch", "frontier", "--study=frontier", "--budgets=10000,20000,40000", "--seeds=3",
                     "--storage=sqlite:///x.db"]  # fmt: skip
