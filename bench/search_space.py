"""Our profile space against the naive per-layer space of optuna-examples, at one parameter budget.

    ARCHSEARCH_DATA=DIR .venv/bin/python bench/search_space.py

Part 1 samples architectures through Optuna (study.ask / tell on an in-memory study, RandomSampler by
default) from both spaces and prints how many land within the tolerance of the budget, and the depths,
profiles and widths reached. Ours runs `search.study.space.suggest`, the very code of the real search; the
naive space is optuna-examples' pytorch_simple: `n_layers`, then a free `n_units_l{i}` per layer, with
samples whose count misses the tolerance rejected.

Part 2 runs both as real studies (in memory, same sampler, seed, pruner, trainer and training
hyperparameter suggestions; only the architecture suggestions differ) and prints the best validation
loss of each. A naive trial whose count misses the tolerance is a wasted trial: it is pruned unrun and
counts as one of the study's trials, as it would for a naive user. `--retry-naive` adds a third, generous
study in which the naive space is drawn again until that many trials have trained.

Nothing is written into studies/: storages are in memory and saved models go to a temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from models.budget import count_parameters
from search.engine.config import DEFAULT_DEVICE, DEVICES
from search.engine.data import Data, load_data
from search.engine.trainer import resolve_device
from search.study.config import SAMPLERS, SearchSpace, StudyConfig
from search.study.lifecycle import make_pruner, make_sampler
from search.study.objective import Prepared, SearchObjective, prune, start_trial, train_alone
from search.study.space import suggest
from search.study.workers import run_until

# The names under which `search.study.space.suggest` samples the architecture; the rest are training settings.
ARCHITECTURE_NAMES = ("depth", "profile", "taper")
ARCHITECTURE_PREFIXES = ("relative_width_",)
SHAPES = ("single layer", "uniform", "decreasing", "increasing", "mixed")


class NaiveSpace:
    """optuna-examples' pytorch_simple: n_layers, then one free n_units_l{i} per layer."""

    def __init__(self, max_depth: int, low: int, high: int, log: bool):
        self.max_depth, self.low, self.high, self.log = max_depth, low, high, log

    def widths(self, trial: optuna.Trial) -> list[int]:
        depth = trial.suggest_int("n_layers", 1, self.max_depth)
        return [trial.suggest_int(f"n_units_l{i}", self.low, self.high, log=self.log) for i in range(depth)]

    def describe(self) -> str:
        scale = "log" if self.log else "linear"
        return f"n_layers in 1..{self.max_depth}, n_units_l{{i}} in {self.low}..{self.high} ({scale})"


def within(widths: Sequence[int], budget: int, tolerance: float) -> bool:
    return abs(count_parameters(widths) - budget) <= tolerance * budget


class TrainingOnlyTrial:
    """A trial for `search.study.space.suggest` that keeps only its training hyperparameters.

    Architecture suggestions (ARCHITECTURE_NAMES, ARCHITECTURE_PREFIXES) get a placeholder (one layer)
    and never reach the real trial; every other suggestion is forwarded unchanged. So the naive study
    samples its training settings with exactly our code, names and ranges.
    """

    def __init__(self, trial: optuna.Trial):
        self._trial = trial

    @staticmethod
    def _architecture(name: str) -> bool:
        return name in ARCHITECTURE_NAMES or name.startswith(ARCHITECTURE_PREFIXES)

    def suggest_int(self, name: str, low: int, high: int, **kwargs) -> int:
        return low if self._architecture(name) else self._trial.suggest_int(name, low, high, **kwargs)

    def suggest_float(self, name: str, low: float, high: float, **kwargs) -> float:
        return high if self._architecture(name) else self._trial.suggest_float(name, low, high, **kwargs)

    def suggest_categorical(self, name: str, choices: Sequence):
        return choices[0] if self._architecture(name) else self._trial.suggest_categorical(name, choices)

    def __getattr__(self, name: str):
        return getattr(self._trial, name)


class NaiveObjective:
    """The naive space in the same objective as ours: same trainer, same training suggestions and seeds."""

    def __init__(self, config: StudyConfig, naive: NaiveSpace, data: Data):
        self.config, self.naive, self.data = config, naive, data

    def __call__(self, trial: optuna.Trial) -> float:
        config = self.config
        widths = self.naive.widths(trial)
        seed = config.seed + trial.number
        proxy = TrainingOnlyTrial(trial)
        train = suggest(proxy, config.space, config.budget, config.tolerance, config.epochs, seed).train
        trial.set_user_attr("profile", "naive")
        trial.set_user_attr("sampled_widths", widths)
        trial.set_user_attr("weight_decay", train.weight_decay)
        if not within(widths, config.budget, config.tolerance):
            raise prune(
                trial,
                f"{count_parameters(widths)} parameters, outside {config.tolerance:.0%} of {config.budget}",
            )
        start_trial(trial, widths, train, self.data)
        return train_alone(Prepared(trial, widths, train, lambda result, _: result.validation.loss), self.data)


