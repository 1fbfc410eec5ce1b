"""The main job of the README: train, export and run a classifier end to end on generated data.

    python -m vision.demo [train overrides ...]

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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = list(sys.argv[1:] if argv is None else argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
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
