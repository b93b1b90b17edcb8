"""optuna-dashboard on our storage, with the figures it cannot draw itself attached to each study.

Optuna's dashboard reads trials and intermediate values straight from the storage, so a running
search shows up live. Our own figures are snapshots saved into the study, refreshed while the
dashboard runs whenever the number of finished trials changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import optuna_dashboard
import plotly.graph_objects as go
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore

from search.plots import Plot, own_plots
from search.studies import FINISHED, study_names

GRAPH_PREFIX = "archsearch-"
OBJECTIVES = {"grid": "final training loss", "search": "validation loss"}


def attach(study: optuna.Study) -> list[str]:
    """Save (or overwrite) our figures in the study, under stable ids; returns the ids.

    The dashboard draws them in boxes 450 pixels high, so each figure gives up its own height.
    """
    if study.metric_names is None:
        study.set_metric_names([OBJECTIVES[study.user_attrs["kind"]]])
    ids = []
    for plot in (p for p in own_plots(study) if isinstance(p, Plot)):
        ids.append(GRAPH_PREFIX + plot.name)
        figure = go.Figure(plot.figure).update_layout(height=None, title_font_size=14)
        optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=ids[-1])
    return ids


def attach_all(storage, seen: dict[str, int]) -> dict[str, int]:
    """Attach figures to every study whose finished-trial count differs from `seen`; the new counts."""
    counts = {}
    for name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        counts[name] = len(study.get_trials(deepcopy=False, states=FINISHED))
        if seen.get(name) != counts[name] and study.user_attrs.get("kind") in OBJECTIVES:
            attach(study)
    return counts


def keep_attached(storage, seen: dict[str, int], seconds: float, stop: threading.Event) -> None:
    """Refresh the figures every `seconds` until `stop` is set; meant for a daemon thread."""
    while not stop.wait(seconds):
        try:
            seen = attach_all(storage, seen)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            continue  # the database was busy with a worker's write; the next round tries again


def artifact_store(studies: list[optuna.Study], default: Path) -> FileSystemArtifactStore | None:
    """The first study's artifacts folder that exists (saved models), else `default` if it exists."""
    folders = [Path(s.user_attrs["artifacts"]) for s in studies if "artifacts" in s.user_attrs] + [default]
    return next((FileSystemArtifactStore(f) for f in folders if f.is_dir()), None)


def serve(storage, host: str, port: int, store: FileSystemArtifactStore | None) -> None:
    """Block serving the dashboard until interrupted."""
    optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)