def shape(widths: Sequence[int]) -> str:
    if len(widths) == 1:
        return "single layer"
    pairs = list(itertools.pairwise(widths))
    if all(a == b for a, b in pairs):
        return "uniform"
    if all(a >= b for a, b in pairs):
        return "decreasing"
    if all(a <= b for a, b in pairs):
        return "increasing"
    return "mixed"


# Part 1: sampling ------------------------------------------------------------------------------------


def sample_ours(config: StudyConfig, sampler_name: str, count: int) -> tuple[list[tuple[str, list[int]]], int]:
    """`count` draws of `suggest`; returns the (profile, widths) of those with widths, and the None count."""
    study = optuna.create_study(sampler=make_sampler(sampler_name, config.seed), direction="minimize")
    accepted, missed = [], 0
    for _ in range(count):
        trial = study.ask()
        candidate = suggest(trial, config.space, config.budget, config.tolerance, config.epochs, config.seed)
        if candidate.widths is None:
            missed += 1
            study.tell(trial, state=TrialState.PRUNED)
            continue
        accepted.append((candidate.profile, candidate.widths))
        study.tell(trial, 0.0)
    return accepted, missed


def sample_naive(config: StudyConfig, naive: NaiveSpace, sampler_name: str, count: int) -> list[list[int]]:
    """`count` draws of the naive space; returns the widths of those within tolerance."""
    study = optuna.create_study(sampler=make_sampler(sampler_name, config.seed), direction="minimize")
    accepted = []
    for _ in range(count):
        trial = study.ask()
        widths = naive.widths(trial)
        if within(widths, config.budget, config.tolerance):
            accepted.append(widths)
            study.tell(trial, 0.0)
        else:
            study.tell(trial, state=TrialState.PRUNED)
    return accepted


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.1%})" if whole else f"{part}/0"


def histogram_table(title: str, keys: Sequence, columns: dict[str, collections.Counter]) -> None:
    print(title)
    names = list(columns)
    print(f"  {'':<14}" + "".join(f"{name:>10}" for name in names))
    for key in keys:
        print(f"  {key!s:<14}" + "".join(f"{columns[name][key]:>10}" for name in names))


def width_summary(all_widths: list[list[int]]) -> str:
    if not all_widths:
        return "none"
    layers = [w for widths in all_widths for w in widths]
    first = [widths[0] for widths in all_widths]
    return (
        f"any layer {min(layers)}..{max(layers)} (median {statistics.median(layers):g}), "
        f"first layer {min(first)}..{max(first)}"
    )


def error_summary(all_widths: list[list[int]], budget: int) -> str:
    if not all_widths:
        return "none"
    errors = [abs(count_parameters(widths) - budget) / budget for widths in all_widths]
    return f"mean {statistics.fmean(errors):.3%}, max {max(errors):.3%}"


def run_sampling(config: StudyConfig, naive: NaiveSpace, sampler_name: str, count: int) -> tuple[int, int]:
    """Prints part 1; returns how many samples each space wasted (ours: widths None; naive: rejected)."""
    started = time.perf_counter()
    ours, missed = sample_ours(config, sampler_name, count)
    naive_ok = sample_naive(config, naive, sampler_name, count)
    seconds = time.perf_counter() - started
    ours_widths = [widths for _, widths in ours]
    print(
        f"== Part 1: {count} sampled architectures per space at P = {config.budget:,} "
        f"(±{config.tolerance:.0%}), {sampler_name} sampler, seed {config.seed} =="
    )
    print(
        f"ours : depth 1..{config.space.max_depth}, profiles {', '.join(config.space.profiles)}; "
        "widths solved for P (search.study.space.suggest)"
    )
    print(f"       within tolerance {share(len(ours), count)}; widths=None (wasted) {missed}")
    print(f"naive: {naive.describe()}; rejected when |count - P| > {config.tolerance:.0%} of P")
    print(
        f"       within tolerance {share(len(naive_ok), count)}; rejected (wasted) {count - len(naive_ok)} "
        f"({(count - len(naive_ok)) / count:.1%})"
    )
    depths = range(1, config.space.max_depth + 1)
    histogram_table(
        "depth histogram (samples within tolerance):",
        list(depths),
        {
            "ours": collections.Counter(len(w) for w in ours_widths),
            "naive": collections.Counter(len(w) for w in naive_ok),
        },
    )
    histogram_table(
        "our profile labels (samples within tolerance):",
        list(config.space.profiles),
        {"ours": collections.Counter(profile for profile, _ in ours)},
    )
    histogram_table(
        "shape of the integer widths (samples within tolerance):",
        list(SHAPES),
        {
            "ours": collections.Counter(shape(w) for w in ours_widths),
            "naive": collections.Counter(shape(w) for w in naive_ok),
        },
    )
    print(f"widths reached: ours  {width_summary(ours_widths)}")
    print(f"                naive {width_summary(naive_ok)}")
    print(
        f"|count - P| / P: ours {error_summary(ours_widths, config.budget)}; "
        f"naive {error_summary(naive_ok, config.budget)}"
    )
    print(f"(sampling took {seconds:.1f} s)")
    return missed, count - len(naive_ok)


