"""The budget frontier: the best network found at every budget, retrained and tested honestly.

One single-objective search study per budget, named NAME@BUDGET, rather than one multi-objective
study with the budget sampled per trial: Optuna's pruners do not support multi-objective studies,
and pruning is most of a search's speed; each budget's study is also an ordinary search study, so
`best`, `export`, `worker`, packing and the dashboard work on it unchanged. The studies carry the
frontier's name, and each winner's retraining (on all training images, one run per seed) is kept in
its study, so the same call resumes: searches continue to their trials, retraining is redone only
for a budget whose winner changed.

Budgets are searched in increasing order, and each new budget's study is warm-started (search/study/warm.py)
from the nearest budget below it that completed a trial: a shape found at one budget is the same form at the
next, so each budget's best is where the next one begins, and what the lower budgets found reaches it through
that one (its warm trials came from them). One source, not all below, so that `warm_start_top` of the
study's trials are warm and the rest are left to the sampler. `warm_start=False` (`--no-warm-start`)
searches every budget cold, to compare. A budget's study that already ran trials keeps the start it had.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import optuna
import plotly.graph_objects as go

from models.budget import INPUTS, MAX_BUDGET, MIN_BUDGET
from search.api.calls import api_call, stops_handled
from search.api.handover import flag, resume_flags, setting_flags, worker_args
from search.api.options import DATA_OPTIONS, DEFAULT_PACK, FRONTIER_OPTIONS, FRONTIER_TRIALS, RunOptions, given_settings
from search.api.reading import check_retrain_seeds, retrain_trial
from search.api.running import PackSize, resume_hint, storage_url
from search.api.studies import run_search, search_config
from search.checks import check_ints, shown
from search.engine.config import DEFAULT_DEVICE
from search.errors import UsageError, worded
from search.results.frontier_plot import frontier_plot
from search.results.plots import Plot, Skipped
from search.results.tables import BestTrial, FrontierRow, completed, frontier_rows
from search.study.config import (
    MAX_STUDY_NAME_LENGTH,
    MAX_TOLERANCE,
    StudyConfig,
    check_study_name,
    load_toml,
    to_dict,
)
from search.study.lifecycle import (
    best_trial,
    check_new_run,
    frontier_studies,
    load_study,
    member_name,
    stored_settings,
    study_names,
)
from search.study.record import StudyRecord, write_study
from search.study.storage import open_storage, public_url
from search.study.warm import can_warm_start

DEFAULT_SEEDS = 3
DEFAULT_FRONTIER = "frontier"  # the name of a frontier given none


# A frontier's name leaves room for "@BUDGET" in each budget's study name, whatever the budget.
MAX_FRONTIER_NAME_LENGTH = MAX_STUDY_NAME_LENGTH - len(member_name("", MAX_BUDGET))


def check_frontier_name(name: str) -> None:
    """A name the user typed, refused in terms of what they typed: its own length, not that of NAME@BUDGET."""
    if isinstance(name, str) and len(name) > MAX_FRONTIER_NAME_LENGTH:
        raise UsageError(
            f"frontier name must be at most {MAX_FRONTIER_NAME_LENGTH} characters (each budget's study is "
            f"NAME@BUDGET), got {len(name):,} ({shown(name)}); choose a shorter one"
        )
    check_study_name(name)


@dataclass(frozen=True)
class Frontier:
    """A frontier after a call: one row per budget (winner, retrained test error) and its figure.

    `optuna_studies` maps each budget of a row to its study, an optuna.Study (named NAME@BUDGET), for
    Optuna's own tools."""

    name: str
    storage: str  # without its password
    rows: list[FrontierRow]
    stopped_at_timeout: bool
    plot: Plot | Skipped
    optuna_studies: dict[int, optuna.Study] = field(repr=False, compare=False)

    @property
    def figure(self) -> go.Figure | None:
        """The frontier's figure; None where it was skipped (`plot` says why)."""
        return self.plot.figure if isinstance(self.plot, Plot) else None


def check_frontier_budgets(budgets: tuple[int, ...]) -> None:
    """A frontier's budgets: at least one, none twice, each one a network can meet (the --budgets flag's
    check too, on a list's budgets or a range's two ends)."""
    check_ints("budgets", budgets, MIN_BUDGET, MAX_BUDGET, f"{MIN_BUDGET} parameters is the smallest MLP")


