"""What `pip install .` ships: every module, and the study presets found by name from the installed
package; the example notebook runs top to bottom through the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "studies" / "architecture-search.ipynb"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("archsearch-*.whl")
    return path


def test_the_wheel_holds_every_module_and_every_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for folder in ("search", "models") for p in (REPO / folder).rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    presets = {f"search/presets/{p.name}" for p in (REPO / "studies").glob("*.toml")}
    assert presets and presets <= names
    assert not [name for name in names if name.endswith((".db", ".ipynb"))]  # studies, not the folder's databases


def test_the_installed_presets_load_by_name(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import json\n"
        "from search.study.config import presets, study_from_dict, load_toml\n"
        "from search.study.grid import config_from_dict\n"
        "found = presets()\n"
        "loaded = {name: (config_from_dict if name == 'ksweep' else study_from_dict)(load_toml(name), name).name\n"
        "          for name in found}\n"
        "print(json.dumps({'paths': [str(p) for p in found.values()], 'loaded': loaded}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}  # the wheel's copy comes before the checkout's
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["paths"] and all(path.startswith(str(site)) for path in result["paths"])
    assert set(result["loaded"]) == {p.stem for p in (REPO / "studies").glob("*.toml")}


def test_a_checkout_finds_the_presets_in_its_studies_folder():
    from search.study.config import preset_folder, presets

    assert preset_folder() is not None
    assert presets()["profiles-100k"].read_bytes() == (REPO / "studies" / "profiles-100k.toml").read_bytes()


def test_a_preset_name_never_reaches_outside_the_presets(tmp_path, monkeypatch):
    from search.errors import UsageError
    from search.study.config import load_toml

    monkeypatch.chdir(tmp_path)
    for name in ("../studies/profiles-50k", "profiles-50k/../ksweep", "/profiles-50k"):
        with pytest.raises(UsageError, match=r"not found; give the path of a \.toml file or a preset: ksweep"):
            load_toml(name)


def test_the_notebook_runs_top_to_bottom(tmp_path, mnist_root, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # kept cleared
    # The kernel inherits this process's environment.
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    monkeypatch.setenv("ARCHSEARCH_NOTEBOOK_STORAGE", f"sqlite:///{tmp_path / 'nb.db'}")
    monkeypatch.setenv("ARCHSEARCH_NOTEBOOK_LIMIT", "200")
    client = NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.monotonic()
    client.execute()
    seconds = time.monotonic() - start
    errors = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, errors
    shown = [out for cell in notebook.cells for out in cell.get("outputs", []) if "data" in out]
    assert sum("application/vnd.plotly.v1+json" in out.data for out in shown) == 2  # the k-sweep and the search
    assert any("text/html" in out.data for out in shown)  # a DataFrame
    print(f"notebook executed in {seconds:.1f} s")
