"""The settings a command lays over a study file: one table per study kind, read by the CLI to build
its flags and by the Python API to take its keyword arguments, so the two never differ.

Each row names the config field it sets (a dotted path into the dataclass: `space.max_depth`,
`train.lr`), its flag type and its help; the flag is the field's name with dashes, the keyword the
field's name. A new option is a field of the config dataclass (its default and its check) and one
row here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models.catalog import ACTIVATION_NAMES
from models.profiles import PROFILES
from search.api.args import (
    batch_size,
    budget,
    budget_list,
    data_limit,
    depth,
    depth_list,
    epoch_count,
    positive_float,
    seed,
    seed_count,
    trial_count,
)
from search.engine.config import OPTIMIZERS
from search.study.config import DATASET_NAMES, DEFAULT_WARM_START_TOP, PRUNERS, SAMPLERS


def name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names; the config checks each one against its choices."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class ConfigOption:
    """A flag that sets one field of a study's configuration."""

    path: str
    type: Callable[[str], Any] | None = None
    help: str | None = None
    choices: Sequence[str] | None = None

    @property
    def dest(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")


SEARCH_OPTIONS = (
    ConfigOption("budget", budget, "parameter budget P"),
    ConfigOption("tolerance", positive_float, "allowed relative distance to P (default 0.02)"),
    ConfigOption("trials", trial_count, "finished trials wanted in total (resume counts)"),
    ConfigOption("epochs", epoch_count),
    ConfigOption("space.profiles", name_list, f"comma-separated subset of {','.join(PROFILES)}"),
    ConfigOption("space.max_depth", depth),
    ConfigOption("sampler", choices=SAMPLERS),
    ConfigOption("pruner", choices=PRUNERS),
    ConfigOption("seed", seed),
    ConfigOption(
        "warm_start",
        name_list,
        "comma-separated search studies of this storage, at any budget, whose best trials this new study tries first",
    ),
    ConfigOption(
        "warm_start_top",
        trial_count,
        f"best trials a warm start takes from each source study (default {DEFAULT_WARM_START_TOP})",
    ),
)

GRID_OPTIONS = (
    ConfigOption("budgets", budget_list, "comma-separated parameter budgets, e.g. 25000,50000,100000"),
    ConfigOption("depths", depth_list, "comma-separated numbers of hidden layers, e.g. 1,2,3,4,6,8"),
    ConfigOption("seeds", seed_count, "seeds per shape: 0, 1, ..., N-1"),
    ConfigOption("train.epochs", epoch_count),
    ConfigOption("train.lr", positive_float),
    ConfigOption("train.batch_size", batch_size, "'full' or a mini-batch size"),
    ConfigOption("train.optimizer", choices=OPTIMIZERS),
    ConfigOption("train.activation", choices=ACTIVATION_NAMES),
)

# Shared with the commands that only read data (baseline, best, report), where they are plain flags.
DATA_OPTIONS = (
    ConfigOption("dataset", choices=DATASET_NAMES, help="default mnist"),
    ConfigOption("data_limit", data_limit, "use only the first N samples of each split (quick runs)"),
)


def apply_config_options(config: Any, args: Any, options: Sequence[ConfigOption]) -> Any:
    """`config` with every given flag of `options` laid over it; flags left out keep the config's value."""
    changes: dict[str, Any] = {}
    nested: dict[str, list[ConfigOption]] = {}
    for option in options:
        head, _, rest = option.path.partition(".")
        if rest:
            nested.setdefault(head, []).append(ConfigOption(rest, option.type, option.help, option.choices))
            continue
        value = getattr(args, option.dest)
        if value is not None:
            changes[head] = tuple(value) if isinstance(value, list) else value
    for head, inner in nested.items():
        changes[head] = apply_config_options(getattr(config, head), args, inner)
    return dataclasses.replace(config, **changes)
