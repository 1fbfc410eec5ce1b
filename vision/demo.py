"""The main job of the README: train, export and run a classifier end to end on generated data.

    python -m vision.demo [classification|detection] [train overrides ...]

No external files: the camera-health frames come from the built-in generator. Prints where the
MLflow run, the edge bundle and the runtime's results are.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import vision.config  # noqa: F401  (resolvers)
from vision.config.resolvers import REPO_ROOT
from vision.errors import VisionError


def render_demo_video(path: Path, seed: int = 9001, frames: int = 40, fps: float = 5.0) -> Path:
    """A short street scene from the engine (a seed no training scene uses) as an mp4 for the runtime."""
    import cv2

    from synthetic.scene import Scene, SceneConfig

    cfg = SceneConfig(seed=seed, cameras=[{"x": 0.0, "y": -12.0, "height": 4.0, "yaw": 90.0, "tilt": 14.0,
                                           "hfov": 70.0}],
                      resolution=(640, 360), duration=frames, fps=fps, surface="pavement", world_size=30.0,
                      crowd_density=4.0, num_vehicles=0, randomization={"time_of_day": "day"})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 360))
    try:
        for fr in Scene(cfg).frames(with_mask=False):
            writer.write(cv2.cvtColor(fr.image, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    tmp.replace(path)
    return path


def detection_demo(overrides: list[str], stamp: str) -> int:
    """Detector on scene-engine data: train -> export (AP parity gate) -> the runtime on a rendered video
    with privacy pixelation and a counting zone."""
    from vision.export.pipeline import run as run_export
    from vision.runtime.__main__ import main as runtime_main
    from vision.training import run as run_train

    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            tcfg = compose("train", overrides=["experiment=detection_synthetic", f"run_name=demo-det-{stamp}",
                                               *overrides])
            t0 = time.time()
            score = run_train(tcfg)
            out_dir = Path(tcfg.paths.output_dir)
            run = json.loads((out_dir / "run.json").read_text())
            ecfg = compose("export", overrides=[f"checkpoint={run['best_checkpoint']}", f"name=demo-det-{stamp}"])
            bundle = run_export(ecfg)
    except VisionError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    video = render_demo_video(out_dir / "demo_scene.mp4")
    zones = out_dir / "zones.yaml"
    zones.write_text("zones: [{name: centre, polygon: [[160, 120], [480, 120], [480, 360], [160, 360]]}]\n"
                     "lines: [{name: crossing, points: [[320, 0], [320, 360]]}]\nlabels: [person]\n")
    results, annotated, timings = out_dir / "runtime_results.jsonl", out_dir / "annotated_private.mp4", \
        out_dir / "runtime_timings.json"
    rc = runtime_main([str(bundle), str(video), "--out", str(results), "--precision", "int8", "--privacy",
                       "--zones", str(zones), "--video-out", str(annotated), "--timings", str(timings)])
    recs = [json.loads(line) for line in results.read_text().splitlines()]
    doc = json.loads((bundle / "bundle.json").read_text())
    tim = json.loads(timings.read_text())
    ap50 = doc["metrics"]["test_ap50"]
    tracking = tcfg.logger.tracking_uri if tcfg.get("logger") else None
    print("\n" + "=" * 72)
    print(f"detection demo finished in {time.time() - t0:.0f} s")
    print(f"  training run     : {out_dir}  (best val/ap50 {score:.3f}; held-out synthetic scenes)")
    print(f"  MLflow run       : {run['mlflow']['run_id']}  in {tracking}")
    print(f"  edge bundle      : {bundle}")
    print(f"                     test AP50 torch {ap50['torch']:.3f}, onnx fp32 {ap50['onnx_fp32']:.3f}, "
          f"onnx int8 {ap50['onnx_int8']:.3f}")
    print(f"  runtime          : {results}  ({len(recs)} frames, "
          f"{sum(len(r['detections']) for r in recs)} detections, {tim.get('fps')} frames/s end to end)")
    print(f"                     persons pixelated in {annotated}")
    print("=" * 72)
    return rc


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = list(sys.argv[1:] if argv is None else argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if overrides and overrides[0] in ("detection", "classification"):
        if overrides.pop(0) == "detection":
            return detection_demo(overrides, stamp)
    from vision.export.pipeline import run as run_export
    from vision.runtime.__main__ import main as runtime_main
    from vision.training import run as run_train

    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            tcfg = compose("train", overrides=["experiment=camera_health", f"run_name=demo-{stamp}", *overrides])
            t0 = time.time()
            score = run_train(tcfg)
            out_dir = Path(tcfg.paths.output_dir)
            run = json.loads((out_dir / "run.json").read_text())
            ecfg = compose("export", overrides=[f"checkpoint={run['best_checkpoint']}", f"name=demo-{stamp}"])
            bundle = run_export(ecfg)
    except VisionError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    # The runtime on the held-out test images, exactly as a device would run it.
    test_keys = json.loads((out_dir / "splits.json").read_text())["splits"]["test"]
    root = instantiate(tcfg.data.sources.camera_health).root
    files = [str(root / k.split(":", 1)[1]) for k in test_keys]
    results = out_dir / "runtime_results.jsonl"
    rc = runtime_main([str(bundle), *files, "--out", str(results), "--precision", "int8"])
    recs = [json.loads(line) for line in results.read_text().splitlines()]
    correct = sum(Path(r["file"]).parent.name == r.get("label") for r in recs)
    bundle_doc = json.loads((bundle / "bundle.json").read_text())
    tracking = tcfg.logger.tracking_uri if tcfg.get("logger") else None
    print("\n" + "=" * 72)
    print(f"demo finished in {time.time() - t0:.0f} s")
    print(f"  training run     : {out_dir}  (best val/acc {score:.3f})")
    print(f"  MLflow run       : {run['mlflow']['run_id']}  in {tracking}")
    print(f"                     browse: .venv/bin/mlflow ui --backend-store-uri {tracking}")
    print(f"  edge bundle      : {bundle}")
    print(f"                     test top-1 torch {bundle_doc['metrics']['test_top1']['torch']:.3f}, "
          f"onnx fp32 {bundle_doc['metrics']['test_top1']['onnx_fp32']:.3f}, "
          f"onnx int8 {bundle_doc['metrics']['test_top1']['onnx_int8']:.3f}")
    print(f"  runtime results  : {results}  ({correct}/{len(recs)} held-out images correct with int8)")
    print("=" * 72)
    return rc


if __name__ == "__main__":
    sys.exit(main())
