"""Person re-identification embedders for edge devices: backbone -> global pooling -> embedding -> BN-neck.

Backbones (all from scratch unless ``pretrained`` names a local file):

- ``osnet_x1_0`` / ``osnet_x0_75`` / ``osnet_x0_5`` / ``osnet_x0_25``: an omni-scale network in the style of
  OSNet (Zhou et al., ICCV 2019): residual bottlenecks whose middle is T = 4 streams of 1..4 stacked
  lightweight 3x3 convolutions (pointwise + depthwise), fused by a *unified aggregation gate* (one channel
  gate shared by all streams) so each block mixes receptive fields of several scales;
- ``resnet18`` / ``resnet34``: torchvision's BasicBlock layout, width-scaled (``width_mult``), last stride 1;
- ``mobilenet_v2``: torchvision's MobileNetV2 features, width-scaled.

Head (the BN-neck of Luo et al., "Bag of Tricks", 2019), built from 1x1 convolutions only:
``GAP -> 1x1 conv (embedding_dim) -> BatchNorm (frozen bias) -> 1x1 conv classifier``. In training
``forward`` returns ``(embedding before the BN, identity logits)`` (triplet loss on the first, identity
cross-entropy on the second); in eval / export it returns the L2-normalized BN'd embedding ``[N, D]``.
Everything is static-shape (conv, BN, ReLU, sigmoid, pooling): exports to ONNX with ``dynamo=False``.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from vision.errors import CheckpointError
from vision.models import pretrained as pretrained_mod
from vision.models.classifiers import ScaledResNet, _round8

log = logging.getLogger(__name__)

OSNET_WIDTHS = {"osnet_x1_0": 1.0, "osnet_x0_75": 0.75, "osnet_x0_5": 0.5, "osnet_x0_25": 0.25}
ARCHS = (*OSNET_WIDTHS, "resnet18", "resnet34", "mobilenet_v2")


def _round4(x: float) -> int:
    return max(4, int(round(x / 4)) * 4)


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class LiteConv3x3(nn.Sequential):
    """Pointwise 1x1 then depthwise 3x3 (OSNet's lightweight 3x3), or one dense 3x3 (``depthwise=False``:
    more multiply-adds but several times faster to train on CPUs, whose depthwise backward is slow)."""

    def __init__(self, cin: int, cout: int, depthwise: bool = True) -> None:
        if depthwise:
            convs = [nn.Conv2d(cin, cout, 1, bias=False), nn.Conv2d(cout, cout, 3, 1, 1, groups=cout, bias=False)]
        else:
            convs = [nn.Conv2d(cin, cout, 3, 1, 1, bias=False)]
        super().__init__(*convs, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ChannelGate(nn.Module):
    """Per-channel weights in (0, 1) from the globally pooled input (shared by all streams: the unified
    aggregation gate)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.pool(x)))))


class OSBlock(nn.Module):
    """Omni-scale residual bottleneck: 1x1 reduce, T streams (t = 1..T lite 3x3 convs, receptive fields
    3, 5, 7, 9), unified aggregation gate, 1x1 expand, residual."""

    def __init__(self, cin: int, cout: int, bottleneck: int = 4, streams: int = 4, depthwise: bool = True) -> None:
        super().__init__()
        mid = _round4(cout / bottleneck)
        self.conv1 = ConvBNReLU(cin, mid, 1)
        self.streams = nn.ModuleList(nn.Sequential(*[LiteConv3x3(mid, mid, depthwise) for _ in range(t)])
                                     for t in range(1, streams + 1))
        self.gate = ChannelGate(mid)
        self.conv3 = ConvBNReLU(mid, cout, 1, relu=False)
        self.downsample = ConvBNReLU(cin, cout, 1, relu=False) if cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        h = self.conv1(x)
        agg = None
        for stream in self.streams:
            g = self.gate(stream(h))
            agg = g if agg is None else agg + g
        return self.relu(self.conv3(agg) + identity)


