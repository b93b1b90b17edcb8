"""Warm against cold: does a search started from a stored search at a smaller budget find a good network sooner?

    ARCHSEARCH_DATA=DIR .venv/bin/python bench/warm_start.py --storage sqlite:///bench-warm.db --workers 2

Through the public API (`search.api.search`, the default search space and settings), it runs or resumes:

- `source`: a search at --source-budget (50,000), seed 0;
- for each seed, `warm-SEED`: a search at --budget (100,000) warm-started from `source` (its best
  `--warm-start-top` configurations first, as `archsearch search --warm-start` queues them), and `cold-SEED`:
  the same search without the warm start.

Each has --trials trials (30). An arm already stored with that many finished trials is only read, so a run
stopped part-way goes on where it stopped, and a cold arm may be a study copied in from elsewhere (a
frontier's first budget is the cold search of its seed). Then it prints, for each seed, at which trial
each arm's best validation loss first reached --threshold (0.070; "-" where it never did) and its best
validation loss after all the trials, with the medians over seeds, and writes the table to
docs/bench/warm_start.md. Only the validation split is read: the test set decides nothing here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from bench.stamp import markdown_table  # noqa: E402
from bench.studies import publish, stored  # noqa: E402
from search import api  # noqa: E402
from search.study.record import TrialRecord  # noqa: E402

SOURCE = "source"


def reached_at(trials: list[FrozenTrial], threshold: float) -> int | None:
    """How many trials (in the order they were numbered) ran until one completed at or below `threshold`."""
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state == TrialState.COMPLETE and trial.value is not None and trial.value <= threshold:
            return trial.number + 1
    return None


def finished(study: optuna.Study) -> list[FrozenTrial]:
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in states]


def run_arm(args: argparse.Namespace, name: str, budget: int, seed: int, warm: bool) -> optuna.Study:
    """The arm's study: searched (or resumed) to --trials finished trials, or read where it has them."""
    study = stored(args.storage, name)
    if study is None or len(finished(study)) < args.trials:
        print(f"searching {name!r}: budget {budget:,}, seed {seed}, {'warm from ' + SOURCE if warm else 'cold'}")
        api.search(
            study=name,
            storage=args.storage,
            budget=budget,
            trials=args.trials,
            seed=seed,
            epochs=args.epochs,
            workers=args.workers,
            warm_start=[SOURCE] if warm else None,
            warm_start_top=args.warm_start_top if warm else None,
            data_dir=args.data_dir,
            data_limit=args.data_limit,
            quiet=True,
        )
        study = stored(args.storage, name)
    if study is None:
        raise SystemExit(f"the search of {name!r} stored nothing")
    return study


def row(arm: str, seed: int, study: optuna.Study, threshold: float) -> dict:
    trials = finished(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = min(complete, key=lambda t: t.value) if complete else None
    record = TrialRecord.of(best) if best else None
    return {
        "arm": arm,
        "seed": seed,
        "study": study.study_name,
        "trials": len(trials),
        "reached_at": reached_at(trials, threshold),
        "best_val_loss": best.value if best else None,
        "best_trial": best.number if best else None,
        "best_shape": f"{record.profile} {list(record.widths)}" if record else "-",
        "from": (record.warm_source or "sampled") if record else "-",
    }


def median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", required=True, help="an Optuna storage URL for the studies (kept, resumable)")
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--source-budget", type=int, default=50_000)
    parser.add_argument("--seeds", default="0,1,2", help="the search seeds, separated by commas")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=None, help="default: the search's own")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--warm-start-top", type=int, default=None, help="default: the search's own")
    parser.add_argument("--threshold", type=float, default=0.070, help="the validation loss to reach")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-limit", type=int, default=None, help="train on this many images (a quick run)")
    parser.add_argument("--no-table", action="store_true", help="print only; leave docs/bench/warm_start.md")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    run_arm(args, SOURCE, args.source_budget, 0, warm=False)
    rows = []
    for seed in seeds:
        for arm, warm in (("warm", True), ("cold", False)):
            study = run_arm(args, f"{arm}-{seed}", args.budget, seed, warm)
            rows.append(row(arm, seed, study, args.threshold))

    header = ["arm", "seed", "trials", f"trials to reach {args.threshold:.3f}", "best val loss", "best trial"]
    cells = [
        [
            r["arm"],
            r["seed"],
            r["trials"],
            r["reached_at"] or "-",
            f"{r['best_val_loss']:.4f}" if r["best_val_loss"] is not None else "-",
            f"#{r['best_trial']} {r['best_shape']} ({r['from']})",
        ]
        for r in rows
    ]
    for arm in ("warm", "cold"):
        mine = [r for r in rows if r["arm"] == arm]
        reach, best = median([r["reached_at"] for r in mine]), median([r["best_val_loss"] for r in mine])
        cells.append(
            [
                f"**{arm}, median**",
                "",
                "",
                f"**{reach:g}**" if reach is not None else "-",
                f"**{best:.4f}**" if best is not None else "-",
                "",
            ]
        )
    table = markdown_table(header, cells, right=[False, True, True, True, True, False])
    title = (
        f"Search at {args.budget:,} parameters, warm-started from `{SOURCE}` ({args.source_budget:,}) or cold; "
        f"{args.trials} trials each{', on ' + str(args.data_limit) + ' images' if args.data_limit else ''}.\n\n"
    )
    publish("warm_start", title + table, argv, write=not args.no_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
