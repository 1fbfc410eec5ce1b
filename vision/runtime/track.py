"""Multi-camera person tracking with temporary identities (numpy + onnxruntime + OpenCV only, no torch).

    python -m vision.runtime.track --detector DET_BUNDLE --embedder REID_BUNDLE \\
        --camera cam0=video0.mp4 --camera cam1=video1.mp4 --out tracks.jsonl --report report.json \\
        [--ttl-s 600] [--max-frames N] [--every N] [--sim-threshold 0.6] [--video-out-dir DIR]

or from Python, with detections from any detector (boxes in frame pixels)::

    mct = MultiCameraTracker(embedder=Embedder("bundles/reid"), ttl_s=600)
    for camera, time_s, rgb, boxes in frames:           # in time order over all cameras
        for t in mct.update(camera, time_s, boxes, frame=rgb):
            t["track_id"], t["global_id"]               # camera-local track, temporary global identity
    report = mct.report()

**Within a camera** (:class:`CameraTracker`) detections are associated greedily with live tracks by motion
(IoU with the track's constant-velocity box prediction at the detection's time) plus appearance (cosine
similarity of the detection's embedding with the track's running-mean embedding); a detection that no
track predicts but whose appearance matches a nearby recently lost track strongly re-joins it (short
occlusions). A track unseen for ``max_age_s`` is finished.

**Across cameras** a track that has ``min_hits`` detections gets a global identity: the gallery identity
(the running mean of its tracks' embeddings) most similar to it, when the cosine similarity is at least
``sim_threshold``, the identity has no live track in this camera and the transit time from its last
sighting in another camera is plausible (``min_transit_s`` <= transit <= ``max_transit_s``; 0 and no upper
bound by default); otherwise a new temporary identity. Tracks lost and found again in the same camera
are re-identified the same way.

**Privacy / ephemerality**: identities are random per run (never derived from appearance), and every
identity, track and embedding expires ``ttl_s`` seconds after it was last seen (the clock: the latest frame
time over all cameras): it is purged from memory, and a person coming back later is a new identity. Only
the movement summary of an expired identity (cameras, first/last times, transit times: no embedding) is
kept for the report. Nothing is written to disk by this module unless asked: tracks and the report go
where ``--out`` / ``--report`` say, embeddings only with ``--save-embeddings``, crops never.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vision.runtime.detect_decode import box_iou
from vision.runtime.registry import add_registry_args, open_bundle

OUT_KEYS = ("track_id", "global_id", "box", "score")


@dataclass
class TrackerConfig:
    """Association settings (see the module docstring)."""

    iou_min: float = 0.2          # motion match: IoU with the predicted box at least this
    app_min: float = 0.3          # ... and (with embeddings) appearance similarity at least this
    app_strong: float = 0.75      # appearance-only re-join of a track the motion model lost
    max_jump: float = 1.5         # ... within this many box heights of its last position
    motion_weight: float = 0.5    # score = w * IoU + (1 - w) * similarity
    max_age_s: float = 2.0        # a track unseen this long is finished
    min_hits: int = 2             # detections before a track gets a global identity
    momentum: float = 0.9         # running mean: e <- normalize(m * e + (1 - m) * new)
    sim_threshold: float = 0.6    # gallery match (cosine similarity)
    min_transit_s: float = 0.0    # plausible transit between two cameras: at least ...
    max_transit_s: float | None = None  # ... and at most (None: no bound)
    ttl_s: float = 600.0          # identities and embeddings are forgotten this long after last seen

    def __post_init__(self) -> None:
        for k in ("iou_min", "app_min", "app_strong", "motion_weight"):
            v = getattr(self, k)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {v}")
        if not -1.0 <= self.sim_threshold <= 1.0:
            raise ValueError(f"sim_threshold must be in [-1, 1], got {self.sim_threshold}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.max_age_s <= 0 or self.ttl_s <= 0:
            raise ValueError(f"max_age_s and ttl_s must be > 0, got {self.max_age_s} and {self.ttl_s}")
        if self.max_transit_s is not None and self.max_transit_s < self.min_transit_s:
            raise ValueError(f"max_transit_s {self.max_transit_s} < min_transit_s {self.min_transit_s}")


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass(eq=False)
class Track:
    """One camera-local track: box (xyxy), velocity (box units per second), running-mean embedding."""

    id: int
    camera: str
    box: np.ndarray
    t_first: float
    t_last: float
    embedding: np.ndarray | None = None
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hits: int = 1
    global_id: str | None = None

    def predict(self, t: float) -> np.ndarray:
        return self.box + self.velocity * max(0.0, t - self.t_last)

    def update(self, t: float, box: np.ndarray, emb: np.ndarray | None, momentum: float) -> None:
        dt = t - self.t_last
        if dt > 0:
            self.velocity = 0.5 * self.velocity + 0.5 * (box - self.box) / dt
        self.box = box
        self.t_last = t
        self.hits += 1
        if emb is not None:
            self.embedding = emb if self.embedding is None else _unit(momentum * self.embedding + (1 - momentum) * emb)


class CameraTracker:
    """Greedy motion + appearance association of one camera's detections with its live tracks."""

    def __init__(self, camera: str, config: TrackerConfig | None = None) -> None:
        self.camera = camera
        self.config = config or TrackerConfig()
        self.tracks: dict[int, Track] = {}
        self.next_id = 1

    def finish_stale(self, t: float) -> list[Track]:
        """Remove and return the tracks unseen for more than ``max_age_s`` at time ``t``."""
        stale = [tr for tr in self.tracks.values() if t - tr.t_last > self.config.max_age_s]
        for tr in stale:
            del self.tracks[tr.id]
        return stale

    def _scores(self, t: float, tracks: list[Track], boxes: np.ndarray, embs: np.ndarray | None) -> np.ndarray:
        c = self.config
        pred = np.stack([tr.predict(t) for tr in tracks])
        iou = box_iou(pred, boxes)
        sim = np.full(iou.shape, np.nan)
        if embs is not None:
            for i, tr in enumerate(tracks):
                if tr.embedding is not None:
                    sim[i] = embs @ tr.embedding
        has = ~np.isnan(sim)
        s = np.where(has, sim, 0.0)
        motion_ok = (iou >= c.iou_min) & (~has | (s >= c.app_min))
        motion = np.where(has, c.motion_weight * iou + (1 - c.motion_weight) * s, iou)
        last = np.stack([tr.box for tr in tracks])
        ctr_t = (last[:, :2] + last[:, 2:]) / 2
        ctr_d = (boxes[:, :2] + boxes[:, 2:]) / 2
        dist = np.linalg.norm(ctr_t[:, None] - ctr_d[None], axis=-1)
        height = np.maximum(last[:, 3:4] - last[:, 1:2], (boxes[:, 3] - boxes[:, 1])[None])
        app_ok = has & (s >= c.app_strong) & (dist <= c.max_jump * height)
        # appearance-only re-joins rank below every motion match
        return np.where(motion_ok, 1.0 + motion, np.where(app_ok, s * (1 - c.motion_weight), -np.inf))

    def associate(self, t: float, boxes: np.ndarray, embs: np.ndarray | None = None) -> list[Track]:
        """Match detections (xyxy ``boxes [N, 4]``, optional unit ``embs [N, D]``) at time ``t``; returns
        the track of every detection (new tracks for the unmatched ones)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        tracks = list(self.tracks.values())
        assigned: list[Track | None] = [None] * len(boxes)
        if tracks and len(boxes):
            score = self._scores(t, tracks, boxes, embs)
            ti, di = np.nonzero(np.isfinite(score))
            used: set[int] = set()
            for k in np.argsort(-score[ti, di], kind="stable"):
                tr, d = tracks[ti[k]], int(di[k])
                if tr.id in used or assigned[d] is not None:
                    continue
                used.add(tr.id)
                assigned[d] = tr
                tr.update(t, boxes[d], None if embs is None else embs[d], self.config.momentum)
        for d in range(len(boxes)):
            if assigned[d] is None:
                tr = Track(self.next_id, self.camera, boxes[d].copy(), t, t,
                           None if embs is None else np.asarray(embs[d], np.float32))
                self.next_id += 1
                self.tracks[tr.id] = tr
                assigned[d] = tr
        return assigned  # type: ignore[return-value]


@dataclass(eq=False)
class Identity:
    """A temporary global identity: its gallery embedding and where / when it was seen."""

    id: str
    embedding: np.ndarray | None
    last_seen: float
    last_camera: str
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    transits: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, expired: bool) -> dict[str, Any]:
        """What the report keeps (no embedding)."""
        return {"global_id": self.id, "expired": expired,
                "cameras": {c: {"first_s": round(v["first_s"], 3), "last_s": round(v["last_s"], 3),
                                "tracks": v["tracks"], "detections": v["detections"]}
                            for c, v in self.cameras.items()},
                "first_s": round(min(v["first_s"] for v in self.cameras.values()), 3),
                "last_s": round(self.last_seen, 3),
                "transits": [dict(x) for x in self.transits]}


class MultiCameraTracker:
    """Per-camera trackers + a cross-camera gallery of temporary identities (see the module docstring).

    Detections can come from any detector: :meth:`update` takes boxes (and optional scores and embeddings);
    without embeddings an ``embedder`` (:class:`vision.runtime.reid.Embedder`) computes them from ``frame``.
    Without either, tracking is by motion only and every track is its own identity.
    ``seed``: reproducible random identities (tests); by default they come from the OS.
    """

    def __init__(self, embedder=None, config: TrackerConfig | None = None, seed: int | None = None,
                 crop_pad: float = 0.0, **overrides: Any) -> None:
        base = asdict(config) if config is not None else {}
        self.config = TrackerConfig(**{**base, **overrides})
        self.embedder = embedder
        self.crop_pad = float(crop_pad)
        self._rng: random.Random = random.Random(seed) if seed is not None else random.SystemRandom()
        self.cameras: dict[str, CameraTracker] = {}
        self.identities: dict[str, Identity] = {}
        self._issued: set[str] = set()
        self._expired: list[dict[str, Any]] = []
        self._stats: dict[str, dict[str, Any]] = {}
        self.now = -math.inf

    # -- identities ----------------------------------------------------------------------------------
    def _new_id(self) -> str:
        while True:
            gid = f"{self._rng.getrandbits(48):012x}"
            if gid not in self._issued:
                self._issued.add(gid)
                return gid

    def _active_in(self, camera: str) -> set[str]:
        ct = self.cameras.get(camera)
        return {tr.global_id for tr in ct.tracks.values() if tr.global_id} if ct else set()

    @staticmethod
    def _transit(ident: Identity, camera: str, t_first: float) -> tuple[str, float, float] | None:
        """(previous camera, left at, transit seconds) when the identity was last seen in another camera;
        None when its latest sighting is in ``camera`` (a track lost and found again there)."""
        if ident.last_camera == camera or ident.last_camera not in ident.cameras:
            return None
        last = ident.cameras[ident.last_camera]["last_s"]
        return ident.last_camera, last, t_first - last

    def _plausible(self, ident: Identity, camera: str, t_first: float) -> bool:
        tr = self._transit(ident, camera, t_first)
        if tr is None:
            return True  # last seen in this camera: a track lost and found again
        c = self.config
        return tr[2] >= c.min_transit_s and (c.max_transit_s is None or tr[2] <= c.max_transit_s)

    def _assign(self, camera: str, tracks: list[Track]) -> None:
        """Global identities for newly confirmed tracks: greedy gallery matching, else new ids."""
        c = self.config
        gallery = [g for g in self.identities.values() if g.embedding is not None]
        busy = self._active_in(camera)
        pairs = []
        for i, tr in enumerate(tracks):
            if tr.embedding is None:
                continue
            for j, g in enumerate(gallery):
                if g.id in busy or not self._plausible(g, camera, tr.t_first):
                    continue
                sim = float(tr.embedding @ g.embedding)
                if sim >= c.sim_threshold:
                    pairs.append((sim, i, j))
        taken: set[str] = set()
        for sim, i, j in sorted(pairs, key=lambda p: -p[0]):
            tr, g = tracks[i], gallery[j]
            if tr.global_id is not None or g.id in taken:
                continue
            taken.add(g.id)
            tr.global_id = g.id
            info = self._transit(g, camera, tr.t_first)
            if info is not None:
                g.transits.append({"from": info[0], "to": camera, "left_s": round(info[1], 3),
                                   "entered_s": round(tr.t_first, 3), "transit_s": round(info[2], 3),
                                   "similarity": round(sim, 4)})
        for tr in tracks:
            if tr.global_id is None:
                gid = self._new_id()
                self.identities[gid] = Identity(gid, None if tr.embedding is None else tr.embedding.copy(),
                                                tr.t_last, camera)
                tr.global_id = gid
            g = self.identities[tr.global_id]
            cam = g.cameras.setdefault(camera, {"first_s": tr.t_first, "last_s": tr.t_last, "tracks": 0,
                                                "detections": 0})
            cam["tracks"] += 1
            cam["first_s"] = min(cam["first_s"], tr.t_first)
            cam["detections"] += tr.hits - 1  # the last one is counted by _seen

    def _seen(self, tr: Track, emb: np.ndarray | None, t: float) -> None:
        g = self.identities.get(tr.global_id or "")
        if g is None:
            return
        cam = g.cameras[tr.camera]
        cam["last_s"] = max(cam["last_s"], t)
        cam["detections"] += 1
        g.last_seen = max(g.last_seen, t)
        g.last_camera = tr.camera
        if emb is not None:
            m = self.config.momentum
            g.embedding = emb.copy() if g.embedding is None else _unit(m * g.embedding + (1 - m) * emb)

    # -- time ----------------------------------------------------------------------------------------
    def purge(self, now: float | None = None) -> list[str]:
        """Forget every identity, track and embedding not seen within ``ttl_s`` of ``now`` (default: the
        latest frame time); returns the expired identities (their movement summary stays for the report)."""
        if now is not None:
            self.now = max(self.now, float(now))
        limit = self.now - self.config.ttl_s
        gone = [g for g in self.identities.values() if g.last_seen < limit]
        for g in gone:
            self._expired.append(g.summary(expired=True))
            g.embedding = None
            del self.identities[g.id]
        for ct in self.cameras.values():
            for tid in [tid for tid, tr in ct.tracks.items() if tr.t_last < limit]:
                ct.tracks[tid].embedding = None
                del ct.tracks[tid]
        return [g.id for g in gone]

    def memory(self) -> dict[str, int]:
        """What is held in memory now: identities, live tracks and embeddings (tests and audits)."""
        tracks = [tr for ct in self.cameras.values() for tr in ct.tracks.values()]
        return {"identities": len(self.identities), "tracks": len(tracks),
                "embeddings": sum(g.embedding is not None for g in self.identities.values())
                + sum(tr.embedding is not None for tr in tracks)}

    # -- the per-frame entry point -------------------------------------------------------------------
    def update(self, camera: str, time_s: float, boxes, scores: Sequence[float] | None = None,
               embeddings: np.ndarray | None = None, frame: np.ndarray | None = None) -> list[dict[str, Any]]:
        """One frame of ``camera`` at ``time_s`` seconds: xyxy ``boxes [N, 4]`` in frame pixels (any detector),
        optional ``scores``, optional unit ``embeddings [N, D]`` (else computed by the embedder from ``frame``).

        Returns per detection ``{"track_id", "global_id", "box", "score"}``; ``global_id`` is None until the
        track has ``min_hits`` detections. Frames should come in time order over all cameras."""
        camera = str(camera)
        t = float(time_s)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if scores is not None and len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        if embeddings is None and self.embedder is not None and len(boxes):
            if frame is None:
                raise ValueError("no embeddings given and no frame to compute them from")
            embeddings = self.embedder.embed_boxes(frame, boxes, self.crop_pad)
        embs = None
        if embeddings is not None:
            embs = np.asarray(embeddings, dtype=np.float32).reshape(len(boxes), -1)
            embs = embs / np.maximum(np.linalg.norm(embs, axis=1, keepdims=True), 1e-12)
        self.now = max(self.now, t)
        self.purge()
        ct = self.cameras.setdefault(camera, CameraTracker(camera, self.config))
        st = self._stats.setdefault(camera, {"frames": 0, "detections": 0, "first_s": t, "last_s": t})
        st["frames"] += 1
        st["detections"] += len(boxes)
        st["last_s"] = max(st["last_s"], t)
        for other in self.cameras.values():  # frames come in time order: every camera's clock is now
            for tr in other.finish_stale(self.now):
                tr.embedding = None  # the identity keeps its gallery embedding; the track's is dropped
        tracks = ct.associate(t, boxes, embs)
        confirm = [tr for tr in dict.fromkeys(tracks) if tr.global_id is None and tr.hits >= self.config.min_hits]
        if confirm:
            self._assign(camera, confirm)
        out = []
        for d, tr in enumerate(tracks):
            if tr.global_id is not None:
                self._seen(tr, None if embs is None else embs[d], t)
            out.append({"track_id": tr.id, "global_id": tr.global_id,
                        "box": [round(float(v), 2) for v in boxes[d]],
                        "score": None if scores is None else round(float(scores[d]), 4)})
        return out

    # -- results -------------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Per global identity (live and expired): cameras seen with first/last time, transits between
        cameras; per camera pair the transit times; per camera frame and detection counts. No embeddings."""
        idents = self._expired + [g.summary(expired=False) for g in self.identities.values()]
        idents.sort(key=lambda x: (x["first_s"], x["global_id"]))
        pairs: dict[str, list[float]] = {}
        for g in idents:
            for x in g["transits"]:
                pairs.setdefault(f"{x['from']}->{x['to']}", []).append(x["transit_s"])
        transits = {k: {"count": len(v), "mean_s": round(float(np.mean(v)), 3), "min_s": round(min(v), 3),
                        "max_s": round(max(v), 3)} for k, v in sorted(pairs.items())}
        cams = {c: {**{k: (round(v, 3) if isinstance(v, float) else v) for k, v in st.items()},
                    "tracks": self.cameras[c].next_id - 1} for c, st in self._stats.items()}
        return {"identities": idents, "num_identities": len(idents),
                "multi_camera_identities": sum(len(g["cameras"]) > 1 for g in idents),
                "expired": len(self._expired), "transits": transits, "cameras": cams,
                "settings": asdict(self.config)}

    def save_embeddings(self, path: str | Path) -> Path:
        """Write the gallery embeddings still in memory (``global_id -> [D]``) to an ``.npz`` (only on request)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {g.id: g.embedding for g in self.identities.values() if g.embedding is not None}
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path


# -- the command line ---------------------------------------------------------------------------------

def _parse_cameras(specs: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for s in specs:
        name, sep, src = s.partition("=")
        if not sep or not name.strip() or not src.strip():
            raise ValueError(f"--camera {s!r}: expected NAME=VIDEO (e.g. cam0=entrance.mp4)")
        if name in {n for n, _ in out}:
            raise ValueError(f"--camera {s!r}: camera name {name!r} given twice")
        out.append((name.strip(), src.strip()))
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vision.runtime.track", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", required=True, help="detection bundle folder or models:/NAME@ALIAS")
    ap.add_argument("--embedder", required=True, help="re-identification (reid) bundle folder or models:/NAME@ALIAS")
    ap.add_argument("--camera", action="append", required=True, metavar="NAME=VIDEO",
                    help="a camera and its video file or stream (repeat for each camera)")
    ap.add_argument("--out", required=True, help="JSON lines: one record per processed frame")
    ap.add_argument("--report", required=True, help="JSON report per identity and camera pair")
    ap.add_argument("--ttl-s", type=float, default=600.0, help="forget identities unseen this long (seconds)")
    ap.add_argument("--sim-threshold", type=float, default=0.6, help="cross-camera match: min cosine similarity")
    ap.add_argument("--min-transit-s", type=float, default=0.0, help="min plausible transit between cameras")
    ap.add_argument("--max-transit-s", type=float, default=None, help="max plausible transit between cameras")
    ap.add_argument("--min-hits", type=int, default=2, help="detections before a track gets a global identity")
    ap.add_argument("--max-age-s", type=float, default=2.0, help="a track unseen this long is finished")
    ap.add_argument("--every", type=int, default=1, metavar="N", help="process every N-th frame")
    ap.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop each camera after N frames")
    ap.add_argument("--label", default="person", help="the detector label that is tracked")
    ap.add_argument("--score-threshold", type=float, default=None, help="override the detector's threshold")
    ap.add_argument("--precision", default="int8", help="precision of both bundles (int8 or fp32)")
    ap.add_argument("--detector-precision", default=None, help="override --precision for the detector")
    ap.add_argument("--embedder-precision", default=None, help="override --precision for the embedder")
    ap.add_argument("--providers", default="CPUExecutionProvider", help="comma-separated ONNX Runtime providers")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--video-out-dir", default=None, metavar="DIR", help="annotated video per camera (NAME.mp4)")
    ap.add_argument("--save-embeddings", default=None, metavar="NPZ",
                    help="write the gallery embeddings still in memory at the end (off by default)")
    ap.add_argument("--seed", type=int, default=None, help="reproducible random identities (testing)")
    add_registry_args(ap)
    return ap


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from vision.runtime.bundle import BundleError
    from vision.runtime.detect import ObjectDetector
    from vision.runtime.reid import Embedder
    from vision.runtime.video import SourceError, VideoWriter, annotate, open_source

    args = build_parser().parse_args(argv)
    sources: list[tuple[str, Any]] = []
    try:
        if args.every < 1:
            raise ValueError(f"--every must be >= 1, got {args.every}")
        if args.max_frames is not None and args.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
        cams = _parse_cameras(args.camera)
        providers = args.providers.split(",")
        det_b = open_bundle(args.detector, args)
        if det_b.task != "detection":
            raise BundleError(f"{det_b.root / 'bundle.json'}: --detector needs a detection bundle, this one is "
                              f"{det_b.task!r}")
        if args.label not in det_b.labels:
            raise BundleError(f"{det_b.root / 'bundle.json'}: the detector has no label {args.label!r} "
                              f"(labels {det_b.labels})")
        emb_b = open_bundle(args.embedder, args)
        if emb_b.task != "reid":
            raise BundleError(f"{emb_b.root / 'bundle.json'}: --embedder needs a re-identification (reid) bundle, "
                              f"this one is {emb_b.task!r}")
        det = ObjectDetector(det_b, args.detector_precision or args.precision, providers, args.threads,
                             args.score_threshold)
        emb = Embedder(emb_b, args.embedder_precision or args.precision, providers, args.threads)
        mct = MultiCameraTracker(emb, seed=args.seed, ttl_s=args.ttl_s, sim_threshold=args.sim_threshold,
                                 min_transit_s=args.min_transit_s, max_transit_s=args.max_transit_s,
                                 min_hits=args.min_hits, max_age_s=args.max_age_s)
        for name, spec in cams:  # open everything first: a bad input fails before any output
            src = open_source(spec, args.every, args.max_frames)
            if src.kind not in ("video", "stream"):
                src.close()
                raise SourceError(f"{spec}: camera {name!r} needs a video file or stream, not {src.kind} input")
            sources.append((name, src))
    except (BundleError, SourceError, ValueError, OSError) as e:
        for _, s in sources:
            s.close()
        return _fail(str(e))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writers: dict[str, Any] = {}
    records = 0
    t0 = time.perf_counter()
    try:
        with open(tmp_out, "w") as sink:
            # frames of every camera in time order (a heap of each camera's next frame)
            iters = {name: iter(src) for name, src in sources}
            heap: list[tuple[float, int, str, Any]] = []
            for k, (name, _) in enumerate(sources):
                fr = next(iters[name], None)
                if fr is not None:
                    heapq.heappush(heap, (fr.time_s, k, name, fr))
            order = {name: k for k, (name, _) in enumerate(sources)}
            while heap:
                _, k, name, fr = heapq.heappop(heap)
                dets = [d for d in det.detect(fr.rgb, read_ms=fr.read_ms) if d["label"] == args.label]
                res = mct.update(name, fr.time_s, [d["box"] for d in dets], [d["score"] for d in dets],
                                 frame=fr.rgb)
                sink.write(json.dumps({"camera": name, "frame": fr.frame_index, "time": fr.time_s,
                                       "tracks": res}) + "\n")
                records += 1
                if args.video_out_dir:
                    w = writers.get(name)
                    if w is None:
                        src = dict(sources)[name]
                        w = writers[name] = VideoWriter(Path(args.video_out_dir) / f"{name}.mp4",
                                                        (src.fps or 0) / args.every)
                    shown = [{"box": r["box"], "label": args.label, "score": r["score"] or 0.0,
                              "track_id": r["global_id"][:6] if r["global_id"] else f"t{r['track_id']}"}
                             for r in res]
                    w.write(annotate(fr.rgb, shown))
                nxt = next(iters[name], None)
                if nxt is not None:
                    heapq.heappush(heap, (nxt.time_s, order[name], name, nxt))
        os.replace(tmp_out, out)
    except BaseException as e:
        tmp_out.unlink(missing_ok=True)
        for w in writers.values():
            w.discard()
        if isinstance(e, (SourceError, OSError)):
            return _fail(str(e))
        raise
    finally:
        for _, s in sources:
            s.close()
    videos = [str(p) for p in (w.close() for w in writers.values()) if p is not None]
    wall = time.perf_counter() - t0
    report = mct.report()
    report.update({"cameras_input": {n: s for n, s in cams}, "detector": det_b.source or str(det_b.root),
                   "embedder": emb_b.source or str(emb_b.root),
                   "records": records, "wall_s": round(wall, 3),
                   "timings": {"detector": det.timings(), "embedder": emb.timings()},
                   "privacy": {"ttl_s": mct.config.ttl_s, "random_ids": args.seed is None,
                               "embeddings_saved": bool(args.save_embeddings), "crops_saved": False},
                   "videos": videos})
    rep = Path(args.report)
    rep.parent.mkdir(parents=True, exist_ok=True)
    tmp_rep = rep.with_name(f".{rep.name}.{os.getpid()}.tmp")
    tmp_rep.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_rep, rep)
    if args.save_embeddings:
        mct.save_embeddings(args.save_embeddings)
    print(f"tracked {records} frames from {len(sources)} camera(s): {report['num_identities']} identities, "
          f"{report['multi_camera_identities']} seen by 2+ cameras; {det.timings_line()}; wrote {out} and {rep}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