@api_call(check_study=check_frontier_name)
def frontier(
    config: str | None = None,
    *,
    study: str | None = None,
    budgets: Sequence[int] = (),
    seeds: int = DEFAULT_SEEDS,
    warm_start: bool = True,
    storage: str | None = None,
    workers: int = 1,
    pack: PackSize = DEFAULT_PACK,
    timeout: float | None = None,
    device: str = DEFAULT_DEVICE,
    data_dir: str | None = None,
    artifacts: str | None = None,
    quiet: bool = False,
    tolerance: float | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    profiles: Sequence[str] | None = None,
    max_depth: int | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
    seed: int | None = None,
    warm_start_top: int | None = None,
    dataset: str | None = None,
    data_limit: int | None = None,
) -> Frontier:
    """Search every budget of `budgets` (`archsearch frontier`) in increasing order, each warm-started from
    the budgets below it unless `warm_start` is False, then retrain each winner with `seeds` seeds on all
    training images. `study`: the frontier's name (default "frontier"), each budget's study is STUDY@BUDGET;
    `config` and the settings from `tolerance` on apply to every budget, as in `search`, except that `trials`
    defaults to 30 trials per budget (`FRONTIER_TRIALS`), a study file's or a stored study's count standing."""
    given = given_settings(locals(), (*FRONTIER_OPTIONS, *DATA_OPTIONS))
    run = RunOptions(study or DEFAULT_FRONTIER, storage, workers, pack, timeout, device, data_dir, artifacts)
    with stops_handled():
        return _frontier(config, run, budgets, seeds, warm_start, quiet, given)


def _frontier(
    config: str | None, run: RunOptions, budgets: Sequence[int], seeds: int, warm: bool, quiet: bool, given: dict
) -> Frontier:
    # The timeout counts from the call's start: the checks below take their share of it too.
    deadline = None if run.timeout is None else time.monotonic() + run.timeout
    name = run.study
    if not isinstance(warm, bool):
        raise UsageError(f"warm_start must be True or False, got {shown(warm)}")
    budgets = tuple(budgets)
    check_frontier_budgets(budgets)
    check_retrain_seeds(seeds)
    url = storage_url(run.storage)
    # Every budget's settings are checked against its stored study before the first one is written.
    settings = {}
    for budget in budgets:
        settings[budget], chosen = _budget_settings(config, name, url, given, budget)
        check_new_run(url, chosen.name, "search", {k: v for k, v in to_dict(chosen).items() if k != "name"})
        if run.workers > 1:
            worker_args(dataclasses.replace(run, study=chosen.name))
    resume = frontier_resume(config, run, budgets, seeds, warm, given)
    stopped = False
    searched: list[str] = []  # the studies of the budgets below the next one, nearest first
    for budget in sorted(budgets):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            if not stopped and not quiet:  # a budget's search that stopped at the timeout said how to resume
                stop = worded(cli="stopped at --timeout", api="stopped at the timeout")
                print(f"{stop} before budget {budget} was searched. {resume_hint(resume, url)}")
            stopped = True
            break
        member = member_name(name, budget)
        chosen_settings = {**settings[budget], **_warm_setting(url, member, searched, warm)}
        searched_run = run_search(
            config, dataclasses.replace(run, study=member, storage=url, timeout=left), quiet, chosen_settings, resume
        )
        searched.insert(0, member)
        study = load_study(open_storage(url), searched_run.study)
        if StudyRecord.of(study).frontier != name:
            write_study(study, frontier=name)
        stopped = stopped or searched_run.stopped_at_timeout
    if not stopped:
        for budget in sorted(budgets):
            _retrain_winner(url, member_name(name, budget), seeds, run.device, run.data_dir, quiet)
    members = _stored_members(url, name, budgets)
    rows = frontier_rows(members, name)
    return Frontier(name, public_url(url), rows, stopped, frontier_plot(rows, name), budget_studies(rows, members))


def _stored_members(url: str, name: str, budgets: Sequence[int]) -> list[optuna.Study]:
    """The studies of `budgets` stored so far: a frontier stopped at its timeout leaves the budgets it did not
    reach unwritten (all of them, and the database itself, where it stopped before the first)."""
    try:
        storage = open_storage(url, read_only=True)
    except UsageError:
        return []  # stopped before the first budget's study was written: nothing is stored yet
    stored = set(study_names(storage))
    return [load_study(storage, member_name(name, b)) for b in budgets if member_name(name, b) in stored]


