"""Person re-identification: identity cross-entropy + batch-hard triplet (+ centre) training, Market-1501
protocol evaluation (rank-1/5/10, mAP, mINP, cross-camera, optional k-reciprocal re-ranking).

Batches: training ``(image, identity index, sample index)`` from the P x K sampler; evaluation
``(image, identity index, camera index, sample index, role)`` with role 0 = query, 1 = gallery and
identity -1 = junk (see :class:`vision.data.reid.ReidDataModule`). The test also writes a CMC curve and a
ranked-gallery image under ``<trainer.default_root_dir>/eval/`` (listed in ``test_report["artifacts"]``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vision.data.reid import camera_key
from vision.errors import DataError
from vision.losses.reid import CenterLoss, batch_hard_triplet, identity_loss
from vision.metrics import reid as reid_metrics
from vision.metrics.slices import field_value
from vision.tasks.base import CHECKPOINT_KEY, VisionTask

log = logging.getLogger(__name__)
GALLERY_RESTRICTED = ("source", "kind")  # slices over these compare queries with their own gallery only


class ReidTask(VisionTask):
    task_name = "reid"

    def __init__(self, model: nn.Module, optimizer: Callable[..., Any], scheduler: Callable[..., Any] | None = None,
                 label_smoothing: float = 0.1, id_weight: float = 1.0, triplet_weight: float = 1.0,
                 triplet_margin: float = 0.3, soft_margin: bool = False, center_weight: float = 0.0,
                 distance: str = "cosine", exclude_same_camera: bool = True, cross_camera: bool = True,
                 rerank: bool = False, rerank_k1: int = 20, rerank_k2: int = 6, rerank_lambda: float = 0.3,
                 max_rank: int = 50, monitor: str = "val/map", monitor_mode: str = "max",
                 labels: list[str] | None = None, seed: int = 0, slice_by: list[str] | None = None,
                 plot_queries: int = 6, plot_top_k: int = 8) -> None:
        """``slice_by``: held-out metrics also per ``source`` / ``kind`` (queries against their own source's
        gallery) and per any provenance field (those queries against the whole gallery)."""
        super().__init__(model, optimizer, scheduler, monitor, monitor_mode, labels, seed)
        if not self.labels:
            raise ValueError("ReidTask needs the training identities (filled in from the data)")
        if distance not in ("cosine", "euclidean"):
            raise ValueError(f"task.distance must be 'cosine' or 'euclidean', got {distance!r}")
        if min(id_weight, triplet_weight, center_weight) < 0 or id_weight + triplet_weight <= 0:
            raise ValueError("task loss weights must be >= 0, and id_weight or triplet_weight > 0")
        self.label_smoothing = label_smoothing
        self.id_weight, self.triplet_weight, self.center_weight = id_weight, triplet_weight, center_weight
        self.triplet_margin, self.soft_margin = triplet_margin, soft_margin
        self.distance = distance
        self.exclude_same_camera = exclude_same_camera
        self.cross_camera = cross_camera
        self.rerank = rerank
        self.rerank_params = {"k1": rerank_k1, "k2": rerank_k2, "lambda_value": rerank_lambda}
        self.max_rank = max_rank
        self.slice_by = list(slice_by if slice_by is not None else ["source", "kind"])
        self.plot_queries, self.plot_top_k = plot_queries, plot_top_k
        dim = int(getattr(model, "embedding_dim", 0) or 0)
        if center_weight > 0 and not dim:
            raise ValueError("task.center_weight > 0 needs a model with an embedding_dim")
        self.center = CenterLoss(len(self.labels), dim) if center_weight > 0 else None
        self._buf: dict[str, list[torch.Tensor]] = {}
        self.test_report: dict[str, Any] | None = None
        self.val_report: dict[str, Any] | None = None

    # -- training ----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        feats, logits = self.model(x)
        n = len(y)
        loss = feats.new_zeros(())
        if self.id_weight > 0:
            id_loss = identity_loss(logits, y, self.label_smoothing)
            loss = loss + self.id_weight * id_loss
            self.log("train/id_loss", id_loss, on_step=False, on_epoch=True, batch_size=n)
        if self.triplet_weight > 0:
            tri, stats = batch_hard_triplet(feats, y, self.triplet_margin, self.soft_margin)
            loss = loss + self.triplet_weight * tri
            self.log("train/triplet_loss", tri, on_step=False, on_epoch=True, batch_size=n)
            self.log("train/triplet_active", stats["active"], on_step=False, on_epoch=True, batch_size=n)
        if self.center is not None:
            c = self.center(feats, y)
            loss = loss + self.center_weight * c
            self.log("train/center_loss", c, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True, batch_size=n)
        return loss

    # -- evaluation --------------------------------------------------------------------------------
    def _datamodule(self):
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def _check_cross_camera(self, stages: tuple[str, ...]) -> None:
        dm = self._datamodule()
        if not self.cross_camera or dm is None or not hasattr(dm, "eval_dataset"):
            return
        for stage in stages:
            ds = dm.eval_dataset(stage)
            cams = [ds.camera_index.get(str(camera_key(s)), -1) for s in ds.samples]
            try:
                reid_metrics.check_cross_camera(cams, f"the {stage} query/gallery set")
            except reid_metrics.ReidEvalError as e:
                raise DataError(str(e)) from e

    def on_fit_start(self) -> None:
        self._check_cross_camera(("val", "test"))

    def on_test_start(self) -> None:
        self._check_cross_camera(("test",))

    def _reset(self) -> None:
        self._buf = {k: [] for k in ("emb", "ident", "cam", "index", "role")}

    def _collect(self, batch) -> None:
        x, ident, cam, index, role = batch[:5]
        emb = self(x)
        if isinstance(emb, tuple):  # a model left in training mode by a caller
            raise RuntimeError("ReidTask evaluation needs the model in eval mode (it returned a tuple)")
        for k, v in zip(("emb", "ident", "cam", "index", "role"), (emb.float(), ident, cam, index, role)):
            self._buf[k].append(v.detach())

    def _gathered(self) -> dict[str, np.ndarray]:
        return self.gather_by_index(self._buf)

    def _evaluate(self, data: dict[str, np.ndarray], q: np.ndarray, g: np.ndarray, cross_camera: bool = False,
                  names: list[str] | None = None) -> dict[str, Any]:
        dist = reid_metrics.distance_matrix(data["emb"][q], data["emb"][g], self.distance)
        return reid_metrics.evaluate(dist, data["ident"][q], data["ident"][g], data["cam"][q], data["cam"][g],
                                     self.max_rank, self.exclude_same_camera, cross_camera, names)

    def on_validation_epoch_start(self) -> None:
        self._reset()

    def validation_step(self, batch, batch_idx):
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        data = self._gathered()
        q, g = np.flatnonzero(data["role"] == 0), np.flatnonzero(data["role"] == 1)
        if len(q) == 0 or len(g) == 0:
            raise DataError("the validation set has no query or no gallery images")
        res = self._evaluate(data, q, g)
        self.val_report = reid_metrics.summary(res)
        self.log("val/rank1", res["rank1"], prog_bar=True)
        self.log("val/map", res["map"], prog_bar=True)
        self.log("val/minp", res["minp"])
        self.log("val/rank5", res["rank5"])
        self._reset()

    def on_test_epoch_start(self) -> None:
        self._reset()

    def test_step(self, batch, batch_idx):
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        data = self._gathered()
        self._reset()
        dm = self._datamodule()
        samples = None
        if dm is not None and hasattr(dm, "eval_samples"):
            qs, gs = dm.eval_samples("test")
            samples = qs + gs
        q, g = np.flatnonzero(data["role"] == 0), np.flatnonzero(data["role"] == 1)
        if len(q) == 0 or len(g) == 0:
            raise DataError("the test set has no query or no gallery images")
        names = [samples[i].key for i in data["index"][q]] if samples else None
        main = self._evaluate(data, q, g, names=names)
        report: dict[str, Any] = {**reid_metrics.summary(main), "distance": self.distance,
                                  "exclude_same_camera": self.exclude_same_camera}
        warnings = list(getattr(dm, "info", {}).get("warnings", [])) if dm is not None else []
        if main["num_invalid"]:
            warnings.append(f"{main['num_invalid']} of {main['num_queries']} test queries have no valid gallery match "
                            f"and are not scored (see invalid_queries)")
        curves = {"all": main["cmc"]}
        report["cross_camera"] = None
        if self.cross_camera:
            cc = self._evaluate(data, q, g, cross_camera=True, names=names)
            report["cross_camera"] = reid_metrics.summary(cc)
            curves["cross-camera"] = cc["cmc"]
        if self.rerank:
            dist = reid_metrics.re_rank(
                reid_metrics.distance_matrix(data["emb"][q], data["emb"][g], self.distance),
                reid_metrics.distance_matrix(data["emb"][q], data["emb"][q], self.distance),
                reid_metrics.distance_matrix(data["emb"][g], data["emb"][g], self.distance), **self.rerank_params)
            rr = reid_metrics.evaluate(dist, data["ident"][q], data["ident"][g], data["cam"][q], data["cam"][g],
                                       self.max_rank, self.exclude_same_camera, False, names)
            report["reranked"] = {**reid_metrics.summary(rr), **self.rerank_params}
            curves["re-ranked"] = rr["cmc"]
        if samples and self.slice_by:
            report["slices"] = self._slices(data, q, g, samples, dm)
        report["warnings"] = warnings
        report["artifacts"] = self._plots(data, q, g, samples, main, curves)
        self.test_report = report
        for k in ("rank1", "rank5", "rank10", "map", "minp"):
            self.log(f"test/{k}", report[k])
        self.log("test/num_invalid_queries", float(main["num_invalid"]))
        for sub in ("cross_camera", "reranked"):
            if report.get(sub):
                for k in ("rank1", "map", "minp"):
                    self.log(f"test/{sub}/{k}", report[sub][k])
        for field, values in (report.get("slices") or {}).items():
            if len(values) > 1:
                for value, m in values.items():
                    for k in ("rank1", "map"):
                        self.log(f"test/{k}/{field}/{value}", m[k])

    def _slices(self, data, q, g, samples, dm) -> dict[str, dict[str, dict[str, Any]]]:
        kinds = {name: dm.source_kind(name) for name in dm.sources} if hasattr(dm, "sources") else {}
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for field in self.slice_by:
            values = np.asarray([field_value(samples[i], field, kinds) for i in data["index"]], dtype=object)
            out[field] = {}
            for value in sorted(set(values[q])):
                qs = q[values[q] == value]
                gs = g[values[g] == value] if field in GALLERY_RESTRICTED else g
                if len(gs) == 0:
                    continue
                r = self._evaluate(data, qs, gs)
                out[field][str(value)] = {k: r[k] for k in ("rank1", "rank5", "map", "minp", "num_queries",
                                                             "num_valid", "num_gallery")}
        return out

    def _out_dir(self) -> Path:
        root = Path(self.trainer.default_root_dir) if self._trainer is not None else Path(".")
        d = root / "eval"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _plots(self, data, q, g, samples, main, curves) -> dict[str, str]:
        if self._trainer is not None and not self.trainer.is_global_zero:
            return {}
        out = self._out_dir()
        files = {"cmc_curve": reid_metrics.plot_cmc(curves, str(out / "test_cmc.png"), "test CMC",
                                                    max_rank=min(20, len(g)))}
        if samples and self.plot_queries > 0:
            valid = np.flatnonzero(main["first_match"] >= 0)
            if len(valid):
                pick = valid[np.unique(np.linspace(0, len(valid) - 1, min(self.plot_queries, len(valid))).astype(int))]
                dist = reid_metrics.distance_matrix(data["emb"][q[pick]], data["emb"][g], self.distance)
                rows = []
                for r, qi in enumerate(q[pick]):
                    order = np.argsort(dist[r], kind="stable")
                    same_cam = (data["cam"][g][order] == data["cam"][qi]) & (data["cam"][qi] >= 0)
                    ident = data["ident"][g][order]
                    keep = ~((ident == reid_metrics.JUNK) | (self.exclude_same_camera & same_cam & (ident == data["ident"][qi])))
                    order = order[keep][:self.plot_top_k]
                    rows.append({"path": samples[data["index"][qi]].path, "label": samples[data["index"][qi]].label,
                                 "results": [{"path": samples[data["index"][g[j]]].path,
                                              "match": bool(data["ident"][g[j]] == data["ident"][qi]),
                                              "distance": float(dist[r, j])} for j in order]})
                files["ranked_gallery"] = reid_metrics.plot_ranked_gallery(
                    rows, str(out / "test_ranked_gallery.png"), self.plot_top_k,
                    title="test queries (left) and their top gallery matches: green = same identity")
        return files

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_KEY]["reid"] = {
            "embedding_dim": int(getattr(self.model, "embedding_dim", 0) or 0), "distance": self.distance,
            "normalized": True, "output": "L2-normalized embedding [N, D] in eval mode"}
