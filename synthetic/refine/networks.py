"""Networks of the refiner: a shallow ResNet generator, a PatchGAN discriminator and the CUT patch projector.

The generator downsamples only twice (so every output pixel stays tied to its input neighbourhood and
object outlines do not move) and, with ``residual=True``, predicts a change of the input rather than a new
image: it starts as the identity (its last convolution is zero) and training moves appearance only as far
as the losses ask. It is fully convolutional: trained on crops, applied to whole frames whose sides are
multiples of 4 (:func:`pad_to_multiple`).

:class:`CameraModel` is the other kind of generator: a handful of physical camera parameters (optics blur, a
colour matrix and offset, per-channel tone curves, read and shot noise) learned adversarially. It cannot move,
add or remove anything in a frame, so labels stay valid by construction, and what it learned can be read off as
numbers (:meth:`CameraModel.describe`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c), nn.ReLU(inplace=True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual blocks, two upsamplings, c7s1-3.

    ``encode(x, layers)`` returns the encoder features CUT's PatchNCE compares: layer 0 is the input image,
    1 the stem, 2 and 3 the downsamplings, 4.. the residual blocks.
    """

    DOWNSAMPLING = 2

    def __init__(self, ngf: int = 16, n_blocks: int = 4, residual: bool = True) -> None:
        super().__init__()
        if ngf < 1 or n_blocks < 0:
            raise ValueError(f"generator needs ngf >= 1 and n_blocks >= 0, got {ngf}, {n_blocks}")
        self.config = {"ngf": int(ngf), "n_blocks": int(n_blocks), "residual": bool(residual)}
        self.residual = bool(residual)
        enc: list[nn.Module] = [nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), _norm(ngf),
                                              nn.ReLU(inplace=True))]
        c = ngf
        for _ in range(self.DOWNSAMPLING):
            enc.append(nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(2 * c), nn.ReLU(inplace=True)))
            c *= 2
        enc += [ResnetBlock(c) for _ in range(n_blocks)]
        self.encoder = nn.ModuleList(enc)
        self.channels = [3, ngf] + [ngf * 2 ** (i + 1) for i in range(self.DOWNSAMPLING)] + [c] * n_blocks
        dec: list[nn.Module] = []
        for _ in range(self.DOWNSAMPLING):  # nearest upsampling + conv: no checkerboard artefacts
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(c, c // 2, 3),
                    _norm(c // 2), nn.ReLU(inplace=True)]
            c //= 2
        self.decoder = nn.Sequential(*dec)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c, 3, 7))
        if self.residual:
            nn.init.zeros_(self.head[1].weight)
            nn.init.zeros_(self.head[1].bias)

    @property
    def num_layers(self) -> int:
        return len(self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for m in self.encoder:
            h = m(h)
        delta = self.head(self.decoder(h))
        if self.residual:  # identity at delta = 0, smooth, always inside (-1, 1)
            return torch.tanh(torch.atanh(x.clamp(-0.999, 0.999)) + delta)
        return torch.tanh(delta)

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        wanted = set(int(k) for k in layers)
        feats = [x] if 0 in wanted else []
        h = x
        for i, m in enumerate(self.encoder, start=1):
            if i > max(wanted):
                break
            h = m(h)
            if i in wanted:
                feats.append(h)
        return feats


class CameraModel(nn.Module):
    """A learned camera: ``x`` (a rendered frame in [-1, 1]) -> what a real camera would have recorded.

    In linear order on [0, 1] intensities: a Gaussian optics blur of ``sigma`` in [0, ``max_blur``] px, a 3x3
    colour matrix plus offset (white balance, saturation, black level), a per-channel tone curve ``u**gamma``,
    and sensor noise of standard deviation ``sqrt(read**2 + shot**2 * u)`` (read and shot in [0, ``max_noise``]).
    Every operation is the same at every pixel and looks no further than the blur radius, so nothing in the
    frame moves. Starts near the identity: identity colour and tone, noise near zero and a 0.5 px blur (a
    blur much narrower than a pixel has no gradient to learn from).
    ``seeds`` (one int per image) makes the noise reproducible per image; without it the noise is fresh.
    """

    def __init__(self, max_blur: float = 1.5, max_noise: float = 0.08, type: str = "camera") -> None:
        super().__init__()
        if type != "camera":
            raise ValueError(f"CameraModel config has type {type!r}")
        if not (0 < max_blur <= 8) or not (0 < max_noise <= 0.5):
            raise ValueError(f"camera model needs 0 < max_blur <= 8 px and 0 < max_noise <= 0.5, got "
                             f"{max_blur}, {max_noise}")
        self.config = {"type": "camera", "max_blur": float(max_blur), "max_noise": float(max_noise)}
        self.max_blur, self.max_noise = float(max_blur), float(max_noise)
        self.radius = int(math.ceil(3 * self.max_blur))
        self.colour = nn.Parameter(torch.eye(3))
        self.offset = nn.Parameter(torch.zeros(3))
        self.log_gamma = nn.Parameter(torch.zeros(3))
        self.blur_logit = nn.Parameter(torch.logit(torch.tensor(min(0.5 / self.max_blur, 0.5))))
        self.noise_logit = nn.Parameter(torch.tensor([-4.0, -4.0]))  # read, shot

    def sigma(self) -> torch.Tensor:
        return self.max_blur * torch.sigmoid(self.blur_logit)

    def noise_levels(self) -> torch.Tensor:
        return self.max_noise * torch.sigmoid(self.noise_logit)

    def blur(self, u: torch.Tensor) -> torch.Tensor:
        r = self.radius
        t = torch.arange(-r, r + 1, device=u.device, dtype=u.dtype)
        k = torch.exp(-t ** 2 / (2 * (self.sigma().to(u.dtype) + 1e-3) ** 2))
        k = k / k.sum()
        c = u.shape[1]
        mode = "reflect" if min(u.shape[-2:]) > r else "replicate"
        u = F.conv2d(F.pad(u, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(F.pad(u, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    def forward(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        u = self.blur((x + 1) * 0.5)
        u = torch.einsum("ij,bjhw->bihw", self.colour.to(u.dtype), u) + self.offset.to(u.dtype).view(1, 3, 1, 1)
        u = u.clamp(1e-4, 1.0) ** torch.exp(self.log_gamma).to(u.dtype).view(1, 3, 1, 1)
        read, shot = self.noise_levels().to(u.dtype)
        std = torch.sqrt(read ** 2 + shot ** 2 * u + 1e-10)
        if seeds is None:
            eps = torch.randn_like(u)
        else:
            if len(seeds) != u.shape[0]:
                raise ValueError(f"{len(seeds)} noise seeds for {u.shape[0]} images")
            eps = torch.stack([torch.randn(u.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                               for s in seeds]).to(u.device, u.dtype)
        return ((u + std * eps).clamp(0.0, 1.0) * 2 - 1)

    @torch.no_grad()
    def describe(self) -> dict[str, Any]:
        """The learned camera in numbers: blur sigma (px), colour matrix and offset, gammas, noise levels
        (fractions of the intensity range)."""
        read, shot = self.noise_levels().tolist()
        return {"blur_sigma_px": round(float(self.sigma()), 4),
                "colour_matrix": [[round(float(v), 4) for v in row] for row in self.colour],
                "colour_offset": [round(float(v), 4) for v in self.offset],
                "gamma": [round(float(v), 4) for v in torch.exp(self.log_gamma)],
                "read_noise": round(read, 5), "shot_noise": round(shot, 5)}


def build_generator(config: dict[str, Any]) -> nn.Module:
    """A generator from the settings a checkpoint recorded: :class:`CameraModel` for ``type: camera``, else the
    ResNet :class:`Generator`."""
    config = dict(config)
    if config.get("type") == "camera":
        return CameraModel(**config)
    config.pop("type", None)
    return Generator(**config)


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix): ``n_layers`` stride-2 convolutions, one real/fake score per overlapping patch."""

    def __init__(self, ndf: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        c = ndf
        for n in range(1, n_layers):
            c2 = ndf * min(2 ** n, 8)
            layers += [nn.Conv2d(c, c2, 4, stride=2, padding=1), _norm(c2), nn.LeakyReLU(0.2, True)]
            c = c2
        c2 = ndf * min(2 ** n_layers, 8)
        layers += [nn.Conv2d(c, c2, 4, stride=1, padding=1), _norm(c2), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(c2, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)
        self.n_layers = int(n_layers)

    @staticmethod
    def min_input(n_layers: int) -> int:
        """The smallest square input whose last normalized map is larger than 1x1."""
        return 2 ** (n_layers + 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchSampler(nn.Module):
    """CUT's projection head: ``num_patches`` locations per layer, a 2-layer MLP, L2-normalized."""

    def __init__(self, channels: Sequence[int], dim: int = 128) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
                                  for c in channels)

    def forward(self, feats: Sequence[torch.Tensor], num_patches: int,
                patch_ids: Sequence[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        out, ids = [], []
        for k, (f, mlp) in enumerate(zip(feats, self.mlps)):
            b, c, h, w = f.shape
            flat = f.permute(0, 2, 3, 1).reshape(b, h * w, c)
            if patch_ids is not None:
                idx = patch_ids[k]
            else:
                idx = torch.randperm(h * w, device=f.device)[:min(num_patches, h * w)]
            x = mlp(flat[:, idx, :].reshape(-1, c))
            out.append(F.normalize(x, dim=1))
            ids.append(idx)
        return out, ids


def patch_nce_loss(q: torch.Tensor, k: torch.Tensor, batch_size: int, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE: each output patch must match the input patch at its location against the other patches
    of the same image (``q``, ``k``: ``[B * P, D]``, L2-normalized; keys are not back-propagated)."""
    k = k.detach()
    n, d = q.shape
    pos = (q * k).sum(1, keepdim=True)
    qb, kb = q.view(batch_size, -1, d), k.view(batch_size, -1, d)
    p = qb.shape[1]
    neg = torch.bmm(qb, kb.transpose(1, 2))
    neg = neg.masked_fill(torch.eye(p, dtype=torch.bool, device=q.device)[None], -10.0).view(-1, p)
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=q.device))


def pad_to_multiple(x: torch.Tensor, m: int = 4) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad ``[N, C, H, W]`` on the bottom/right to multiples of ``m``; returns it and the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    return x, (h, w)
