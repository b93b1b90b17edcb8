"""A profile search at equal wall time, with and without packing: does `--pack K` find as good a network?

Run as `.venv/bin/python bench/pack_search.py [--seconds 480] [--packs 1,8,auto] [--config profiles-100k]
[--workers 2] [--out DIR]`. For each K, in turn, it runs the real command,
    archsearch search --config CONFIG --workers W --pack K --trials 1000 --storage sqlite:///OUT/packK.db
stops it with SIGINT (Ctrl-C, as a user would) `--seconds` after it started, and reads the study back.
Counted for each: trials finished (complete or pruned) within the time, from the launch on, so the data
loading and the workers' start count too; how many of them completed; trial-epochs trained (epochs that
finished trials reported); the best validation loss among the completed ones, and that trial's test
accuracy (for information: the search chose it by validation loss); the structures it tried (distinct
depth, profile, activation, optimizer and batch size), and the three it tried most; and how many trained
trials joined packs of each size (`--pack auto` measures it per pack; 1: alone). The runs are one after
the other on the same machine, with the same study file and seed; a search is a random process, so one
run each is one sample of each, not a mean.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.study.objective import PACK_PARAMS  # noqa: E402
from search.study.record import TrialRecord  # noqa: E402

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def run(pack: str, args: argparse.Namespace) -> dict:
    url = f"sqlite:///{args.out / f'pack{pack}.db'}"
    name = f"pack{pack}"
    command = [
        str(ROOT / ".venv" / "bin" / "archsearch"), "search", "--config", args.config, "--study", name,
        "--storage", url, "--workers", str(args.workers), "--pack", str(pack), "--trials", "1000",
        "--device", "cpu",
    ]  # fmt: skip
    started = time.time()
    log = open(args.out / f"pack{pack}.log", "w")  # noqa: SIM115 (held for the process's life)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(max(0.0, started + args.seconds - time.time()))
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
    process.wait(timeout=600)
    log.close()
    study = optuna.load_study(study_name=name, storage=url)
    deadline = started + args.seconds
    finished = [
        t for t in study.get_trials(deepcopy=False, states=FINISHED)
        if t.datetime_complete is not None and t.datetime_complete.timestamp() <= deadline
    ]  # fmt: skip
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value) if complete else None
    return {
        "pack": pack,
        "finished": len(finished),
        "complete": len(complete),
        "trial_epochs": sum(len(t.intermediate_values) for t in finished),
        "structures": len({tuple(t.params.get(name) for name in PACK_PARAMS) for t in finished}),
        "most_tried": Counter(tuple(t.params.get(name) for name in PACK_PARAMS) for t in finished).most_common(3),
        "pack_sizes": Counter(TrialRecord.of(t).pack_size or 1 for t in finished if t.intermediate_values),
        "best_val_loss": best.value if best else float("nan"),
        "test_accuracy": TrialRecord.of(best).test_accuracy if best else float("nan"),
        "best": f"#{best.number} {TrialRecord.of(best).profile} {list(TrialRecord.of(best).widths)}" if best else "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=480.0, help="wall time of each search (default 480)")
    parser.add_argument("--packs", default="1,8,auto", help="comma-separated pack sizes or auto (default 1,8,auto)")
    parser.add_argument("--config", default="profiles-100k", help="study file or preset (default profiles-100k)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/pack-search"), help="folder for the databases")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("pack*.db*"):
        stale.unlink()
    print(f"{args.config}, {args.workers} workers, {args.seconds:.0f} s each, load {os.getloadavg()[0]:.2f}")
    header = (
        ("pack", 4), ("finished", 8), ("complete", 8), ("trial-epochs", 12), ("best val loss", 13), ("test acc", 8),
        ("structures", 10),
    )  # fmt: skip
    print(" ".join(f"{name:>{width}}" for name, width in header) + "  best; trials trained by pack size")
    for pack in args.packs.split(","):
        row = run(pack, args)
        sizes = ", ".join(f"{size}: {count}" for size, count in sorted(row["pack_sizes"].items()))
        print(
            f"{row['pack']:>4} {row['finished']:>8} {row['complete']:>8} {row['trial_epochs']:>12} "
            f"{row['best_val_loss']:>13.4f} {row['test_accuracy']:>8.2%} {row['structures']:>10}  "
            f"{row['best']}; {sizes}",
        )
        tried = "; ".join(f"{count} x {' '.join(map(str, structure))}" for structure, count in row["most_tried"])
        print(f"     most tried ({', '.join(PACK_PARAMS)}): {tried}", flush=True)


if __name__ == "__main__":
    main()
