"""Sim-to-real refinement benchmark: does refining scene-engine frames toward a real camera close the domain gap,
and does a detector trained on refined frames do better on real footage?

1. Trains a refiner (``python -m synthetic.refine train``, MLflow-tracked; ``--mode cut`` by default, with
   SimGAN-style self-regularization ``--self-reg``; ``cyclegan``; or ``camera``, a learned camera: blur, colour,
   tone curves and noise, which cannot move anything; what it learned is reported under ``refiner.camera``) on
   the frames of the first 32 of the 40 scenes the detection recipe generates (``data=people_mixed``, 640x360)
   against unlabelled frames of a real camera, ``--target``:
   ``pets`` (default): PETS 2009 S3-MF1 frames 1-79, the detectors' real training camera;
   ``tud``: TUD-Campus frames 1-50, the detectors' test camera (unsupervised domain adaptation: the refiner sees
   test frames without their labels; transductive, say so when quoting it).
2. Refines all 40 scenes (``data=people_refined``: ``RefinedSceneSource``, cached), checks geometry (edge F1
   inside the labelled boxes, against a 3-px shifted control) and re-id separability of person crops.
3. Domain gap: a small CNN on 64-px crops learns real (the target's training frames + frames of both ``clip``
   videos) vs synthetic (scenes 0-31), then scores frames nobody trained on: synthetic scenes 32-39 vs the
   target camera's held-out frames (PETS 80-107 / TUD 51-71) -> balanced accuracy, once on raw and once on
   refined frames (same settings; 0.5 = indistinguishable): ``domain_acc_raw`` / ``domain_acc_refined``. The
   same classifiers are also scored against the other camera (``*_unseen_camera``): there a low number can also
   mean the classifier did not learn "real" beyond its training cameras (look at ``accuracy_real``).
4. Downstream: the detection bench machinery (bench/_detection_runs.py, same budget, same model, cached)
   trains a detector on raw synthetic frames only and one on refined synthetic frames only
   (``data.mix.synthetic_fraction=1.0``; PETS only validates), on every ``--seeds`` seed, all tested on
   TUD-Campus (``--mixed`` adds the real + synthetic 50:50 pair). A seed sets the detector's initialisation and
   the scene engine's seed: each seed renders its own 40 scenes, which the refiner (trained on seed 0's scenes)
   refines. AP means over the seeds, each seed under ``detection.per_seed``: the spread between seeds is as large
   as the effects measured here, so ``detection.paired`` compares the two per seed (refined - raw: mean, median,
   standard error, t, seeds up/down, and a sign-flip permutation p that assumes no distribution).

``--accelerator gpu`` runs the refiner, the refinement and the detectors on the GPU (bf16 mixed precision;
``--workers 8`` for the detectors' data loaders there). ``--parallel N`` trains N detectors at once, each in its
own process (for a machine with many cores; each run first renders its seed's scenes on one core). On 2 CPU
cores the defaults took 43 minutes.

Prints one JSON line last (``domain_acc_raw``, ``domain_acc_refined``, ``ap50_raw_synthetic``,
``ap50_refined_synthetic``, ...) and writes bench/results/refine.json.

    .venv/bin/python bench/refine.py [--mode cut|cyclegan|camera] [--target pets|tud] [--self-reg 10]
        [--seeds 0 1 2] [--accelerator gpu] [--parallel 1]
        [--crop 64 --ngf 8 --refiner-steps 250 --refiner-epochs 6] [--epochs 8 --steps 40] [--mixed]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _detection_runs import RESULTS, VARIANTS, base_overrides, paired_comparison, train_grid  # noqa: E402

from vision.utils.io import atomic_write_json  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PETS = SHARED / "pets2009_s3mf1" / "img"
TUD = SHARED / "tud_campus" / "img1"
CLIPS = [SHARED / "clip" / "one-by-one-person-detection.mp4", SHARED / "clip" / "car-detection.mp4"]
# The real camera the refiner learns to imitate (unlabelled frames) and the frames of it held out from the refiner
# and the domain classifier; the other camera is the "unseen camera" of the domain measure.
TARGETS = {
    # PETS 2009 S3-MF1: the detectors' real training camera
    "pets": {"train": [str(PETS / "frame_00[0-7][0-9].jpg")],                               # frames 1-79
             "held_out": [str(PETS / "frame_00[89][0-9].jpg"), str(PETS / "frame_010[0-9].jpg")],  # 80-107
             "unseen": [str(TUD)],
             "train_name": "PETS frames 1-79", "held_out_name": "PETS frames 80-107", "unseen_name": "TUD-Campus"},
    # TUD-Campus: the detectors' test camera; its labels are never read, but frames 1-50 of the 71 that the
    # detectors are tested on train the refiner (unsupervised domain adaptation: transductive)
    "tud": {"train": [str(TUD / "00000[1-9].jpg"), str(TUD / "0000[1-4][0-9].jpg"), str(TUD / "000050.jpg")],
            "held_out": [str(TUD / "00005[1-9].jpg"), str(TUD / "00006[0-9].jpg"), str(TUD / "00007[01].jpg")],
            "unseen": [str(PETS)], "train_name": "TUD-Campus frames 1-50", "held_out_name": "TUD-Campus frames 51-71",
            "unseen_name": "PETS 2009"},
}
SPLIT = 0.8  # the first 80% of the scenes train the refiner and the domain classifier, the rest is held out


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import vision.config  # noqa: F401 - resolvers

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=overrides)


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _scenes(root: Path, lo: int, hi: int) -> list[Path]:
    return [root / f"scene_{i:03d}" for i in range(lo, hi)]


def train_refiner(scene_root: Path, n_train: int, args) -> dict:
    from synthetic.refine.run import train

    scenes = [str(s) for s in _scenes(scene_root, 0, n_train)]
    real = TARGETS[args.target]["train"]
    overrides = ["data.synthetic=[" + ",".join(f"'{s}'" for s in scenes) + "]",
                 "data.real=[" + ",".join(f"'{r}'" for r in real) + "]",
                 f"data.crop_size={args.crop}", f"data.batch_size={args.refiner_batch}",
                 f"data.steps_per_epoch={args.refiner_steps}", f"trainer.max_epochs={args.refiner_epochs}",
                 "data.max_frames=400", f"model.mode={args.mode}", f"model.ngf={args.ngf}",
                 f"model.n_blocks={args.n_blocks}", f"model.lambda_self_reg={args.self_reg}",
                 "trainer.enable_progress_bar=false", "seed=0", f"trainer.accelerator={args.accelerator}"]
    from synthetic import __version__

    # keyed by the refiner's own code and config (not by unrelated edits elsewhere in the repository), so an
    # interrupted training continues from its last checkpoint
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((REPO / "synthetic" / "refine").glob("*.py")))
                          + (REPO / "conf" / "refine.yaml").read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps([overrides, code, __version__]).encode()).hexdigest()[:10]
    cache = RESULTS / f"refiner-run-{key}.json"
    if cache.is_file() and not args.fresh and Path(json.loads(cache.read_text())["checkpoint"]).is_file():
        _log(f"reusing the refiner from {cache.name}")
        return json.loads(cache.read_text())
    out = RESULTS / f"refiner-{key}"
    last = out / "checkpoints" / "last.ckpt"
    resume = [f"resume={last}"] if last.is_file() and not args.fresh else []  # an interrupted run continues
    if resume:
        _log(f"continuing the interrupted refiner training from {last}")
    cfg = _compose("refine", [*overrides, *resume, f"run_name=bench-refiner-{key}", f"paths.output_dir={out}",
                              f"paths.work_dir={REPO}"])
    _log(f"training the refiner ({args.mode}, {args.refiner_epochs} x {args.refiner_steps} steps)")
    t0 = time.time()
    result = train(cfg)
    result["wall_s"] = round(time.time() - t0, 1)
    atomic_write_json(cache, result)
    return result


def _frames(inputs, side: str, max_frames: int | None = None, frames_per_video: int = 40):
    from synthetic.refine.data import load_frames

    return load_frames([str(i) for i in inputs], side, max_frames, frames_per_video).images


def domain_gap(raw_root: Path, refined_root: Path, n_train: int, n_scenes: int, args) -> dict:
    from synthetic.refine.domain import evaluate_domain, train_domain_classifier

    target = TARGETS[args.target]
    real_train = _frames(target["train"], target["train_name"])
    for clip in CLIPS:
        real_train += _frames([clip], clip.name, frames_per_video=40)
    real_unseen = _frames(target["unseen"], target["unseen_name"])
    real_held = _frames(target["held_out"], target["held_out_name"])
    out = {}
    for name, root in (("raw", raw_root), ("refined", refined_root)):
        syn_train = _frames(_scenes(root, 0, n_train), f"{name} training scenes", 160)
        syn_test = _frames(_scenes(root, n_train, n_scenes), f"{name} held-out scenes", 96)
        t0 = time.time()
        model, record = train_domain_classifier(syn_train, real_train, args.domain_crop, args.domain_steps, 32,
                                                seed=0)
        out[name] = {"unseen_camera": evaluate_domain(model, syn_test, real_unseen, args.domain_crop),
                     "held_out": evaluate_domain(model, syn_test, real_held, args.domain_crop),
                     **record, "wall_s": round(time.time() - t0, 1)}
        _log(f"domain classifier on {name} frames: {out[name]['held_out']['accuracy']} ({target['held_out_name']}), "
             f"{out[name]['unseen_camera']['accuracy']} ({target['unseen_name']}, unseen)")
    return out


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4)


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="cut", choices=["cut", "cyclegan", "camera"],
                    help="camera: the learned camera model (blur, colour, tone, noise), which cannot move anything")
    ap.add_argument("--target", default="pets", choices=sorted(TARGETS),
                    help="the real camera the refiner imitates: pets (the detectors' real training camera) or tud "
                         "(their test camera: its unlabelled frames 1-50, transductive)")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--ngf", type=int, default=8)
    ap.add_argument("--n-blocks", type=int, default=4)
    ap.add_argument("--self-reg", type=float, default=None,
                    help="model.lambda_self_reg (coarse colour L1 to the input; 0 lets the refiner tint whole frames); "
                         "default 10, 0 for --mode camera (its colour change is what it learns)")
    ap.add_argument("--refiner-batch", type=int, default=4)
    ap.add_argument("--refiner-steps", type=int, default=250, help="refiner steps per epoch")
    ap.add_argument("--refiner-epochs", type=int, default=6)
    ap.add_argument("--domain-steps", type=int, default=400)
    ap.add_argument("--domain-crop", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8, help="detector epochs (bench/_detection_runs.py)")
    ap.add_argument("--steps", type=int, default=40, help="detector steps per epoch")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="detector training seeds (means reported)")
    ap.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"],
                    help="gpu: the refiner, the refinement and the detectors run on the GPU (bf16 mixed precision)")
    ap.add_argument("--workers", type=int, default=0, help="detector data loader workers")
    ap.add_argument("--parallel", type=int, default=1,
                    help="detector runs trained at once, each in its own process (a GPU machine with many cores)")
    ap.add_argument("--mixed", action="store_true", help="also train real + raw / refined synthetic 50:50")
    ap.add_argument("--fresh", action="store_true", help="retrain the refiner and the detectors")
    args, extra = ap.parse_known_args(argv)
    if args.self_reg is None:
        args.self_reg = 0.0 if args.mode == "camera" else 10.0
    missing = [str(p) for p in (PETS, TUD, *CLIPS) if not p.exists()]
    if missing:
        print(json.dumps({"skipped": f"absent: {', '.join(missing)}"}))
        return {}
    from hydra.utils import instantiate

    from synthetic.refine.geometry import dataset_geometry, reid_separability

    t_start = time.time()
    RESULTS.mkdir(parents=True, exist_ok=True)
    extra = [*extra, f"data.num_workers={args.workers}", f"trainer.accelerator={args.accelerator}"]
    # the raw scenes exactly as the detection runs build them
    det_overrides = base_overrides("tud_campus", args.epochs, args.steps, args.size, extra)
    raw_src = instantiate(_compose("train", det_overrides + VARIANTS["synthetic_only"]).data.sources.synthetic)
    raw_root = raw_src.ensure()
    n_scenes = int(raw_src.params["scenes"])
    n_train = max(1, min(n_scenes - 1, int(round(SPLIT * n_scenes))))
    refiner = train_refiner(raw_root, n_train, args)
    ckpt = refiner["checkpoint"]
    refined_variant = ["data=people_refined", f"data.sources.synthetic.refiner={ckpt}",
                       f"data.sources.synthetic.device={'cuda' if args.accelerator == 'gpu' else 'cpu'}"]
    variants = {"synthetic_only": VARIANTS["synthetic_only"],
                "synthetic_refined": [*refined_variant, "data.mix.synthetic_fraction=1.0"]}
    if args.mixed:
        variants.update(mixed=VARIANTS["mixed"], mixed_refined=[*refined_variant, "data.mix.synthetic_fraction=0.5"])
    t0 = time.time()
    ref_src = instantiate(_compose("train", det_overrides + variants["synthetic_refined"]).data.sources.synthetic)
    fresh_refine = not (ref_src.root / "annotations.json").is_file()
    refined_root = ref_src.ensure()
    refine_s = round(time.time() - t0, 1) if fresh_refine else None
    refinement = json.loads((refined_root / "refinement.json").read_text())
    _log(f"refined {refinement['images']} frames into {refined_root.name} ({refine_s} s)")
    geometry = dataset_geometry(raw_root, refined_root, max_images=48)
    reid = reid_separability(raw_root, refined_root, min_height=48.0)
    domain = domain_gap(raw_root, refined_root, n_train, n_scenes, args)
    per_seed = train_grid("tud_campus", args.epochs, args.steps, args.size,
                          {str(seed): [*extra, f"seed={seed}"] for seed in args.seeds},
                          variants, fresh=args.fresh, parallel=args.parallel)

    def scores(name: str, key: str) -> list[float]:  # one per seed, in seed order
        return [runs[name]["test"][key] for runs in per_seed.values()]

    def ap(name: str, key: str = "ap50") -> float:
        return _mean(scores(name, key))

    first = next(iter(per_seed.values()))
    paired = {key: paired_comparison(scores("synthetic_only", key), scores("synthetic_refined", key))
              for key in ("ap50", "ap")}
    for key, c in paired.items():
        _log(f"{key} refined - raw over {c['n']} seeds: {c['mean_diff']:+.4f} (se {c['se']}, median "
             f"{c['median_diff']:+.4f}, {c['up']} up / {c['down']} down, sign-flip p {c['p_sign_flip']})")
    target = TARGETS[args.target]
    result = {
        "domain_acc_raw": domain["raw"]["held_out"]["accuracy"],
        "domain_acc_refined": domain["refined"]["held_out"]["accuracy"],
        "domain_acc_raw_unseen_camera": domain["raw"]["unseen_camera"]["accuracy"],
        "domain_acc_refined_unseen_camera": domain["refined"]["unseen_camera"]["accuracy"],
        "ap50_raw_synthetic": ap("synthetic_only"),
        "ap50_refined_synthetic": ap("synthetic_refined"),
        "ap_raw_synthetic": ap("synthetic_only", "ap"),
        "ap_refined_synthetic": ap("synthetic_refined", "ap"),
        "target": {"name": args.target, "refiner_real_frames": target["train_name"],
                   "domain_held_out_real": target["held_out_name"], "domain_unseen_camera": target["unseen_name"]},
        "domain": {name: {"held_out": d["held_out"], "unseen_camera": d["unseen_camera"],
                          "train_frames": d["train_frames"], "final_train_loss": d["final_train_loss"]}
                   for name, d in domain.items()},
        "domain_classifier": {"crop_size": args.domain_crop, "steps": args.domain_steps, "batch_size": 32,
                              "train_real": f"{target['train_name']} + 40 frames of each clip video",
                              "train_synthetic": f"160 frames of scenes 0-{n_train - 1}",
                              "held_out": f"96 frames of scenes {n_train}-{n_scenes - 1} vs "
                                          f"{target['held_out_name']} / {target['unseen_name']} (unseen camera)"},
        "geometry": geometry,
        "reid": reid,
        "refiner": {"mode": args.mode, "checkpoint": ckpt, "checkpoint_sha256": refiner["checkpoint_sha256"],
                    "mlflow_run_id": refiner["mlflow"]["run_id"], "crop_size": args.crop,
                    **({} if args.mode == "camera" else {"ngf": args.ngf, "n_blocks": args.n_blocks}),
                    "lambda_self_reg": args.self_reg,
                    "steps": args.refiner_steps * args.refiner_epochs,
                    "batch_size": args.refiner_batch, "final_losses": refiner["metrics"],
                    "train_wall_s": refiner.get("wall_s"), "samples": refiner["samples"][-1:],
                    "refine_wall_s": refine_s, "refined_frames": refinement["images"],
                    "real_frames": f"{target['train_name']} (unlabelled)",
                    "synthetic_frames": f"scenes 0-{n_train - 1}",
                    **({"camera": refinement["refiner"]["camera"]} if args.mode == "camera" else {})},
        "detection": {"test_scene": "tud_campus", "train_real_scene": "pets2009_s3mf1 (validation only here)",
                      "seeds": args.seeds,
                      "budget": {"epochs": args.epochs, "steps_per_epoch": args.steps, "input_size": args.size,
                                 "images_seen": first["synthetic_only"]["images_seen"]},
                      "per_seed": {seed: {k: {"ap50": round(v["test"]["ap50"], 4), "ap": round(v["test"]["ap"], 4),
                                              "wall_s": v["wall_s"]} for k, v in runs.items()}
                                   for seed, runs in per_seed.items()},
                      # refined minus raw, paired by seed: is the difference larger than the seed-to-seed spread?
                      "paired": paired,
                      "ap50_by_height": {k: {h: _mean([runs[k]["test"]["size"][h]["ap50"]
                                                       for runs in per_seed.values()])
                                             for h in first[k]["test"]["size"]} for k in first}},
        "accelerator": args.accelerator,
        "wall_s": round(time.time() - t_start, 1),
    }
    if args.mixed:
        result["ap50_raw_mixed"] = ap("mixed")
        result["ap50_refined_mixed"] = ap("mixed_refined")
    atomic_write_json(RESULTS / "refine.json", result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
