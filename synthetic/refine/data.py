"""Unpaired frames for the sim-to-real refiner: synthetic frames on one side, real unlabelled frames on the other.

Each side is a list of inputs, each one of:

- a folder with a COCO ``annotations.json`` (or a generated dataset with ``coco/annotations.json``): the
  images the COCO file lists (a generated dataset's re-id crops and MOT copies are not used twice);
- any other folder: every image under it (recursively); a folder without images: every video under it;
- a video file (``.mp4``, ``.avi``, ...): ``frames_per_video`` frames evenly spaced over the video (OpenCV);
- an image file, or a glob pattern (``../shared/data/clip/*.mp4``, ``img/frame_00[0-7]?.jpg``).

All frames of one side must have one size and one channel count (the refiner and its checkpoint are tied
to a frame size), every frame must hold a crop, and there must be enough distinct crops; bad input is a
:class:`~vision.errors.DataError` naming the file and the problem, raised before any training.
Training items are random ``crop_size`` crops (one synthetic, one real, independently drawn, randomly
flipped), in ``[-1, 1]``, drawn from ``(seed, epoch, index)`` so runs are reproducible.
"""
from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from vision.errors import ConfigError, DataError
from vision.runtime.preprocess import IMAGE_EXTENSIONS, ImageReadError, read_image

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
#: folders of a generated dataset that hold re-id crops (not frames)
CROP_FOLDERS = ("bounding_box_train", "bounding_box_test", "query", "gt_bbox", "gt_query")


@dataclass
class FrameRef:
    """One frame to load: an image file, or frame ``index`` of a video."""

    path: Path
    index: int | None = None

    @property
    def origin(self) -> str:
        return str(self.path) if self.index is None else f"{self.path}#frame={self.index}"


@dataclass
class Frames:
    """The decoded frames of one side (HxWx3 uint8 RGB, one size)."""

    side: str
    images: list[np.ndarray]
    origins: list[str]
    inputs: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        h, w = self.images[0].shape[:2]
        return w, h

    def __len__(self) -> int:
        return len(self.images)

    def summary(self) -> dict[str, Any]:
        return {"frames": len(self.images), "size": list(self.size), "inputs": list(self.inputs)}


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def _coco_images(json_path: Path) -> list[FrameRef]:
    try:
        doc = json.loads(json_path.read_text())
        root = Path((doc.get("info") or {}).get("images_root") or json_path.parent)
        names = [im["file_name"] for im in doc["images"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{json_path}: not a readable COCO file ({e})") from e
    return [FrameRef(root / n) for n in names]


def _video_refs(path: Path, frames_per_video: int) -> list[FrameRef]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"{path}: cannot open the video (corrupt file or unsupported codec)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if n <= 0:
        raise DataError(f"{path}: the video has no frames")
    k = min(n, max(1, int(frames_per_video)))
    idx = np.unique(np.linspace(0, n - 1, k).round().astype(int))
    return [FrameRef(path, int(i)) for i in idx]


def frame_refs(spec: str | Path, frames_per_video: int = 100, side: str = "data") -> list[FrameRef]:
    """The frames one input names (see the module docstring), in a deterministic order."""
    spec = str(spec)
    if _is_glob(spec):
        matches = sorted(glob.glob(str(Path(spec).expanduser()), recursive=True))
        if not matches:
            raise DataError(f"{side}: {spec}: the pattern matches no file")
        out: list[FrameRef] = []
        for m in matches:
            p = Path(m)
            if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
                continue
            out += frame_refs(m, frames_per_video, side)
        if not out:
            raise DataError(f"{side}: {spec}: the pattern matches no image or video")
        return out
    p = Path(spec).expanduser()
    if p.is_dir():
        for cand in (p / "annotations.json", p / "coco" / "annotations.json"):
            if cand.is_file():
                return _coco_images(cand)
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part in CROP_FOLDERS for part in f.relative_to(p).parts)]
        if images:
            return [FrameRef(f) for f in images]
        videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
        if videos:
            return [r for v in videos for r in _video_refs(v, frames_per_video)]
        raise DataError(f"{side}: {p}: the folder holds no image ({', '.join(IMAGE_EXTENSIONS)}) and no video "
                        f"({', '.join(VIDEO_EXTENSIONS)})")
    if p.is_file():
        ext = p.suffix.lower()
        if ext in VIDEO_EXTENSIONS:
            return _video_refs(p, frames_per_video)
        if ext in IMAGE_EXTENSIONS:
            return [FrameRef(p)]
        raise DataError(f"{side}: {p}: neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a video "
                        f"({', '.join(VIDEO_EXTENSIONS)})")
    raise DataError(f"{side}: {p}: no such file or folder")


def _video_size(path: Path) -> tuple[int, int]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()