class OSNetBackbone(nn.Module):
    """Stem (7x7/2 + maxpool) -> 3 stages of 2 OSBlocks (transitions: 1x1 + 2x2 avg-pool) -> 1x1 conv."""

    def __init__(self, width: float = 1.0, blocks: tuple[int, int, int] = (2, 2, 2), depthwise: bool = True) -> None:
        super().__init__()
        c = [_round4(v * width) for v in (64, 256, 384, 512)]
        self.stem = nn.Sequential(ConvBNReLU(3, c[0], 7, 2), nn.MaxPool2d(3, 2, 1))
        self.conv2 = self._stage(c[0], c[1], blocks[0], True, depthwise)
        self.conv3 = self._stage(c[1], c[2], blocks[1], True, depthwise)
        self.conv4 = self._stage(c[2], c[3], blocks[2], False, depthwise)
        self.conv5 = ConvBNReLU(c[3], c[3], 1)
        self.out_channels = c[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _stage(cin: int, cout: int, n: int, transition: bool, depthwise: bool) -> nn.Sequential:
        layers: list[nn.Module] = [OSBlock(cin, cout, depthwise=depthwise)]
        layers += [OSBlock(cout, cout, depthwise=depthwise) for _ in range(n - 1)]
        if transition:
            layers += [ConvBNReLU(cout, cout, 1), nn.AvgPool2d(2, 2)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv5(self.conv4(self.conv3(self.conv2(self.stem(x)))))


class ResNetBackbone(nn.Module):
    """ScaledResNet's convolutional part (same parameter names, so a classification checkpoint loads),
    with the re-id ``last_stride`` (1 keeps a 16x8 map at 256x128)."""

    def __init__(self, layers: list[int], width_mult: float = 1.0, last_stride: int = 1) -> None:
        super().__init__()
        net = ScaledResNet(layers, 2, width_mult)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))
        if last_stride != 2:
            block = self.layer4[0]
            assert isinstance(block, BasicBlock)
            block.conv1.stride = (last_stride, last_stride)
            if block.downsample is not None:
                block.downsample[0].stride = (last_stride, last_stride)
        self.out_channels = _round8(512 * width_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class MobileNetV2Backbone(nn.Module):
    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        net = tvm.mobilenet_v2(weights=None, width_mult=width_mult)
        self.features = net.features
        self.out_channels = net.last_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ReidEmbedder(nn.Module):
    """Backbone + BN-neck head; see the module docstring for what ``forward`` returns."""

    def __init__(self, backbone: nn.Module, num_classes: int, embedding_dim: int | None = 256) -> None:
        super().__init__()
        self.backbone = backbone
        c = int(backbone.out_channels)
        self.embedding_dim = int(embedding_dim or c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed = nn.Conv2d(c, self.embedding_dim, 1, bias=False) if embedding_dim else nn.Identity()
        self.bnneck = nn.BatchNorm2d(self.embedding_dim)
        self.bnneck.bias.requires_grad_(False)  # BN-neck: no shift, so the embedding stays centred
        self.classifier = nn.Conv2d(self.embedding_dim, num_classes, 1, bias=False)
        if isinstance(self.embed, nn.Conv2d):
            nn.init.kaiming_normal_(self.embed.weight, mode="fan_out")
        nn.init.ones_(self.bnneck.weight)
        nn.init.zeros_(self.bnneck.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding before the BN-neck, after it), both ``[N, D, 1, 1]``."""
        e = self.embed(self.pool(self.backbone(x)))
        return e, self.bnneck(e)

    def forward(self, x: torch.Tensor):
        e, b = self.features(x)
        if self.training:
            return e.flatten(1), self.classifier(b).flatten(1)
        return F.normalize(b.flatten(1), p=2.0, dim=1, eps=1e-12)


def build_reid_model(arch: str = "osnet_x0_25", num_classes: int = 2, embedding_dim: int = 256,
                     width_mult: float = 1.0, last_stride: int = 1, depthwise: bool = True,
                     pretrained: str | None = None, pretrained_sha256: str | None = None) -> ReidEmbedder:
    """A re-id embedder; ``num_classes`` = number of training identities (filled in from the data).

    ``pretrained``: a local path (or a URL you name) of weights for the whole embedder (a re-id checkpoint)
    or for its backbone (e.g. a classification checkpoint of the same ``arch``/``width_mult``); tensors of
    another shape (the identity classifier) are skipped and reported. Nothing is downloaded by default.
    ``depthwise`` (OSNet): depthwise lite 3x3 convolutions (the original; fewest operations at inference) or
    dense 3x3 ones (faster training on CPUs). ``last_stride`` (ResNet): 1 keeps twice the final resolution.
    """
    if arch not in ARCHS:
        raise ValueError(f"model.arch must be one of {ARCHS}, got {arch!r}")
    if num_classes < 2:
        raise ValueError(f"a re-id model needs at least 2 training identities, got {num_classes}")
    if width_mult <= 0:
        raise ValueError(f"model.width_mult must be > 0, got {width_mult}")
    if embedding_dim is not None and embedding_dim < 0:
        raise ValueError(f"model.embedding_dim must be > 0 (or 0/null: the backbone's width), got {embedding_dim}")
    if last_stride not in (1, 2):
        raise ValueError(f"model.last_stride must be 1 or 2, got {last_stride}")
    if arch in OSNET_WIDTHS:
        backbone: nn.Module = OSNetBackbone(OSNET_WIDTHS[arch] * width_mult, depthwise=depthwise)
    elif arch == "resnet18":
        backbone = ResNetBackbone([2, 2, 2, 2], width_mult, last_stride)
    elif arch == "resnet34":
        backbone = ResNetBackbone([3, 4, 6, 3], width_mult, last_stride)
    else:
        backbone = MobileNetV2Backbone(width_mult)
    model = ReidEmbedder(backbone, num_classes, embedding_dim)
    if pretrained:
        try:
            pretrained_mod.load_into(model, pretrained, pretrained_sha256)
        except CheckpointError as whole:
            if "no tensor fits" not in str(whole):
                raise
            try:
                pretrained_mod.load_into(model.backbone, pretrained, pretrained_sha256)
            except CheckpointError:
                raise whole from None
            log.info("pretrained: %s initialised the backbone only", pretrained)
    return model
