"""Shared by bench/detect.py and bench/synthetic_lift.py: the same detector trained under the same
budget on (a) real only, (b) synthetic only and (c) real + synthetic mixed, each scored on a real
scene it never saw (TUD-Campus by default; PETS 2009 S3-MF1 trains and validates).

The three runs are cached under bench/results/ by a hash of their settings, so the two benchmarks
reuse each other's trainings instead of repeating them (``--fresh`` retrains).
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
SCENES = {"tud_campus": "pets2009_s3mf1", "pets2009_s3mf1": "tud_campus"}  # test scene -> training scene
VARIANTS = {  # the data each variant trains on (same steps, same batch size, same model)
    "real_only": ["data=people_real"],
    "synthetic_only": ["data=people_mixed", "data.mix.synthetic_fraction=1.0"],
    "mixed": ["data=people_mixed", "data.mix.synthetic_fraction=0.5"],
    # the engine with real-appearance people (cut-out MARS crops) instead of procedural ones
    "synthetic_sprites_only": ["data=people_mixed_sprites", "data.mix.synthetic_fraction=1.0"],
    "mixed_sprites": ["data=people_mixed_sprites", "data.mix.synthetic_fraction=0.5"],
}


def base_overrides(test_scene: str, epochs: int, steps: int, size: int, extra: list[str]) -> list[str]:
    # the training scene gives train (its first 85% of frames) and val (the rest); the test scene is unseen
    return ["experiment=detection", "logger=none", "trainer.enable_progress_bar=false", f"trainer.max_epochs={epochs}",
            f"data.steps_per_epoch={steps}", f"data.preprocess.size=[{size},{size}]",
            "~data.assign", f"+data.assign={{{test_scene}:test}}",  # replace the recipe's held-out scene
            "trainer.precision=bf16-mixed",  # CPU autocast: about 2x faster on AVX512-BF16 cores
            *extra]


# what a detection run's result can depend on besides its overrides (which are part of its key): the code and
# configs it runs. The refiner's code is left out: only a refined variant runs it, and that variant names its
# refiner checkpoint, whose folder bench/refine.py keys by every file of synthetic/refine/ and conf/refine.yaml.
CODE_PATHS = ("conf", "vision", "synthetic", "train.py")
NOT_CODE = ("synthetic/refine/", "conf/refine.yaml", "conf/refine_apply.yaml")


def code_state() -> str:
    """The code the trainings run with: a hash of the contents of every .py / .yaml file under CODE_PATHS (less
    NOT_CODE) and the generator version, so a cached run is reused only for the same code and configs, and
    survives commits that touch nothing it runs (tests, docs, other benchmarks)."""
    from synthetic import __version__ as synthetic_version

    h = hashlib.sha256()
    for root in CODE_PATHS:
        path = REPO / root
        files = [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.suffix in (".py", ".yaml"))
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            if rel.startswith(NOT_CODE) or "__pycache__" in rel:
                continue
            h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return f"{h.hexdigest()[:16]}+{synthetic_version}"


def available_variants() -> list[str]:
    """Every variant, less the real-appearance ones when ../shared/data/mars_mini (their crops) is absent."""
    mars = (REPO.parent / "shared" / "data" / "mars_mini").is_dir()
    return [v for v in VARIANTS if mars or "sprites" not in v]


def shared_data_present() -> str | None:
    for name in SCENES:
        if not (REPO.parent / "shared" / "data" / name).is_dir():
            return f"{REPO.parent / 'shared' / 'data' / name} is absent"
    return None


def train_cached(prefix: str, name: str, overrides: list[str], images_seen: int, fresh: bool = False,
                 **record) -> dict:
    """Train one bench run (``python train.py`` with ``overrides``), or reuse it: runs are cached under
    bench/results/ by a hash of the overrides and the code state. Returns the run's ``run.json``
    contents plus ``wall_s``, ``overrides``, ``variant``, ``images_seen`` and ``record``."""
    from hydra import compose, initialize_config_dir

    import vision.config  # noqa: F401 - resolvers
    from vision.training import run as run_train
    from vision.utils.io import atomic_write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps([overrides, code_state()]).encode()).hexdigest()[:10]
    cache = RESULTS / f"{prefix}-run-{name}-{key}.json"
    if cache.is_file() and not fresh:
        print(f"[bench] reusing {name} from {cache.name}", file=sys.stderr)
        return json.loads(cache.read_text())
    run_dir = RESULTS / f"{prefix}-{name}-{key}"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"run_name=bench-{prefix}-{name}-{key}",
                                          f"paths.output_dir={run_dir}"])
        print(f"[bench] training {name}: {' '.join(overrides)}", file=sys.stderr, flush=True)
        t0 = time.time()
        run_train(cfg)
        wall = time.time() - t0
    run = json.loads((run_dir / "run.json").read_text())
    rec = {**run, "wall_s": round(wall, 1), "overrides": overrides, "variant": name, "images_seen": images_seen,
           **record}
    atomic_write_json(cache, rec)
    return rec


def train_variants(test_scene: str = "tud_campus", epochs: int = 8, steps: int = 40, size: int = 320,
                   extra: list[str] | None = None, variants: list[str] | None = None,
                   fresh: bool = False) -> dict[str, dict]:
    """Train (or reuse) each variant; returns {variant: {run.json contents, "wall_s", "overrides"}}."""
    names = variants or available_variants()
    return train_grid(test_scene, epochs, steps, size, {"": list(extra or [])},
                      {name: VARIANTS[name] for name in names}, fresh)[""]


def train_grid(test_scene: str, epochs: int, steps: int, size: int, extras: dict[str, list[str]],
               variants: dict[str, list[str]], fresh: bool = False, parallel: int = 1) -> dict[str, dict[str, dict]]:
    """Every variant (name -> its data overrides) under every set of extra overrides (e.g. one per seed):
    {extra name: {variant: run record}}. ``parallel`` > 1 trains that many runs at once, each in its own
    process (on a GPU the detectors' data pipeline, not the GPU, limits one run)."""
    from hydra import compose, initialize_config_dir

    jobs = []
    batch = None
    for ename, extra in extras.items():
        for name, data in variants.items():
            overrides = base_overrides(test_scene, epochs, steps, size, list(extra)) + list(data)
            if batch is None:
                with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
                    batch = int(compose("train", overrides=overrides).data.batch_size)
            jobs.append((ename, name, overrides))
    run = partial(train_cached, "detection", images_seen=epochs * steps * batch, fresh=fresh, test_scene=test_scene)
    names = [name for _, name, _ in jobs]
    overrides = [ov for _, _, ov in jobs]
    if parallel <= 1:
        records = list(map(run, names, overrides))
    else:
        with ProcessPoolExecutor(max_workers=parallel, mp_context=mp.get_context("spawn")) as pool:
            records = list(pool.map(run, names, overrides))
    out: dict[str, dict[str, dict]] = {ename: {} for ename in extras}
    for (ename, name, _), rec in zip(jobs, records):
        out[ename][name] = rec
    return out


EXACT_UP_TO = 40  # pairs up to which the sign-flip p is exact (2 x 2^20 sums at most)


def _sign_sums(values: list[float]) -> np.ndarray:
    """The sums of ``values`` under all 2^len sign patterns."""
    sums = np.zeros(1)
    for v in values:
        sums = np.concatenate([sums + v, sums - v])
    return sums


def sign_flip_p(d: list[float], exact_up_to: int = EXACT_UP_TO, samples: int = 100_000) -> tuple[float, str]:
    """Two-sided p of the sign-flip permutation test of paired differences ``d``: the share of the 2^n sign
    patterns whose |sum| reaches the observed |sum|. Exact up to ``exact_up_to`` pairs by meeting in the middle
    (the 2^(n/2) sums of each half, one half sorted and searched), else ``samples`` seeded random patterns,
    counting the observed one ((k + 1) / (N + 1), never 0). Returns ``(p, method)``."""
    n = len(d)
    observed = abs(sum(d)) - 1e-12  # ties (the observed pattern itself) count despite rounding
    if observed <= 0:
        return 1.0, "exact"
    if n <= exact_up_to:
        left, right = _sign_sums(d[: n // 2]), np.sort(_sign_sums(d[n // 2:]))
        # a + b >= observed, or a + b <= -observed (disjoint since observed > 0)
        hits = (len(right) - np.searchsorted(right, observed - left, side="left")).sum() + \
            np.searchsorted(right, -observed - left, side="right").sum()
        return float(hits) / 2.0 ** n, "exact"
    rng = np.random.default_rng(0)
    signs = rng.choice((-1.0, 1.0), size=(samples, n))
    hits = int((np.abs(signs @ np.asarray(d, dtype=np.float64)) >= observed).sum())
    return (hits + 1) / (samples + 1), f"{samples} random"


def paired_comparison(before: list[float], after: list[float], exact_up_to: int = EXACT_UP_TO) -> dict:
    """``after - before`` over paired runs (the same seed trained both ways): the mean and median difference,
    its standard error and t statistic, how many pairs went up, and the two-sided p of a sign-flip permutation
    test (under "no effect" each pair's difference is as likely negative as positive; :func:`sign_flip_p`).
    The permutation test assumes no distribution: the per-seed outcomes of these short trainings are
    heavy-tailed."""
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_comparison needs two equally long, non-empty lists (got {len(before)} and "
                         f"{len(after)})")
    d = [b - a for a, b in zip(before, after)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else float("nan")
    se = sd / math.sqrt(n)
    p, method = sign_flip_p(d, exact_up_to)
    ordered = sorted(d)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    return {"n": n, "mean_diff": round(mean, 4), "median_diff": round(median, 4),
            "se": float(f"{se:.3g}") if n > 1 else None,
            "t": round(mean / se, 2) if n > 1 and se > 1e-9 else None,
            "up": sum(x > 0 for x in d), "down": sum(x < 0 for x in d),
            "p_sign_flip": float(f"{p:.3g}"), "p_method": method}
