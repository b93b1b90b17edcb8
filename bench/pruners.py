"""Pruners at equal time: which finds the lower validation loss in the same minutes, median or Hyperband?

    ARCHSEARCH_DATA=DIR .venv/bin/python bench/pruners.py --storage sqlite:///bench-pruners.db --workers 2

For each seed and pruner it runs one search at --budget (266,610 by default, the middle of the default
frontier) through the public API (`search.api.search`, the default space and settings, `pruner` set),
stopped at --minutes of wall time, with more trials asked than fit. Then it prints, per seed and pruner, the
trials finished (completed and pruned) and the best validation loss, with the medians over seeds, and writes
the table to docs/bench/pruners.md. An arm already stored is only read, never run again (a search stopped at
its timeout would otherwise get a second share of time): delete its study to rerun it. Only the validation
split is read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.stamp import markdown_table  # noqa: E402
from bench.studies import publish, stored  # noqa: E402
from search import api  # noqa: E402
from search.study.config import PRUNERS  # noqa: E402
from search.study.record import TrialRecord  # noqa: E402

MANY_TRIALS = 10_000  # more than any run of minutes finishes: the timeout ends each arm


def run_arm(args: argparse.Namespace, pruner: str, seed: int) -> optuna.Study:
    name = f"{pruner}-{seed}"
    study = stored(args.storage, name)
    if study is None:
        print(f"searching {name!r}: budget {args.budget:,}, pruner {pruner}, seed {seed}, {args.minutes:g} minutes")
        api.search(
            study=name,
            storage=args.storage,
            budget=args.budget,
            trials=MANY_TRIALS,
            seed=seed,
            pruner=pruner,
            epochs=args.epochs,
            workers=args.workers,
            timeout=args.minutes * 60,
            data_dir=args.data_dir,
            data_limit=args.data_limit,
            quiet=True,
        )
        study = stored(args.storage, name)
        if study is None:
            raise SystemExit(f"the search of {name!r} stored nothing")
    return study


def row(pruner: str, seed: int, study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = min(complete, key=lambda t: t.value) if complete else None
    record = TrialRecord.of(best) if best else None
    return {
        "pruner": pruner,
        "seed": seed,
        "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "epochs": sum(len(t.intermediate_values) for t in trials),
        "best_val_loss": best.value if best else None,
        "best": f"#{best.number} {record.profile} {list(record.widths)}" if best and record else "-",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", required=True, help="an Optuna storage URL for the studies (kept)")
    parser.add_argument("--budget", type=int, default=266_610)
    parser.add_argument("--pruners", default="median,hyperband", help=f"of {', '.join(PRUNERS)}, by commas")
    parser.add_argument("--seeds", default="0,1", help="the search seeds, separated by commas")
    parser.add_argument("--minutes", type=float, default=15.0, help="each arm's wall time")
    parser.add_argument("--epochs", type=int, default=None, help="default: the search's own")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-limit", type=int, default=None, help="train on this many images (a quick run)")
    parser.add_argument("--no-table", action="store_true", help="print only; leave docs/bench/pruners.md")
    args = parser.parse_args(argv)
    pruners = args.pruners.split(",")
    if not set(pruners) <= set(PRUNERS):
        parser.error(f"--pruners takes names of {', '.join(PRUNERS)}")
    seeds = [int(s) for s in args.seeds.split(",")]

    rows = [row(pruner, seed, run_arm(args, pruner, seed)) for seed in seeds for pruner in pruners]
    header = ["pruner", "seed", "completed", "pruned", "epochs trained", "best val loss", "best trial"]
    cells = [
        [
            r["pruner"],
            r["seed"],
            r["complete"],
            r["pruned"],
            r["epochs"],
            f"{r['best_val_loss']:.4f}" if r["best_val_loss"] is not None else "-",
            r["best"],
        ]
        for r in rows
    ]
    for pruner in pruners:
        losses = [r["best_val_loss"] for r in rows if r["pruner"] == pruner]
        if all(loss is not None for loss in losses):
            cells.append([f"**{pruner}, median**", "", "", "", "", f"**{statistics.median(losses):.4f}**", ""])
    table = markdown_table(header, cells, right=[False, True, True, True, True, True, False])
    title = (
        f"Search at {args.budget:,} parameters for {args.minutes:g} minutes with {args.workers} worker(s), "
        f"per pruner and seed{', on ' + str(args.data_limit) + ' images' if args.data_limit else ''}.\n\n"
    )
    publish("pruners", title + table, argv, write=not args.no_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
