"""Both notebooks run top to bottom (nbclient, python3 kernel) in a temporary copy of the repository, so the
results they make there leave no file in the repository itself."""
from __future__ import annotations

import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

IGNORED = shutil.ignore_patterns(".git", "results", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", "scratch",
                                 ".venv", ".device", ".whl", "*.tmp")


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    dest = tmp_path_factory.mktemp("nb") / "repo"
    shutil.copytree(ROOT, dest, ignore=IGNORED)
    return dest


def _outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text += [out.get("text", ""), str(data.get("text/plain", "")), str(data.get("text/markdown", ""))]
    return "\n".join(text)


@pytest.mark.parametrize("name, made, expected", [
    ("results_walkthrough.ipynb", "results/notebook-tiny", ["tables: table_a, table_b", "selection_maps.png"]),
    ("optuna_walkthrough.ipynb", "results/notebook-optuna", ["best trial #", "nothing to run", "5 complete trials"]),
])
def test_notebook_runs_top_to_bottom(copy, name, made, expected):
    existed = (ROOT / made).exists()
    nb = nbformat.read(copy / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(copy / "notebooks")}}).execute()
    text = _outputs(nb)
    for snippet in expected:
        assert snippet in text, f"{name}: {snippet!r} not in its outputs"
    assert (copy / made / "runs").is_dir()  # the results went to the copy ...
    assert (ROOT / made).exists() == existed  # ... and not to the repository
