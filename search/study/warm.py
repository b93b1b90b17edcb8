"""Warm starts: a new search study first tries the best configurations of stored search studies.

Why they carry across budgets: a trial samples its shape as depth, profile, taper and relative widths and
solves the widths for its own study's budget (search/study/space.py, `models.profiles.profile_widths`), so
the parameters of a trial found at one budget name a network of the same form at any other. They are
queued as they are (Optuna's `enqueue_trial`): the new study's first trial has the first source's best
parameters, and its widths fit the new budget.

What is taken: the `warm_start_top` best completed trials of each source by validation loss (the
objective), interleaved by rank across the sources (each one's best, then each one's second, ...), each
set of parameters once, and no more than the study's trials: queued trials beyond them would never run.

Where the new study's search space differs from a source's, deliberately:
- a parameter the new space does not suggest is dropped from the candidate (input dropout from a source
  that searched it, in a study that does not; relative widths beyond the new max_depth, which no depth
  it allows uses): the trial trains as its own study's trials do;
- a value outside the new space's ranges or choices drops the whole candidate (a depth beyond its
  max_depth, an optimizer or profile it does not search, a learning rate outside its range): it could not
  be tried as it was found, and a clipped value would be a configuration no search found;
- a parameter the new space has and the source lacks (input dropout new to the space, relative widths
  beyond a shallower source's max_depth) is left to the sampler.

Once only: `plan_warm_start` reads the storage without writing, before a run writes anything, refuses a
bad source in one line, and plans nothing for a study whose warm start is done. `queue_warm_start` queues
with `skip_if_exists` and records the warm start in the study (StudyRecord.warm_start) after its trials,
so a run killed in between queues nothing twice when it resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from search.errors import UsageError, argument
from search.study.config import StudyConfig
from search.study.lifecycle import load_study, study_names
from search.study.record import StudyRecord, TrialRecord, trial_attrs, write_study
from search.study.space import suggest
from search.study.storage import describe, open_storage


@dataclass(frozen=True)
class WarmTrial:
    """One configuration to try first, and the stored trial it comes from."""

    params: dict[str, Any]
    study: str
    trial: int
    val_loss: float


@dataclass(frozen=True)
class WarmStart:
    """What a warm start queues: the trials in the order they run, and the candidates it left out."""

    sources: tuple[str, ...]
    top: int
    trials: tuple[WarmTrial, ...]
    outside_space: int  # candidates with a value outside this study's search space

    def summary(self) -> str:
        line = (
            f"warm start: {len(self.trials)} trial(s) queued from {', '.join(map(repr, self.sources))} "
            f"(the best {self.top} of each by validation loss)"
        )
        if self.outside_space:
            line += f"; {self.outside_space} left out, outside this study's search space"
        return line


def plan_warm_start(url: str, config: StudyConfig) -> WarmStart | None:
    """The trials `config`'s warm start queues, read without writing; None when it asks for none or its
    study's warm start is done. One line (UsageError) for a source that is missing, is not a search
    study, searched another dataset or has no completed trial, and for a study that already ran trials
    without a warm start."""
    sources = tuple(dict.fromkeys(config.warm_start))
    if not sources:
        return None
    try:
        storage = open_storage(url, read_only=True)
    except UsageError as error:
        raise UsageError(f"cannot warm-start from {sources[0]!r}: {error}") from None
    names = study_names(storage)
    if config.name in names and warm_start_done(load_study(storage, config.name)):
        return None
    best = [_best_trials(_source(storage, names, source, config, url), config.warm_start_top) for source in sources]
    distributions = space_distributions(config)
    trials: list[WarmTrial] = []
    seen: set[tuple] = set()
    outside = 0
    for rank in zip_longest(*best):
        for source, trial in zip(sources, rank, strict=True):
            if trial is None:
                continue
            params = fitted(trial.params, distributions)
            if params is None:
                outside += 1
                continue
            key = tuple(sorted(params.items()))
            if key not in seen:
                seen.add(key)
                trials.append(WarmTrial(params, source, trial.number, trial.value))
    return WarmStart(sources, config.warm_start_top, tuple(trials[: config.trials]), outside)


def queue_warm_start(study: optuna.Study, plan: WarmStart) -> bool:
    """Queue the planned trials, each recording where it came from, then record the warm start as done;
    False where a run of the same study at the same moment did it first."""
    if StudyRecord.of(study).warm_start is not None:
        return False
    for warm in plan.trials:
        origin = trial_attrs(warm_start={"study": warm.study, "trial": warm.trial})
        study.enqueue_trial(warm.params, user_attrs=origin, skip_if_exists=True)
    write_study(
        study,
        warm_start={"sources": list(plan.sources), "queued": len(plan.trials), "outside_space": plan.outside_space},
    )
    return True


def warm_start_done(study: optuna.Study) -> bool:
    """Whether the study's warm start is done; refuses (one line) a study that ran trials without one,
    since a warm start comes before the first trial. Trials a killed warm start queued are its own."""
    if StudyRecord.of(study).warm_start is not None:
        return True
    cold = [t for t in study.get_trials(deepcopy=False) if TrialRecord.of(t).warm_start is None]
    if cold:
        raise UsageError(
            f"study {study.study_name!r} already has {len(cold)} trial(s) without a warm start, which comes before "
            f"the first trial; choose another {argument('study')}, or resume this one without {argument('warm_start')}"
        )
    return False


def can_warm_start(storage, name: str) -> bool:
    """Whether a study of this name could still be warm-started: it does not exist yet, or has neither
    run a trial nor been warm-started (a frontier asks before it warm-starts a budget's study)."""
    if name not in study_names(storage):
        return True
    study = load_study(storage, name)
    return StudyRecord.of(study).warm_start is None and not study.get_trials(deepcopy=False)


def _source(storage, names: list[str], source: str, config: StudyConfig, url: str) -> optuna.Study:
    if source == config.name:
        raise UsageError(f"study {source!r} cannot warm-start from itself; name other stored search studies")
    if source not in names:
        raise UsageError(
            f"no study named {source!r} to warm-start from in {describe(url)} (studies there: "
            f"{', '.join(map(repr, names)) or 'none'})"
        )
    study = load_study(storage, source)
    record = StudyRecord.of(study)
    if record.kind is None:
        raise UsageError(f"study {source!r} was not made by archsearch; warm-start from archsearch search studies only")
    if record.kind != "search":
        raise UsageError(
            f"study {source!r} is a {record.kind} study, not a search study; warm-start from search studies"
        )
    dataset = record.settings.get("dataset", StudyConfig.dataset)
    if dataset != config.dataset:
        raise UsageError(
            f"study {source!r} searched {dataset}, not {config.dataset}; warm-start from studies of the same dataset"
        )
    return study


def _best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not done:
        raise UsageError(
            f"study {study.study_name!r} has no completed trial to warm-start from; run it first or leave it out"
        )
    return sorted(done, key=lambda t: (t.value, t.number))[:top]


def space_distributions(config: StudyConfig) -> dict[str, BaseDistribution]:
    """The distributions of every parameter this study's trials suggest, read from one trial of an
    in-memory study that suggests exactly as the objective does (space.suggest), so they never differ."""
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = probe.ask()
    suggest(trial, config.space, config.budget, config.tolerance, config.epochs, config.seed)
    return dict(trial.distributions)


def fitted(params: dict[str, Any], distributions: dict[str, BaseDistribution]) -> dict[str, Any] | None:
    """`params` without those the space lacks; None when a value lies outside its distribution."""
    kept = {name: value for name, value in params.items() if name in distributions}
    return kept if all(contains(distributions[name], value) for name, value in kept.items()) else None


def contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether a distribution can give this value, by its public fields (a bool is not the number 1)."""
    if isinstance(distribution, CategoricalDistribution):
        return any(type(choice) is type(value) and choice == value for choice in distribution.choices)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if isinstance(distribution, IntDistribution):
        on_step = (value - distribution.low) % distribution.step == 0
        return isinstance(value, int) and distribution.low <= value <= distribution.high and on_step
    if isinstance(distribution, FloatDistribution):
        return distribution.low <= value <= distribution.high
    return False