def _header(ref: FrameRef, videos: dict[Path, tuple[int, int]] | None = None) -> tuple[tuple[int, int], int, str]:
    """((width, height), channels, mode) without decoding the pixels (videos: OpenCV's 3-channel frames)."""
    if ref.index is not None:
        videos = {} if videos is None else videos
        if ref.path not in videos:
            videos[ref.path] = _video_size(ref.path)
        return videos[ref.path], 3, "video"
    if not ref.path.is_file():
        raise DataError(f"{ref.path}: image file not found")
    try:
        with Image.open(ref.path) as im:
            return im.size, len(im.getbands()), im.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{ref.path}: corrupt or unreadable image ({e})") from e


def check_uniform(refs: Sequence[FrameRef], side: str) -> tuple[tuple[int, int], int]:
    """Every frame of a side has one size and one channel count (1 = grey or 3 = colour); returns them."""
    first: dict[str, Any] = {}
    videos: dict[Path, tuple[int, int]] = {}
    for ref in refs:
        size, channels, mode = _header(ref, videos)
        if not first:
            first = {"ref": ref, "size": size, "channels": channels, "mode": mode}
            if channels not in (1, 3):
                raise DataError(f"{side}: {ref.origin}: {channels}-channel image (mode {mode}); the refiner takes "
                                f"3-channel colour or 1-channel grey frames (drop the alpha channel)")
            continue
        if size != first["size"]:
            raise DataError(f"{side}: images of mixed sizes: {ref.origin} is {size[0]}x{size[1]} but "
                            f"{first['ref'].origin} is {first['size'][0]}x{first['size'][1]}; one side must hold "
                            f"frames of one size (one camera resolution): resize them or split the inputs")
        if channels != first["channels"]:
            raise DataError(f"{side}: images of mixed channels: {ref.origin} has {channels} channel(s) (mode {mode}) "
                            f"but {first['ref'].origin} has {first['channels']} (mode {first['mode']}); convert "
                            f"them to one colour mode")
    if not first:
        raise DataError(f"{side}: no frames")
    return first["size"], first["channels"]


def _decode(refs: Sequence[FrameRef], side: str) -> list[np.ndarray]:
    import cv2

    out: dict[int, np.ndarray] = {}
    videos: dict[Path, list[tuple[int, int]]] = {}
    for k, ref in enumerate(refs):
        if ref.index is None:
            try:
                out[k] = read_image(ref.path)
            except ImageReadError as e:
                raise DataError(f"{side}: {e}") from e
        else:
            videos.setdefault(ref.path, []).append((ref.index, k))
    for path, wanted in videos.items():
        cap = cv2.VideoCapture(str(path))
        try:
            todo = dict(wanted)
            i = 0
            while todo:
                if not cap.grab():
                    break
                if i in todo:
                    ok, bgr = cap.retrieve()
                    if not ok:
                        raise DataError(f"{side}: {path}: cannot decode frame {i}")
                    out[todo.pop(i)] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                i += 1
            if todo:
                raise DataError(f"{side}: {path}: the video ends after {i} frames, frame {min(todo)} is missing "
                                f"(truncated file?)")
        finally:
            cap.release()
    return [out[k] for k in range(len(refs))]


def _evenly(refs: list[FrameRef], n: int | None) -> list[FrameRef]:
    if not n or len(refs) <= n:
        return refs
    return [refs[i] for i in np.unique(np.linspace(0, len(refs) - 1, int(n)).round().astype(int))]


def load_frames(inputs: Sequence[str] | str, side: str, max_frames: int | None = None,
                frames_per_video: int = 100) -> Frames:
    """Decode the frames of one side after checking their headers (sizes and channels) first."""
    if isinstance(inputs, (str, Path)):
        inputs = [str(inputs)]
    inputs = [str(i) for i in inputs or []]
    if not inputs:
        raise DataError(f"{side}: no input given (a folder, COCO dataset, video file or glob pattern)")
    refs: list[FrameRef] = []
    for spec in inputs:
        refs += frame_refs(spec, frames_per_video, side)
    refs = _evenly(refs, max_frames)
    check_uniform(refs, side)
    images = _decode(refs, side)
    return Frames(side, images, [r.origin for r in refs], inputs)


