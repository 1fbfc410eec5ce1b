"""Benchmark of the re-identification recipe: held-out real Market-1501 mini identities, PyTorch vs ONNX
fp32 / int8, runtime embeddings per second, and what synthetic identities add to the tiny real set.

Five embedders are trained under the same budget (same steps, same P x K batch, same model, same input
size), each once per seed (``--seeds``, default 0 1 2; every metric of a variant is the mean over its seeds,
``per_seed`` has each): ``real_only`` on the 13 Market-1501 mini training identities; ``mixed`` on those plus
the scene engine's synthetic identities (``data.mix.synthetic_fraction`` = 0.5 of the P identities of every
batch); ``mixed_sprites`` with synthetic identities that wear recoloured real MARS crops (the Market query
identities excluded; skipped without ../shared/data/mars_mini); ``mixed_25`` and ``mixed_sprites_25`` the same
with a synthetic share of 0.25. All are judged on the held-out real Market-1501 mini identities (its own
query / bounding_box_test split: 19 queries) with the **last checkpoint**, never the best-by-validation one:
the real validation set would be 3 held-out identities, which saturates at once (rank-1 1.0 after an epoch)
and selects noise, and the real-only run has no other validation (it trains on every real training identity
and its validation is flagged val_is_test, used for nothing). Note the granularity: one of 19 queries is 5.3
points of rank-1, and the spread between seeds is larger than most differences between variants.
``mars_held_out`` adds a second real test: MARS mini tracklets of the 7 Market query identities it also holds
(no variant trains on them), every sampled crop a query, matches only in another camera (24 queries).

The mixed model of the first seed is exported (fp32 + int8, batch ``--export-batch``, int8 calibrated on identity-balanced
training crops) through the embedding parity gate; rank-1 / mAP / mINP of PyTorch, ONNX fp32 and int8 come
from the gate's own evaluation (the runtime's preprocessing on the original crops), restricted to the real
Market-1501 mini queries against its gallery. Embeddings/s: :class:`vision.runtime.reid.Embedder` with 2
threads on the held-out crops (resize + normalise + inference, batches as exported). The numbers are
measured even if the gate refuses the bundle (then ``bundle`` is null and ``parity_problems`` says why).

Trainings are cached under bench/results/ by a hash of their overrides (``--fresh`` retrains). Prints one
JSON line last and writes bench/results/reid.json.

    .venv/bin/python bench/reid.py [--epochs 8] [--steps 12] [--batch 32] [--size 256 128] [--seeds 0 1 2]
                                   [--fresh] [overrides ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _detection_runs import train_cached  # noqa: E402
from vision.utils.io import atomic_write_json  # noqa: E402

RESULTS = REPO / "bench" / "results"
REAL = "market1501_mini"
VARIANTS = {  # the data each variant trains on (same steps, same batch, same model)
    "real_only": ["data=market1501_mini", "data.split.val_identities=0"],
    "mixed": ["data=reid_mixed", "data.mix.synthetic_fraction=0.5"],
    # synthetic identities wearing recoloured real crops (MARS, test identities excluded)
    "mixed_sprites": ["data=reid_mixed_sprites", "data.mix.synthetic_fraction=0.5"],
    # the same with a quarter of each batch's identities synthetic instead of half
    "mixed_25": ["data=reid_mixed", "data.mix.synthetic_fraction=0.25"],
    "mixed_sprites_25": ["data=reid_mixed_sprites", "data.mix.synthetic_fraction=0.25"],
}
NEEDS_MARS = ("mixed_sprites", "mixed_sprites_25")


def base_overrides(epochs: int, steps: int, batch: int, size: list[int], extra: list[str]) -> list[str]:
    return ["experiment=reid", "logger=none", "trainer.enable_progress_bar=false", "test_after_fit=false",
            f"trainer.max_epochs={epochs}", f"data.batches_per_epoch={steps}", f"data.batch_size={batch}",
            "data.num_instances=4", f"data.preprocess.size=[{size[0]},{size[1]}]", *extra]


def train_variants(epochs: int, steps: int, batch: int, size: list[int], extra: list[str],
                   fresh: bool = False, variants: list[str] | None = None) -> dict[str, dict]:
    """Train (or reuse) each variant; returns {variant: {run.json contents, "wall_s", "overrides"}}."""
    return {name: train_cached("reid", name, base_overrides(epochs, steps, batch, size, extra) + VARIANTS[name],
                               epochs * steps * batch, fresh)
            for name in variants or list(VARIANTS)}


def evaluate_last(run: dict) -> dict:
    """The Market protocol on the real held-out identities with the run's last checkpoint (PyTorch), and
    :func:`evaluate_mars_held_out` with the same model."""
    from vision.checkpointing import load_checkpoint
    from vision.export.pipeline import rebuild
    from vision.export.reid import eval_labels, market_protocol, torch_embeddings

    ckpt = load_checkpoint(run["last_checkpoint"])
    model, dm, cfg = rebuild(ckpt)
    ds = dm.eval_dataset("test")
    res = market_protocol(torch_embeddings(model, ds), eval_labels(ds),
                          bool(cfg.task.get("exclude_same_camera", True)))
    return {"real": res["by_source"][REAL], "all": {k: v for k, v in res.items() if k != "by_source"},
            "mars_held_out": evaluate_mars_held_out(model, dm.spec),
            "epoch": int(ckpt.get("epoch", -1)), "global_step": int(ckpt.get("global_step", -1))}


# The Market-1501 mini query identities that MARS mini also holds: no variant trains on them (the sprite
# variant excludes them from its crops), so their MARS tracklets are a second, larger real test set.
MARS_HELD_OUT = ("0005", "0009", "0013", "0015", "0019", "0021", "0025")


def evaluate_mars_held_out(model, spec, per_tracklet: int = 6) -> dict | None:
    """The Market protocol on MARS tracklets of identities no variant trained on: ``per_tracklet`` crops of
    each tracklet, every one a query against all of them as the gallery. Same-identity same-camera gallery
    crops are excluded (the query's own tracklet too), so each query must be found in another camera;
    identities seen by one camera only are distractors in the gallery."""
    from vision.data.reid import MarsSource, ReidDataset
    from vision.export.reid import eval_labels, market_protocol, torch_embeddings

    root = REPO.parent / "shared" / "data" / "mars_mini"
    if not root.is_dir():
        return None
    samples = [s for s in MarsSource(str(root), verify_checksums=False, max_per_tracklet=per_tracklet).load()
               if s.meta["identity"] in MARS_HELD_OUT]
    cams: dict[str, set] = {}
    for s in samples:
        cams.setdefault(s.meta["identity"], set()).add(s.meta["camera"])
    queries = [s for s in samples if len(cams[s.meta["identity"]]) > 1]
    gallery = samples
    ds = ReidDataset(queries + gallery, spec, {c: i for i, c in enumerate(sorted({s.label for s in samples}))},
                     camera_index={c: i for i, c in enumerate(sorted({f"{s.source}:{s.meta['camera']}"
                                                                      for s in samples}))},
                     roles=[0] * len(queries) + [1] * len(gallery))
    res = market_protocol(torch_embeddings(model, ds), eval_labels(ds), True, by_source=False)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items() if k in
            ("rank1", "rank5", "map", "minp", "num_queries", "num_valid", "num_gallery")}


def summarize(evals: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Per variant: the mean over seeds (and every seed's value) of rank-1 / mAP / mINP on Market-1501 mini and on
    the MARS held-out identities."""
    out: dict[str, dict] = {}
    seeds = sorted(evals)
    for name in evals[seeds[0]]:
        entry = {}
        for test, get in (("market", lambda e: e["real"]), ("mars_held_out", lambda e: e["mars_held_out"])):
            rows = [get(evals[s][name]) for s in seeds]
            if any(r is None for r in rows):
                entry[test] = None
                continue
            entry[test] = {m: round(sum(r[m] for r in rows) / len(rows), 4) for m in ("rank1", "map", "minp")}
            entry[test]["per_seed"] = {str(s): {m: round(r[m], 4) for m in ("rank1", "map", "minp")}
                                       for s, r in zip(seeds, rows)}
        out[name] = entry
    return out


def embed_speed(bundle, precision: str, crops: list, threads: int = 2, rounds: int = 3) -> dict:
    from vision.runtime.reid import Embedder

    emb = Embedder(bundle, precision, threads=threads)
    emb.embed(crops[:32])  # warm-up
    emb.reset_timings()
    for _ in range(rounds):
        for i in range(0, len(crops), 32):
            emb.embed(crops[i:i + 32])
    t = emb.timings()
    return {"embeddings_per_s": t["embeddings_per_s"], "batch": t["batch"],
            "ms_per_crop": {k: v["mean_ms"] for k, v in t["stages"].items()}, "embeddings": t["embeddings"]}


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12, help="P x K batches per epoch")
    ap.add_argument("--batch", type=int, default=32, help="P x K (K = 4)")
    ap.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"))
    ap.add_argument("--export-batch", type=int, default=8, help="fixed batch of the exported graphs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="every variant trains once per seed; rank-1 / mAP / mINP are means over the seeds")
    ap.add_argument("--fresh", action="store_true", help="retrain even when cached runs exist")
    args, extra = ap.parse_known_args(argv)
    if not (REPO.parent / "shared" / "data" / REAL).is_dir():
        print(json.dumps({"skipped": f"{REPO.parent / 'shared' / 'data' / REAL} is absent"}))
        return {}
    from hydra import compose, initialize_config_dir

    import vision.config  # noqa: F401
    from vision.checkpointing import load_checkpoint
    from vision.errors import ParityError
    from vision.export import reid as reid_export
    from vision.export.pipeline import rebuild

    t_all = time.time()
    mars = (REPO.parent / "shared" / "data" / "mars_mini").is_dir()
    names = [v for v in VARIANTS if mars or v not in NEEDS_MARS]
    by_seed = {seed: train_variants(args.epochs, args.steps, args.batch, args.size, [*extra, f"seed={seed}"],
                                    fresh=args.fresh, variants=names) for seed in args.seeds}
    evals = {seed: {name: evaluate_last(run) for name, run in runs.items()} for seed, runs in by_seed.items()}
    summary = summarize(evals)

    runs = by_seed[args.seeds[0]]
    mixed = runs["mixed"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bundle = RESULTS / f"reid-bundle-{stamp}"
    ckpt_path = Path(mixed["last_checkpoint"])
    ckpt = load_checkpoint(ckpt_path)
    model, dm, train_cfg = rebuild(ckpt)
    ds = dm.eval_dataset("test")
    crops = [reid_export.raw_crop(ds, i) for i in range(len(ds))]
    staged: dict = {}

    def on_staged(b, report):
        staged["report"] = report
        staged["speed"] = {p: embed_speed(b, p, crops) for p in ("fp32", "int8")}

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        ecfg = compose("export", overrides=[f"checkpoint={ckpt_path}", f"output_dir={bundle}", "progress=false",
                                            "logger.log_to_run=false", f"batch_size={args.export_batch}"])
    problems = None
    try:
        reid_export.run(ecfg, ckpt, ckpt_path, model, dm, train_cfg, bundle, False, on_staged=on_staged)
    except ParityError as e:
        problems = str(e).split("\nreport:")[0]
        bundle = None
    parity, speed = staged["report"], staged["speed"]

    def real(entry: str, key: str) -> float:
        return round(parity[entry]["by_source"][REAL][key], 4)

    result = {
        "rank1_torch": real("torch", "rank1"),
        "map_torch": real("torch", "map"),
        "minp_torch": real("torch", "minp"),
        "rank1_onnx_fp32": real("onnx_fp32", "rank1"),
        "rank1_onnx_int8": real("onnx_int8", "rank1"),
        "map_onnx_int8": real("onnx_int8", "map"),
        "embeddings_per_s_fp32": speed["fp32"]["embeddings_per_s"],
        "embeddings_per_s_int8": speed["int8"]["embeddings_per_s"],
        **{f"{m}_{name}": summary[name]["market"][m] for name in names for m in ("rank1", "map", "minp")},
        "mars_held_out": {name: {k: v for k, v in (summary[name]["mars_held_out"] or {}).items() if k != "per_seed"}
                          or None for name in names},
        "per_seed": {name: {"market": summary[name]["market"]["per_seed"],
                            "mars_held_out": (summary[name]["mars_held_out"] or {}).get("per_seed")}
                     for name in names},
        "seeds": list(args.seeds),
        "real_test": {"queries": evals[args.seeds[0]]["mixed"]["real"]["num_queries"],
                      "valid_queries": evals[args.seeds[0]]["mixed"]["real"]["num_valid"],
                      "gallery": evals[args.seeds[0]]["mixed"]["real"]["num_gallery"],
                      "mars_held_out_queries": (evals[args.seeds[0]]["mixed"]["mars_held_out"] or {}).get("num_queries")},
        "cosine_fp32": round(parity["onnx_fp32"]["mean_cosine"], 6),
        "cosine_int8": round(parity["onnx_int8"]["mean_cosine"], 6),
        "gate_set": {"queries": parity["num_queries"], "gallery": parity["num_gallery"],
                     "rank1": {k: round(parity[k]["rank1"], 4) for k in ("torch", "onnx_fp32", "onnx_int8")},
                     "map": {k: round(parity[k]["map"], 4) for k in ("torch", "onnx_fp32", "onnx_int8")}},
        "parity_passed": problems is None,
        "parity_problems": problems,
        "checkpoint": "last",
        "exported_seed": args.seeds[0],
        "budget": {"epochs": args.epochs, "steps_per_epoch": args.steps, "batch": args.batch, "K": 4,
                   "images_seen": mixed["images_seen"], "input_size": list(args.size),
                   "train_wall_s": {k: v["wall_s"] for k, v in runs.items()}},
        "export_batch": args.export_batch,
        "runtime": {p: {k: v for k, v in s.items() if k != "embeddings_per_s"} for p, s in speed.items()},
        "threads": 2,
        "bundle": str(bundle) if bundle else None,
        "wall_s": round(time.time() - t_all, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "reid.json", result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