# Part 2: real studies --------------------------------------------------------------------------------


def wasted(trial: FrozenTrial) -> bool:
    """Pruned before training: start_trial records the widths first thing, so a wasted trial has none."""
    return trial.state == TrialState.PRUNED and "widths" not in trial.user_attrs


def trial_line(label: str, trial: FrozenTrial) -> str:
    attrs = trial.user_attrs
    widths = attrs.get("widths") or attrs.get("sampled_widths") or []
    params = count_parameters(widths) if widths else 0
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    head = f"  {label:<6}#{trial.number:<4} {attrs.get('profile', ''):<10} {widths!s:<34} {params:>6}"
    if trial.state == TrialState.COMPLETE:
        train = attrs.get("train_config", {})
        settings = f"{train.get('optimizer')} lr {train.get('lr', 0):.2g} bs {train.get('batch_size')}"
        return (
            f"{head}  val loss {trial.value:.4f}  val acc {attrs.get('val_accuracy', 0):.2%}  "
            f"[{settings} {train.get('activation')}]  {seconds:.1f} s"
        )
    reason = attrs.get("pruned_reason") or attrs.get("fail_reason") or trial.state.name.lower()
    tag = "WASTED" if wasted(trial) else trial.state.name.lower()
    return f"{head}  {tag}: {reason}  {seconds:.1f} s"


