"""Studies made directly through Optuna, with the attributes archsearch stores (written through its record
types, search/study/record.py), for the results tests: no training, so export, report and dashboard tests
start at once."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from models.budget import count_parameters, width_for_budget
from models.profiles import profile_widths
from search.study.record import trial_attrs, write_study

BASELINE = {
    "train_loss": 0.4321,
    "test_loss": 0.4120,
    "train_accuracy": 0.8855,
    "test_accuracy": 0.8917,
    "params": 7850,
    "train_config": {"epochs": 150, "lr": 0.2, "optimizer": "sgd", "batch_size": 0},
    "train_images": 60000,
}
SEARCH_PLOTS = [
    "optimization-history",
    "param-importances",
    "parallel-coordinate",
    "slice",
    "intermediate-values",
    "loss-vs-params",
    "loss-by-profile",
    "best-shapes",
    "loss-vs-weight-decay",
]


def grid_loss(budget: int, depth: int, seed: int) -> float:
    """Made-up final losses: lowest at depth 2, rising beyond, lower for larger budgets."""
    return 0.1 + 0.03 * abs(depth - 2) - budget / 2_000_000 + 0.002 * seed


def add_grid_study(
    url: str, name: str = "ksweep", budgets=(20_000, 50_000), depths=(1, 2, 3, 4), seeds=2, baseline=BASELINE
) -> optuna.Study:
    """A grid study as `archsearch grid` stores it, built directly so these tests stand alone."""
    study = optuna.create_study(study_name=name, storage=url)
    write_study(study, kind="grid", config={"budgets": list(budgets), "depths": list(depths), "seeds": seeds})
    if baseline is not None:
        write_study(study, baseline=baseline)
    distributions = {
        "budget": CategoricalDistribution(budgets),
        "depth": CategoricalDistribution(depths),
        "seed": CategoricalDistribution(tuple(range(seeds))),
    }
    for seed in range(seeds):
        for budget in budgets:
            for depth in depths:
                widths = [width_for_budget(budget, depth)] * depth
                loss = grid_loss(budget, depth, seed)
                study.add_trial(
                    create_trial(
                        params={"budget": budget, "depth": depth, "seed": seed},
                        distributions=distributions,
                        value=loss,
                        user_attrs=trial_attrs(
                            widths=widths,
                            params=count_parameters(widths),
                            train_loss=loss,
                            profile="uniform",
                            seed=seed,
                            test_accuracy=0.9,
                        ),
                    )
                )
    return study


SEARCH_TRIALS = [
    # profile, depth, taper, weight decay, validation loss
    ("uniform", 2, 1.0, 0.0, 0.30),
    ("uniform", 3, 1.0, 1e-4, 0.28),
    ("decreasing", 3, 0.3, 1e-4, 0.21),
    ("decreasing", 2, 0.5, 0.0, 0.26),
    ("increasing", 3, 0.4, 1e-3, 0.35),
    ("free", 2, 0.7, 0.0, 0.33),
]


def add_search_study(url: str, name: str = "profiles", budget: int = 20_000, trials=SEARCH_TRIALS) -> optuna.Study:
    """A search study as `archsearch search` stores it, with one pruned trial beside the completed ones."""
    study = optuna.create_study(study_name=name, storage=url)
    config = {"budget": budget, "tolerance": 0.02, "trials": len(trials) + 1, "epochs": 3}
    write_study(study, kind="search", config=config)
    distributions = {
        "depth": IntDistribution(1, 4),
        "profile": CategoricalDistribution(("uniform", "decreasing", "increasing", "free")),
        "taper": FloatDistribution(0.1, 1.0),
        "use_weight_decay": CategoricalDistribution((True, False)),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "optimizer": CategoricalDistribution(("adam", "sgd")),
    }
    for index, (profile, depth, taper, decay, loss) in enumerate(trials):
        widths = profile_widths(profile, depth, budget, 0.02, taper, [1.0, 0.6, 0.8, 0.5])
        params = {
            "depth": depth,
            "profile": profile,
            "taper": taper,
            "use_weight_decay": decay > 0,
            "weight_decay": decay or 1e-5,
            "lr": 1e-3 * (index + 1),
            "optimizer": ("adam", "sgd")[index % 2],
        }
        curve = {epoch: loss + 0.1 * (3 - epoch) for epoch in (1, 2, 3)}
        study.add_trial(
            create_trial(
                params=params,
                distributions=distributions,
                value=loss,
                intermediate_values=curve,
                user_attrs=trial_attrs(
                    profile=profile,
                    widths=widths,
                    params=count_parameters(widths),
                    weight_decay=decay,
                    val_loss=loss,
                    val_accuracy=1 - loss / 3,
                    test_loss=loss + 0.01,
                    test_accuracy=1 - loss / 3 - 0.005,
                    train_config={"weight_decay": decay, "lr": 1e-3},
                ),
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={**params, "profile": "free"},
            distributions=distributions,
            intermediate_values={1: 0.9},
            user_attrs=trial_attrs(profile="free", pruned_reason="pruner stopped it at epoch 1"),
        )
    )
    return study