def frontier_resume(
    config: str | None, run: RunOptions, budgets: Sequence[int], seeds: int, warm: bool, given: dict
) -> list[str]:
    """The `frontier` command that resumes this one to what it asked for: the budgets whose studies were not
    created yet take their settings from it, not from storage, so it repeats every setting given, and the
    folder of saved models (a study that exists remembers its own)."""
    return [
        "frontier",
        flag("--study", run.study),
        flag("--budgets", ",".join(map(str, sorted(budgets)))),
        flag("--seeds", seeds),
        *([flag("--config", config)] if config is not None else []),
        *([] if warm else ["--no-warm-start"]),
        *setting_flags(given, (*FRONTIER_OPTIONS, *DATA_OPTIONS)),
        *resume_flags(run),
        *([flag("--artifacts", run.artifacts)] if run.artifacts else []),
    ]


def _budget_settings(config: str | None, name: str, url: str, given: dict, budget: int) -> tuple[dict, StudyConfig]:
    """The settings of one budget's study, and its config. Its tolerance is at least one unit of the first hidden layer
    (785 parameters, 7.9% of 10,000): below that, whole widths skip over the budget and a small budget's
    study would prune every trial. Larger budgets keep the tolerance asked for."""
    settings = {**given, "budget": budget}
    if "trials" not in given and not _sets_trials(config, url, member_name(name, budget)):
        settings["trials"] = FRONTIER_TRIALS
    chosen = search_config(config, member_name(name, budget), url, settings)
    grain = math.ceil((INPUTS + 1) / budget * 1000) / 1000
    if chosen.tolerance >= grain:
        return settings, chosen
    settings["tolerance"] = min(grain, MAX_TOLERANCE)
    return settings, search_config(config, member_name(name, budget), url, settings)


def _sets_trials(config: str | None, url: str, member: str) -> bool:
    """Whether a budget's trials are already decided: by the study file, or by its study stored before."""
    if config:
        return "trials" in load_toml(config)
    return stored_settings(url, member, "search") is not None


def _warm_setting(url: str, member: str, searched: list[str], warm: bool) -> dict:
    """The warm_start setting of a budget's study: the nearest study below it (`searched`, nearest first)
    that completed a trial; none with the warm start off; left as stored for a study that already started."""
    try:
        storage = open_storage(url, read_only=True)
    except UsageError:
        return {"warm_start": ()}  # nothing stored yet: the first budget, which has nothing below it
    if not can_warm_start(storage, member):
        return {}
    if not warm:
        return {"warm_start": ()}
    done = (s for s in searched if completed(load_study(storage, s).get_trials(deepcopy=False)))
    return {"warm_start": tuple(itertools.islice(done, 1))}


def _retrain_winner(url: str, study_name: str, seeds: int, device: str, data_dir: str | None, quiet: bool) -> None:
    """Retrain the study's winner once per seed, unless that winner was already retrained with as many."""
    study = load_study(open_storage(url), study_name)
    if not completed(study.get_trials(deepcopy=False)):
        return  # every trial was pruned (a budget too small for the space's depths): its row says so
    winner = best_trial(study)
    kept = StudyRecord.of(study).retrained
    if kept and kept.get("trial") == winner.number and len(kept.get("seeds", ())) >= seeds:
        return
    record = BestTrial.of(winner, StudyRecord.of(study).settings, len(study.trials))
    if not quiet:
        print(f"retraining the winner of {study_name!r} (trial {winner.number}, {record.widths}) with {seeds} seed(s)")
    done, _ = retrain_trial(study, record, seeds, device, data_dir, quiet)
    write_study(study, retrained={"trial": winner.number, **asdict(done)})


@api_call(check_study=check_frontier_name)
def frontier_of(study: str = DEFAULT_FRONTIER, *, storage: str | None = None) -> Frontier:
    """A stored frontier, read only: its rows and figure."""
    name = study
    url = storage_url(storage)
    members = frontier_studies(open_storage(url, read_only=True), name)
    rows = frontier_rows(members, name)
    if not rows:
        command = shlex.join(["archsearch", "frontier", flag("--study", name), "--budgets", "10000:1000000"])
        raise UsageError(f"no frontier {name!r} in this storage; run `{command}` first")
    return Frontier(name, public_url(url), rows, False, frontier_plot(rows, name), budget_studies(rows, members))


def budget_studies(rows: Sequence[FrontierRow], studies: Sequence[optuna.Study]) -> dict[int, optuna.Study]:
    """Each row's budget and the study it was read from, in budget order."""
    by_name = {study.study_name: study for study in studies}
    return {row.budget: by_name[row.study] for row in rows}