def printer(label: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL or "surplus" not in trial.user_attrs.get("fail_reason", ""):
            print(trial_line(label, trial), flush=True)

    return on_trial


class Outcome:
    def __init__(self, study: optuna.Study, seconds: float):
        trials = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        self.trials = len(trials)
        self.wasted = sum(wasted(t) for t in trials)
        self.trained = self.trials - self.wasted
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        self.complete = len(complete)
        self.best = min(complete, key=lambda t: t.value) if complete else None
        self.best_loss = self.best.value if self.best else math.inf
        self.seconds = seconds

    def line(self, label: str) -> str:
        best = (
            f"best val loss {self.best_loss:.4f} (trial #{self.best.number}, {self.best.user_attrs.get('profile')} "
            f"{self.best.user_attrs.get('widths')}, val acc {self.best.user_attrs.get('val_accuracy', 0):.2%})"
            if self.best
            else "best val loss: none (no trial completed)"
        )
        return (
            f"{label:<6}: {self.trials} trials, {self.wasted} wasted, {self.trained} trained, "
            f"{self.complete} complete; {best}; {self.seconds:.0f} s"
        )


def new_study(config: StudyConfig, name: str) -> optuna.Study:
    return optuna.create_study(
        study_name=name,
        storage=optuna.storages.InMemoryStorage(),
        sampler=make_sampler(config.sampler, config.seed),
        pruner=make_pruner(config.pruner, config.epochs),
        direction="minimize",
    )


def run_ours(config: StudyConfig, data: Data, artifacts: Path) -> Outcome:
    study = new_study(config, "bench-ours")
    started = time.perf_counter()
    run_until(study, SearchObjective(config, data, artifacts), config.trials, printer("ours"))
    return Outcome(study, time.perf_counter() - started)


def run_naive(config: StudyConfig, naive: NaiveSpace, data: Data) -> Outcome:
    study = new_study(config, "bench-naive")
    started = time.perf_counter()
    run_until(study, NaiveObjective(config, naive, data), config.trials, printer("naive"))
    return Outcome(study, time.perf_counter() - started)


def run_naive_retried(config: StudyConfig, naive: NaiveSpace, data: Data, cap: int) -> Outcome:
    """Naive draws repeated until `config.trials` trials have trained (at most `cap` draws in all)."""
    study = new_study(config, "bench-naive-retried")
    objective = NaiveObjective(config, naive, data)
    started = time.perf_counter()

    def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if not wasted(trial):
            printer("retry")(study, trial)

    while True:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if sum(not wasted(t) for t in trials) >= config.trials or len(trials) >= cap:
            break
        study.optimize(objective, n_trials=1, callbacks=[on_trial])
    return Outcome(study, time.perf_counter() - started)


# Main ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = StudyConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=50_000, help="parameter budget P (default 50000)")
    parser.add_argument("--tolerance", type=float, default=defaults.tolerance, help="relative tolerance (0.02)")
    parser.add_argument("--samples", type=int, default=2000, help="architectures sampled per space (2000)")
    parser.add_argument(
        "--sample-sampler", choices=SAMPLERS, default="random", help="sampler for part 1 (default random)"
    )
    parser.add_argument("--trials", type=int, default=20, help="trials per study, wasted ones included (20)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (3)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=defaults.sampler, help="study sampler (tpe)")
    parser.add_argument("--pruner", choices=("median", "hyperband", "none"), default=defaults.pruner)
    parser.add_argument("--seed", type=int, default=0, help="sampler and training seed of both studies (0)")
    parser.add_argument("--naive-units", type=int, nargs=2, default=(4, 256), metavar=("LOW", "HIGH"))
    parser.add_argument("--naive-linear", action="store_true", help="sample n_units linearly, not log-uniformly")
    parser.add_argument("--data-limit", type=int, default=0, help="trim every split to this many images (0: all)")
    parser.add_argument("--data-dir", help="MNIST root (default $ARCHSEARCH_DATA, else ./data)")
    parser.add_argument("--device", choices=DEVICES, default=DEFAULT_DEVICE)
    parser.add_argument("--skip-studies", action="store_true", help="part 1 only")
    parser.add_argument(
        "--retry-naive",
        action="store_true",
        help="also run the naive space again, redrawing wasted trials until --trials have trained (informative)",
    )
    parser.add_argument("--retry-cap", type=int, default=5000, help="most naive draws with --retry-naive (5000)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = StudyConfig(
        name="bench-search-space",
        budget=args.budget,
        tolerance=args.tolerance,
        trials=args.trials,
        epochs=args.epochs,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        data_limit=args.data_limit,
        storage="in-memory",
        space=SearchSpace(),
    )
    naive = NaiveSpace(config.space.max_depth, *args.naive_units, log=not args.naive_linear)
    missed, rejected = run_sampling(config, naive, args.sample_sampler, args.samples)
    results = [
        (
            "ours wastes no samples",
            missed == 0,
            f"{missed} of {args.samples} samples without widths (naive: {rejected} rejected)",
        )
    ]
    if not args.skip_studies:
        device = resolve_device(args.device)
        data = load_data(args.data_dir, config.dataset, str(device), limit=args.data_limit or None)
        print(
            f"\n== Part 2: two studies of {config.trials} trials x {config.epochs} epochs, {config.sampler} sampler, "
            f"{config.pruner} pruner, seed {config.seed}, on {device}; train {len(data.train)}, "
            f"validation {len(data.validation)} images =="
        )
        with tempfile.TemporaryDirectory(prefix="bench-search-space-") as artifacts:
            ours = run_ours(config, data, Path(artifacts))
        naive_outcome = run_naive(config, naive, data)
        retried = run_naive_retried(config, naive, data, args.retry_cap) if args.retry_naive else None
        print()
        print(ours.line("ours"))
        print(naive_outcome.line("naive"))
        if retried is not None:
            print(retried.line("retry") + " (naive redrawn until trained; informative only)")
        results[0] = (
            "ours wastes no samples",
            missed == 0 and ours.wasted == 0,
            f"{missed} of {args.samples} samples without widths, {ours.wasted} of {ours.trials} trials wasted "
            f"(naive: {rejected} samples, {naive_outcome.wasted} trials)",
        )
        naive_best = "none" if naive_outcome.best is None else f"{naive_outcome.best_loss:.4f}"
        results.append(
            (
                "ours best loss <= naive best loss",
                ours.best is not None and ours.best_loss <= naive_outcome.best_loss,
                f"{ours.best_loss:.4f} vs {naive_best}",
            )
        )
        if retried is not None:
            relation = "<=" if ours.best_loss <= retried.best_loss else ">"
            print(
                f"INFO: ours best val loss {ours.best_loss:.4f} {relation} naive-retried {retried.best_loss:.4f} "
                f"(naive needed {retried.trials} draws for {retried.trained} trained trials)"
            )
    print()
    for name, passed, detail in results:
        print(f"{'PASS' if passed else 'FAIL'}: {name} ({detail})")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0 if all(passed for _, passed, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
