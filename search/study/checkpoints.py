"""Best-model weights kept in Optuna's artifact store, so any storage URL can find them."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from search.errors import UsageError, worded
from search.study.storage import disk_full

if TYPE_CHECKING:
    from torch import nn

MODEL_FILE = "model.pt"


def artifact_store(directory: str | Path) -> FileSystemArtifactStore:
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        folder = worded(cli="--artifacts DIR", api="artifacts=DIR")
        raise UsageError(f"cannot create artifact folder {path}: {error.strerror}; pass {folder}") from None
    return FileSystemArtifactStore(path)


def upload_model(
    trial: optuna.Trial, store: FileSystemArtifactStore, model: nn.Sequential, activation: str, metadata: dict
) -> str:
    from models.mlp import save_model  # torch: only a trial that trained gets here

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / MODEL_FILE
        save_model(model, activation, path, {"metadata": metadata})
        try:
            return upload_artifact(artifact_store=_WholeWrites(store), file_path=str(path), study_or_trial=trial)
        except OSError as error:  # a full disk, say: the trial fails and the study resumes once there is room
            folder = getattr(store, "_base_path", "the artifact folder")  # private in Optuna: only named in a message
            if error.errno in (errno.ENOSPC, errno.EDQUOT) and isinstance(folder, str | Path):
                raise disk_full(Path(folder)) from None
            raise UsageError(f"cannot save the model in {folder}: {error.strerror or error}") from None


class _WholeWrites:
    """An artifact store whose failed write (a full disk, say) leaves no truncated model file behind:
    Optuna's store writes into the artifact's final name, and a cut-off file there would be kept."""

    def __init__(self, store: FileSystemArtifactStore) -> None:
        self._store = store

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        try:
            self._store.write(artifact_id, content_body)
        except BaseException:
            with contextlib.suppress(Exception):
                self._store.remove(artifact_id)
            raise

    def remove(self, artifact_id: str) -> None:
        self._store.remove(artifact_id)


def download_model(
    storage: optuna.storages.BaseStorage,
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    directory: str | Path,
    destination: str | Path,
) -> None:
    """Copy the trial's checkpoint to `destination`, replacing a file that is already there."""
    metas = [m for m in get_all_artifact_meta(trial, storage=storage) if m.filename == MODEL_FILE]
    if not metas:
        raise UsageError(f"trial {trial.number} of study {study.study_name} has no saved model")
    target = Path(destination)
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {target}: folder {target.parent} does not exist")
    store = FileSystemArtifactStore(Path(directory))
    try:
        with tempfile.TemporaryDirectory(dir=target.parent) as folder:
            staged = Path(folder) / MODEL_FILE
            download_artifact(artifact_store=store, file_path=str(staged), artifact_id=metas[-1].artifact_id)
            os.replace(staged, target)
    except (FileNotFoundError, ArtifactNotFound):
        raise UsageError(
            f"the model of trial {trial.number} is missing from {directory}; "
            f"pass {worded(cli='--artifacts DIR', api='artifacts=DIR')}, the folder the study saved its models in"
        ) from None
    except OSError as error:
        raise UsageError(f"cannot write {target}: {error.strerror}") from None
