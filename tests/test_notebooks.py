"""The notebooks run top to bottom (tiny settings)."""
from __future__ import annotations


import nbformat
from nbclient import NotebookClient

from conftest import REPO


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("VISION_NOTEBOOK_WORKDIR", str(tmp_path))
    monkeypatch.setenv("VISION_CACHE_DIR", str(tmp_path / "cache"))
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "int8 runtime top-1 on" in outputs
    assert list((tmp_path / "bundles").glob("notebook-*/bundle.json"))
    assert (tmp_path / "mlruns.db").is_file()
