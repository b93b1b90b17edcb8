"""Pieces that the study commands share: options, progress over trials, worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.cli.args import non_negative_int
from search.config import DEFAULT_STORAGE
from search.progress import progress
from search.studies import count_trials, run_until


def add_storage_options(parser, study_required: bool = False) -> None:
    parser.add_argument("--study", required=study_required, help="study name")
    parser.add_argument("--storage", help=f"Optuna storage URL (default {DEFAULT_STORAGE}), or journal:PATH")
    parser.add_argument("--artifacts", help="folder for saved models (default: artifacts/ beside a SQLite database)")


def add_device_option(parser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device")


def add_worker_options(parser) -> None:
    parser.add_argument("--workers", type=non_negative_int, default=1, help="processes working on the study")


def summary_line(trial: FrozenTrial) -> str:
    attrs = trial.user_attrs
    widths = attrs.get("widths")
    shape = f"{attrs.get('profile', 'uniform'):<10} {widths!s:<24} {attrs.get('params', '')!s:>7}"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    if trial.state == TrialState.COMPLETE:
        return (
            f"#{trial.number:<4} {shape}  value {trial.value:.4f}  val loss {attrs.get('val_loss', float('nan')):.4f}"
            f"  val acc {attrs.get('val_accuracy', 0):.2%}  {seconds:.1f} s"
        )
    reason = attrs.get("pruned_reason") or attrs.get("fail_reason") or "failed"
    return f"#{trial.number:<4} {shape}  {trial.state.name.lower()}: {reason}  {seconds:.1f} s"


def _interrupt_once(signum, frame) -> None:
    """Ctrl-C raises KeyboardInterrupt once; later ones (a second press, or the one the search forwards
    to the workers that the terminal already signalled) must not cut short marking the trial failed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_with_progress(study: optuna.Study, objective, target: int, quiet: bool = False) -> None:
    """One worker in this process, with a bar over the study's finished trials and a line per trial."""
    signal.signal(signal.SIGINT, _interrupt_once)
    with progress(target, study.study_name, quiet, unit="trial") as bar:
        bar.update(min(count_trials(study).finished, target))

        def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            if not quiet and not (
                trial.state == TrialState.FAIL and "surplus" in trial.user_attrs.get("fail_reason", "")
            ):
                bar.write(summary_line(trial))
            bar.n = min(count_trials(study).finished, target)
            bar.refresh()

        run_until(study, objective, target, on_trial)


def spawn_workers(count: int, args: list[str]) -> list[subprocess.Popen]:
    """Extra worker processes of this same program, each with its own worker index.

    The cores are shared out: W processes each running torch's default of one thread per core
    oversubscribe the CPU and run many times slower than W processes with cores/W threads each.
    """
    if count < 2:
        return []
    import torch

    threads = max(1, (os.cpu_count() or 1) // count)
    torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "search", "worker", *args, "--worker-index", str(index), "--quiet"], env=env
        )
        for index in range(1, count)
    ]


def stop_workers(workers: list[subprocess.Popen], interrupt: bool) -> None:
    for worker in workers:
        if interrupt and worker.poll() is None:
            worker.send_signal(signal.SIGINT)
    for worker in workers:
        worker.wait()


def resume_hint(command: str, study: str, storage: str) -> str:
    return (
        f"interrupted; the running trial was marked failed. Resume with: {command} --study {study} --storage {storage}"
    )


def storage_url(args, default: str = DEFAULT_STORAGE) -> str:
    return args.storage or default


def artifacts_dir(args, study: optuna.Study | None, url: str) -> Path:
    from search.studies import default_artifacts

    if args.artifacts:
        return Path(args.artifacts)
    if study is not None and "artifacts" in study.user_attrs:
        return Path(study.user_attrs["artifacts"])
    return default_artifacts(url)
