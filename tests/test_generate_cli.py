"""``python -m synthetic``: the Hydra generation job (config group conf/synthetic/)."""
from __future__ import annotations

import json
import subprocess

import pytest
from hydra import compose, initialize_config_dir

from conftest import PY, REPO
from vision.config import validate
from synthetic.generate import GenerateSchema


@pytest.mark.parametrize("preset", ["street", "plaza_crowd", "night_rain"])
def test_presets_validate(preset):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=[f"synthetic={preset}"])
    validate(cfg, GenerateSchema)
    from hydra.utils import instantiate

    instantiate(cfg.synthetic.scene, _convert_="all").validate()


def _gen(cwd, *overrides):
    return subprocess.run([PY, "-m", "synthetic", "progress=false", *overrides], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_generate_writes_labelled_dataset_and_refuses_overwrite(tmp_path):
    proc = _gen(tmp_path, "synthetic=night_rain", "synthetic.scene.duration=3",
                "synthetic.scene.resolution=[320,180]")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "generated" / "night_rain-seed0"
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    assert len(coco["images"]) == 6 and coco["annotations"]
    assert all(im["params"]["time_of_day"] == "night" for im in coco["images"])
    assert (out / "card.yaml").is_file() and (out / "provenance.jsonl").is_file()
    again = _gen(tmp_path, "synthetic=night_rain", "synthetic.scene.duration=3",
                 "synthetic.scene.resolution=[320,180]")
    assert again.returncode == 2 and "never overwritten" in again.stderr


@pytest.mark.parametrize("override, message", [
    ("synthetic.scene.resolution=[0,0]", "SceneConfig.resolution"),
    ("synthetic.scene.crowd_density=-1", "crowd_density"),
    ("+synthetic.scene.tilt=95", "unknown config key 'synthetic.scene.tilt'"),
])
def test_bad_parameters_fail_before_generation(tmp_path, override, message):
    proc = _gen(tmp_path, override)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "generated").exists() or not any((tmp_path / "generated").iterdir())
