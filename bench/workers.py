"""Trials per minute with 1, 2 and 4 workers on one study, on SQLite and on PostgreSQL.

    .venv/bin/python bench/workers.py                      # both storages, 1,2,4 workers, 30 trials each
    .venv/bin/python bench/workers.py --storages sqlite --workers 1,2 --trials 12

Each run makes a fresh study of short trials (a small data subset, one epoch) with a one-trial
`archsearch search`, then starts W `archsearch worker` processes on it at once, as on W machines.
"trials/min" counts the finished trials between the first one's start and the last one's end (every
worker runs by then: what the storage and the CPU allow); "end to end" divides them by the workers'
whole wall time, process and data start-up included.
PostgreSQL: the URL in ARCHSEARCH_TEST_PG, else the local server of .ci/postgres.sh (started if needed).
The trials are CPU-bound, so the scaling is capped by the machine's cores: note them beside the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.stamp import command, markdown_table, write_table  # noqa: E402
from search.study.storage import open_storage  # noqa: E402

ARCHSEARCH = Path(sys.executable).with_name("archsearch")


def postgres_url() -> str:
    url = os.environ.get("ARCHSEARCH_TEST_PG")
    if url:
        return url
    started = subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh")], capture_output=True, text=True)
    if started.returncode != 0:
        raise SystemExit(f"bench: no PostgreSQL: {started.stderr.strip()}")
    return started.stdout.strip()


def run_once(url: str, workers: int, args: argparse.Namespace, folder: Path) -> dict:
    """A fresh study (made by a one-trial search), then W `archsearch worker` processes started together."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ARCHSEARCH_DATA": args.data}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    create = [
        str(ARCHSEARCH), "search", "--study", name, "--storage", url, "--trials", "1", "--epochs", "1",
        "--data-limit", str(args.data_limit), "--budget", "20000", "--max-depth", "3", "--sampler", args.sampler,
        "--device", "cpu",
    ]  # fmt: skip
    made = subprocess.run(create, capture_output=True, text=True, env=env, cwd=folder)
    if made.returncode != 0:
        raise SystemExit(f"bench: {' '.join(create)} failed:\n{made.stderr}")
    target = str(args.trials + 1)
    started = time.perf_counter()
    join = [str(ARCHSEARCH), "worker", "--study", name, "--storage", url, "--trials", target, "--device", "cpu"]
    processes = [
        subprocess.Popen(
            [*join, "--worker-index", str(index), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=folder,
        )
        for index in range(workers)
    ]
    errors = [process.communicate()[1] for process in processes]
    wall = time.perf_counter() - started
    if any(process.returncode for process in processes):
        raise SystemExit("bench: a worker failed:\n" + "\n".join(errors))
    storage = open_storage(url)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.number > 0]
    first = min(t.datetime_start for t in finished)
    last = max(t.datetime_complete for t in finished)
    optuna.delete_study(study_name=name, storage=storage)
    return {
        "finished": len(finished),
        "surplus": sum(t.state == TrialState.FAIL for t in trials),
        "steady_per_min": 60 * len(finished) / (last - first).total_seconds(),
        "end_to_end_per_min": 60 * len(finished) / wall,
        "wall": wall,
        "locked": any("database is locked" in error for error in errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storages", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--data-limit", type=int, default=500)
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting; the median is shown")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every process (default: torch's own)")
    parser.add_argument("--data", default=os.environ.get("ARCHSEARCH_DATA", str(REPO.parent / "shared" / "data")))
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    print(
        f"{os.cpu_count()} CPU cores; {args.trials} trials of 1 epoch on {args.data_limit} images, "
        f"sampler {args.sampler}, OMP_NUM_THREADS={args.threads or 'default'}, median of {args.repeat} runs"
    )
    header = ("storage", "workers", "trials/min", "scaling", "end to end", "wall s", "surplus")
    print(f"{header[0]:<11} " + " ".join(f"{h:>{max(len(h), 7)}}" for h in header[1:]))
    table = []
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.storages.split(","):
            base = None
            for workers in counts:
                url = f"sqlite:///{Path(folder) / f'{kind}-{workers}.db'}" if kind == "sqlite" else postgres_url()
                runs = [run_once(url, workers, args, Path(folder)) for _ in range(args.repeat)]
                row = sorted(runs, key=lambda r: r["steady_per_min"])[len(runs) // 2]  # the median run
                base = base or row["steady_per_min"]
                print(
                    f"{kind:<11} {workers:>7} {row['steady_per_min']:>10.1f} {row['steady_per_min'] / base:>6.2f}x "
                    f"{row['end_to_end_per_min']:>10.1f} {row['wall']:>7.1f} {row['surplus']:>7}"
                    + ("  DATABASE IS LOCKED" if any(r["locked"] for r in runs) else ""),
                    flush=True,
                )
                table.append(
                    [
                        kind,
                        workers,
                        f"{row['steady_per_min']:.0f}",
                        f"{row['steady_per_min'] / base:.2f}x",
                        f"{row['end_to_end_per_min']:.0f}",
                        f"{row['wall']:.1f}",
                        row["surplus"],
                    ]
                )
    intro = (
        f"Trials per minute, {args.trials} trials of 1 epoch on {args.data_limit} images, sampler {args.sampler}, "
        f"median of {args.repeat} runs.\n\n"
    )
    write_table(
        "workers",
        intro + markdown_table(header, table, right=[False, *(True for _ in header[1:])]),
        command("workers.py"),
        args.threads or "torch's default number of",
    )


if __name__ == "__main__":
    main()