def check_crops(frames: Frames, crop_size: int, min_crops: int) -> int:
    """Every frame holds a ``crop_size`` crop and the side offers ``min_crops`` non-overlapping crops."""
    w, h = frames.size
    if w < crop_size or h < crop_size:
        raise DataError(f"{frames.side}: frames are {w}x{h} ({frames.origins[0]}), smaller than the crop size "
                        f"{crop_size}: lower data.crop_size or give larger frames")
    per_frame = (w // crop_size) * (h // crop_size)
    distinct = len(frames) * per_frame
    if distinct < min_crops:
        raise DataError(f"{frames.side}: too few frames for crop size {crop_size}: {len(frames)} frame(s) of {w}x{h} "
                        f"give {distinct} non-overlapping {crop_size}-px crops, data.min_crops={min_crops} needed; "
                        f"add frames (e.g. more of the video: data.frames_per_video) or lower data.crop_size")
    return distinct


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """[N,]3xHxW in [-1, 1] -> [N,]HxWx3 uint8 (rounded)."""
    a = ((t.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu().numpy()
    return np.moveaxis(a, -3, -1)


def random_crop(rng: np.random.Generator, img: np.ndarray, size: int, flip: bool) -> np.ndarray:
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    c = img[y:y + size, x:x + size]
    if flip and rng.random() < 0.5:
        c = c[:, ::-1]
    return c


class CropPairs(Dataset):
    """``length`` items of (synthetic crop, real crop); item ``i`` of epoch ``e`` is drawn from (seed, e, i)."""

    def __init__(self, synthetic: Frames, real: Frames, crop_size: int, length: int, seed: int = 0,
                 flip: bool = True) -> None:
        self.synthetic, self.real = synthetic, real
        self.crop_size, self.length, self.seed, self.flip = int(crop_size), int(length), int(seed), bool(flip)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        s = self.synthetic.images[int(rng.integers(len(self.synthetic)))]
        r = self.real.images[int(rng.integers(len(self.real)))]
        return (to_tensor(random_crop(rng, s, self.crop_size, self.flip)),
                to_tensor(random_crop(rng, r, self.crop_size, self.flip)))


class UnpairedCropData(pl.LightningDataModule):
    """Synthetic and real frames (see the module docstring) -> batches of random crop pairs.

    ``steps_per_epoch`` batches of ``batch_size`` pairs make an epoch; ``max_frames`` caps the frames
    loaded per side (evenly spaced over the inputs), ``frames_per_video`` the frames sampled per video.
    """

    def __init__(self, synthetic: Sequence[str], real: Sequence[str], crop_size: int = 64, batch_size: int = 4,
                 steps_per_epoch: int = 100, max_frames: int | None = 300, frames_per_video: int = 100,
                 min_crops: int = 64, flip: bool = True, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        if isinstance(synthetic, str):
            synthetic = [synthetic]
        if isinstance(real, str):
            real = [real]
        self.synthetic_inputs = [str(s) for s in synthetic or []]
        self.real_inputs = [str(s) for s in real or []]
        if not self.synthetic_inputs:
            raise ConfigError("data.synthetic is empty: give synthetic frames (a generated dataset, folder or glob)")
        if not self.real_inputs:
            raise ConfigError("data.real is empty: give real unlabelled frames (a folder, video file or glob)")
        for key, v, lo in (("crop_size", crop_size, 16), ("batch_size", batch_size, 1),
                           ("steps_per_epoch", steps_per_epoch, 1), ("frames_per_video", frames_per_video, 1),
                           ("min_crops", min_crops, 1)):
            if int(v) < lo:
                raise ConfigError(f"data.{key} must be >= {lo}, got {v}")
        if int(crop_size) % 4:
            raise ConfigError(f"data.crop_size must be a multiple of 4 (the generator downsamples twice), "
                              f"got {crop_size}")
        if max_frames is not None and int(max_frames) < 1:
            raise ConfigError(f"data.max_frames must be >= 1 or null, got {max_frames}")
        self.crop_size = int(crop_size)
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.frames_per_video = int(frames_per_video)
        self.min_crops = int(min_crops)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.synthetic: Frames | None = None
        self.real: Frames | None = None
        self.dataset: CropPairs | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        syn = load_frames(self.synthetic_inputs, "data.synthetic", self.max_frames, self.frames_per_video)
        check_crops(syn, self.crop_size, self.min_crops)
        real = load_frames(self.real_inputs, "data.real", self.max_frames, self.frames_per_video)
        check_crops(real, self.crop_size, self.min_crops)
        self.synthetic, self.real = syn, real
        self.dataset = CropPairs(syn, real, self.crop_size, self.steps_per_epoch * self.batch_size, self.seed,
                                 self.flip)
        log.info("refiner data: %d synthetic frames %s, %d real frames %s, %d-px crops", len(syn), syn.size,
                 len(real), real.size, self.crop_size)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the synthetic frames: the resolution a refiner is trained for."""
        if self.synthetic is None:
            raise RuntimeError("call setup() first")
        return self.synthetic.size

    def set_epoch(self, epoch: int) -> None:
        if self.dataset is not None:
            self.dataset.epoch = int(epoch)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          drop_last=True, persistent_workers=False)

    def sample_images(self, count: int = 4, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed views for the per-epoch sample grid: centre crops of ``count`` evenly spaced frames per side."""
        self.setup()
        assert self.synthetic is not None and self.real is not None
        lim = min(*self.synthetic.size, *self.real.size)
        size = min(int(size or 4 * self.crop_size), lim) // 4 * 4

        def views(frames: Frames) -> torch.Tensor:
            idx = np.unique(np.linspace(0, len(frames) - 1, max(1, count)).round().astype(int))
            out = []
            for i in idx:
                img = frames.images[int(i)]
                h, w = img.shape[:2]
                y, x = (h - size) // 2, (w - size) // 2
                out.append(to_tensor(img[y:y + size, x:x + size]))
            return torch.stack(out)

        return views(self.synthetic), views(self.real)

    def summary(self) -> dict[str, Any]:
        self.setup()
        assert self.synthetic is not None and self.real is not None
        return {"synthetic": self.synthetic.summary(), "real": self.real.summary(), "crop_size": self.crop_size,
                "batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch}
