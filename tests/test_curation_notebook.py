"""The curation walkthrough notebook runs top to bottom on tiny data (real PETS frames + synthetic scenes),
against the private MongoDB of the curation tests (``tests/curation_support.py``)."""
from __future__ import annotations

import json
import uuid

import nbformat
from nbclient import NotebookClient

import curation_support
from conftest import REPO, shared

mongo_uri, fo = curation_support.mongo_uri, curation_support.fo


def test_curation_notebook_executes(fo, tmp_path, monkeypatch):
    shared("pets2009_s3mf1")
    name = f"test-curation-nb-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("VISION_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("VISION_NOTEBOOK_WORKDIR", str(tmp_path))
    monkeypatch.setenv("VISION_NOTEBOOK_DATASET", name)
    monkeypatch.setenv("VISION_CACHE_DIR", str(tmp_path / "cache"))
    nb = nbformat.read(REPO / "notebooks" / "curation.ipynb", as_version=4)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
        outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        assert "snapshot id in the card: True" in outputs
        assert "mAP" in outputs and "likely_mistakes" in outputs
        snaps = sorted((tmp_path / "snapshots").iterdir())
        assert [p.name.split("-")[0] for p in snaps] == ["v1", "v2"]
        v2 = json.loads((snaps[1] / "manifest.json").read_text())
        assert v2["parent"]["name"] == snaps[0].name and v2["formats"] == ["coco", "yolo"]
        assert list((tmp_path / "bundles").glob("curation-*/bundle.json"))
        ds = fo.load_dataset(name)
        assert set(ds.distinct("kind")) == {"real", "synthetic"} and "leak" in ds.count_sample_tags()
        assert {"likely_mistakes", "errors", "duplicates", "leaks"} <= set(ds.list_saved_views())
    finally:
        if fo.dataset_exists(name):
            fo.load_dataset(name).delete()
