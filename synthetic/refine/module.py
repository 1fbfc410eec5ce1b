"""The refiner as a LightningModule: unpaired synthetic -> real translation, CUT or CycleGAN.

``mode: cut`` (contrastive unpaired translation, Park et al. 2020): one generator ``netG`` (synthetic ->
real), one PatchGAN ``netD``, an LSGAN loss and PatchNCE on the generator's encoder features (each output
patch must stay closest to the input patch at the same place, which is what keeps geometry and labels),
plus the identity NCE term on real crops (``nce_idt``). Light: one direction, no second generator.

``lambda_self_reg`` (both modes, off by default) adds SimGAN-style self-regularization (Shrivastava et al. 2017)
on the coarse image: L1 between the ``self_reg_pool``-times average-pooled synthetic input and its refinement,
so the refiner cannot repaint whole regions (a global tint toward the real scene's dominant colours, e.g. its
lawn) while noise, blur and texture stay free to change.

``mode: camera``: ``netG`` is a :class:`~synthetic.refine.networks.CameraModel` (optics blur, colour matrix,
tone curves, sensor noise: a dozen numbers, trained with the LSGAN loss alone at ``lr_camera``). It can only
change how the camera records the scene, never the scene, so it needs no PatchNCE; the learned values are
logged every epoch (``camera/*``) and written into the checkpoint.

``mode: cyclegan`` (Zhu et al. 2017): ``netG`` (synthetic -> real) and ``netG_B`` (real -> synthetic), two
discriminators, LSGAN + cycle-consistency L1 (``lambda_cycle``) + identity L1 (``lambda_identity``).

Both train with manual optimization (discriminator step, then generator step, per batch), log every loss
per step and per epoch, and write ``checkpoint["vision"]`` with ``task: refiner``, the mode, the crop size,
the synthetic frame size the refiner is tied to, the generator's architecture and the MLflow run: what
:class:`synthetic.refine.apply.Refiner` needs to rebuild it and to refuse mismatched data.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from PIL import Image

from synthetic.refine.data import to_uint8
from synthetic.refine.networks import CameraModel, Generator, PatchDiscriminator, PatchSampler, patch_nce_loss
from vision.errors import ConfigError
from vision.tasks.base import CHECKPOINT_KEY, check_task
from vision.utils.io import atomic_write_bytes

MODES = ("cut", "cyclegan", "camera")


def _lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


class RefinerModule(pl.LightningModule):
    """See the module docstring. ``nce_layers`` index :meth:`Generator.encode` (0 = input image)."""

    task_name: ClassVar[str] = "refiner"

    def __init__(self, mode: str = "cut", ngf: int = 16, n_blocks: int = 4, residual: bool = True, ndf: int = 32,
                 n_layers_d: int = 3, nce_layers: Sequence[int] = (0, 1, 2, 3, 5), nce_t: float = 0.07,
                 num_patches: int = 128, mlp_dim: int = 128, nce_idt: bool = True, lambda_gan: float = 1.0,
                 lambda_nce: float = 1.0, lambda_cycle: float = 10.0, lambda_identity: float | None = None,
                 lambda_self_reg: float = 0.0, self_reg_pool: int = 8, lr: float = 2e-4, beta1: float = 0.5,
                 beta2: float = 0.999, max_blur: float = 1.5, max_noise: float = 0.08,
                 lr_camera: float = 5e-3) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"model.mode must be one of {MODES}, got {mode!r}")
        nce_layers = [int(k) for k in nce_layers]  # plain types in the checkpoint (Hydra hands over ListConfig)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.mode = mode
        if mode == "camera":
            try:
                self.netG: nn.Module = CameraModel(max_blur, max_noise)
            except ValueError as e:
                raise ConfigError(f"model.max_blur / model.max_noise: {e}") from e
        else:
            self.netG = Generator(ngf, n_blocks, residual)
        self.netD = PatchDiscriminator(ndf, n_layers_d)
        self.nce_layers = [int(k) for k in nce_layers]
        if mode == "cut":
            if not self.nce_layers or min(self.nce_layers) < 0 or max(self.nce_layers) >= self.netG.num_layers:
                raise ConfigError(f"model.nce_layers must be indices in [0, {self.netG.num_layers - 1}] of the "
                                  f"generator's encoder (0 = input, 1 = stem, 2-3 = downsamplings, 4.. = blocks), "
                                  f"got {list(nce_layers)}")
            self.netF = PatchSampler([self.netG.channels[k] for k in self.nce_layers], mlp_dim)
        elif mode == "cyclegan":
            self.netG_B = Generator(ngf, n_blocks, residual)
            self.netD_B = PatchDiscriminator(ndf, n_layers_d)
        self.lambda_identity = (0.0 if mode == "cut" else 0.5 * lambda_cycle) if lambda_identity is None \
            else float(lambda_identity)
        if lambda_self_reg < 0 or self_reg_pool < 1:
            raise ConfigError(f"model.lambda_self_reg must be >= 0 and model.self_reg_pool >= 1, got "
                              f"{lambda_self_reg}, {self_reg_pool}")
        self.vision_meta: dict[str, Any] = {}

    # -- checks ----------------------------------------------------------------------------------
    def check_crop(self, crop_size: int) -> None:
        """A crop the discriminator can score (its last normalized map must be larger than 1x1)."""
        need = PatchDiscriminator.min_input(self.hparams.n_layers_d)
        if crop_size < need:
            raise ConfigError(f"data.crop_size={crop_size} is too small for a {self.hparams.n_layers_d}-layer "
                              f"PatchGAN: use data.crop_size >= {need} or fewer model.n_layers_d")

    def generator_config(self) -> dict[str, Any]:
        return dict(self.netG.config)

    # -- training --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.netG(x)

    def configure_optimizers(self):
        betas = (self.hparams.beta1, self.hparams.beta2)
        if self.mode == "cut":
            g_params = list(self.netG.parameters()) + list(self.netF.parameters())
            d_params = list(self.netD.parameters())
        elif self.mode == "camera":  # a dozen physical parameters: a larger step than a network's weights
            return [torch.optim.Adam(self.netG.parameters(), lr=self.hparams.lr_camera, betas=betas),
                    torch.optim.Adam(self.netD.parameters(), lr=self.hparams.lr, betas=betas)]
        else:
            g_params = list(self.netG.parameters()) + list(self.netG_B.parameters())
            d_params = list(self.netD.parameters()) + list(self.netD_B.parameters())
        return [torch.optim.Adam(g_params, lr=self.hparams.lr, betas=betas),
                torch.optim.Adam(d_params, lr=self.hparams.lr, betas=betas)]

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)

    def nce_loss(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        feat_k = self.netG.encode(src, self.nce_layers)
        feat_q = self.netG.encode(out, self.nce_layers)
        k_pool, ids = self.netF(feat_k, self.hparams.num_patches)
        q_pool, _ = self.netF(feat_q, self.hparams.num_patches, ids)
        b = src.shape[0]
        return torch.stack([patch_nce_loss(q, k, b, self.hparams.nce_t) for q, k in zip(q_pool, k_pool)]).mean()

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch  # synthetic crops, real crops
        opt_g, opt_d = self.optimizers()
        b = x.shape[0]
        hp = self.hparams
        logs: dict[str, torch.Tensor] = {}
        if self.mode == "cut":
            out = self.netG(torch.cat([x, y]) if hp.nce_idt else x)
            fake, idt = out[:b], (out[b:] if hp.nce_idt else None)
            loss_d = self._d_step(opt_d, lambda: self._d_loss(self.netD, y, fake))
            # generator + projection head
            self.toggle_optimizer(opt_g)
            loss_gan = _lsgan(self.netD(fake), True)
            loss_nce = self.nce_loss(x, fake)
            if idt is not None:
                loss_nce_y = self.nce_loss(y, idt)
                logs["train/loss_nce_idt"] = loss_nce_y.detach()
                loss_nce = 0.5 * (loss_nce + loss_nce_y)
            loss_g = hp.lambda_gan * loss_gan + hp.lambda_nce * loss_nce
            if self.lambda_identity > 0 and idt is not None:
                loss_i = F.l1_loss(idt, y)
                logs["train/loss_identity"] = loss_i.detach()
                loss_g = loss_g + self.lambda_identity * loss_i
            logs["train/loss_nce"] = loss_nce.detach()
        elif self.mode == "camera":  # the GAN loss alone: the camera model cannot move anything
            fake = self.netG(x)
            loss_d = self._d_step(opt_d, lambda: self._d_loss(self.netD, y, fake))
            self.toggle_optimizer(opt_g)
            loss_gan = _lsgan(self.netD(fake), True)
            loss_g = hp.lambda_gan * loss_gan
        else:
            fake = self.netG(x)
            fake_b = self.netG_B(y)
            loss_d = self._d_step(opt_d, lambda: self._d_loss(self.netD, y, fake) + self._d_loss(self.netD_B, x, fake_b))
            self.toggle_optimizer(opt_g)
            loss_gan = _lsgan(self.netD(fake), True) + _lsgan(self.netD_B(fake_b), True)
            loss_cyc = F.l1_loss(self.netG_B(fake), x) + F.l1_loss(self.netG(fake_b), y)
            loss_g = hp.lambda_gan * loss_gan + hp.lambda_cycle * loss_cyc
            if self.lambda_identity > 0:
                loss_i = F.l1_loss(self.netG(y), y) + F.l1_loss(self.netG_B(x), x)
                logs["train/loss_identity"] = loss_i.detach()
                loss_g = loss_g + self.lambda_identity * loss_i
            logs["train/loss_cycle"] = loss_cyc.detach()
        if hp.lambda_self_reg > 0:  # SimGAN-style self-regularization on the coarse image: no global tint
            loss_s = self.self_reg(x, fake)
            logs["train/loss_self_reg"] = loss_s.detach()
            loss_g = loss_g + hp.lambda_self_reg * loss_s
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        logs.update({"train/loss_D": loss_d.detach(), "train/loss_G": loss_g.detach(),
                     "train/loss_gan": loss_gan.detach(),
                     "train/l1_change": (fake.detach() - x).abs().mean()})  # how far refinement moves pixels
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=b)

    @staticmethod
    def _d_loss(net_d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (_lsgan(net_d(real), True) + _lsgan(net_d(fake.detach()), False))

    def _d_step(self, opt_d, loss_fn) -> torch.Tensor:
        """One discriminator update (its parameters alone are trainable meanwhile); returns its loss."""
        self.toggle_optimizer(opt_d)
        loss_d = loss_fn()
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        return loss_d

    def on_train_epoch_end(self) -> None:
        if self.mode == "camera":
            self.log_dict(camera_metrics(self.netG.describe()))

    def self_reg(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """L1 between ``self_reg_pool``-times average-pooled source and output: ties colour and brightness at a
        coarse scale to the source and leaves fine appearance (noise, blur, texture, edges' softness) free."""
        k = int(self.hparams.self_reg_pool)
        return F.l1_loss(F.avg_pool2d(out, k, ceil_mode=True), F.avg_pool2d(src, k, ceil_mode=True))

    @torch.no_grad()
    def refine(self, x: torch.Tensor) -> torch.Tensor:
        was = self.netG.training
        self.netG.eval()
        try:
            return self.netG(x)
        finally:
            self.netG.train(was)

    # -- checkpoints -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = {"task": self.task_name, **self.vision_meta}
        meta["refiner"] = {**meta.get("refiner", {}), "mode": self.mode, "generator": self.generator_config()}
        if self.mode == "camera":
            meta["refiner"]["camera"] = self.netG.describe()
        checkpoint[CHECKPOINT_KEY] = meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_task(checkpoint, self.task_name, "resume")


def camera_metrics(camera: dict[str, Any]) -> dict[str, float]:
    """:meth:`CameraModel.describe` flattened to scalar metrics (``camera/colour_matrix_0_1``...)."""
    out: dict[str, float] = {}
    for k, v in camera.items():
        arr = np.asarray(v, dtype=np.float64)
        if arr.ndim == 0:
            out[f"camera/{k}"] = float(arr)
        else:
            for idx in np.ndindex(arr.shape):
                out[f"camera/{k}_" + "_".join(map(str, idx))] = float(arr[idx])
    return out


def image_grid(rows: Sequence[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Rows of ``[N, 3, H, W]`` images in [-1, 1] (same H, W) -> one HxWx3 uint8 grid, white gutters."""
    n = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[-2:]
    grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        imgs = to_uint8(r)
        for j, im in enumerate(imgs):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = im
    return grid


class SampleGrid(pl.Callback):
    """After every epoch: a grid of synthetic / refined / real views (rows) of fixed frames, written to
    ``dirpath/epoch_NNN.png`` and logged to the MLflow run under ``samples/``."""

    def __init__(self, dirpath: str, count: int = 4, size: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.count = int(count)
        self.size = size
        self.paths: list[Path] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: RefinerModule) -> None:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "sample_images") or not trainer.is_global_zero:
            return
        syn, real = dm.sample_images(self.count, self.size)
        refined = pl_module.refine(syn.to(pl_module.device)).float().cpu()
        grid = image_grid([syn, refined, real])
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        path = atomic_write_bytes(self.dirpath / f"epoch_{trainer.current_epoch:03d}.png", buf.getvalue())
        self.paths.append(path)
        logger = trainer.logger
        run_id = getattr(logger, "run_id", None)
        if run_id and hasattr(logger, "experiment") and hasattr(logger.experiment, "log_artifact"):
            logger.experiment.log_artifact(run_id, str(path), "samples")
