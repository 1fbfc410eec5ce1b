"""Image classifiers for edge devices, built from torchvision blocks.

``resnet18``/``resnet34`` take a ``width_mult`` (channels 64*w, 128*w, 256*w, 512*w): ReLU
convolution stacks that quantize to int8 with little loss. torchvision's MobileNet V2/V3 are
available too (note: MobileNetV3's hard-swish and squeeze-excitation gain little from int8 on CPUs).
"""
from __future__ import annotations

from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock, conv1x1

from vision.models import pretrained as pretrained_mod

ARCHS = ("resnet18", "resnet34", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def _round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8)


class ScaledResNet(nn.Module):
    """torchvision's ResNet layout with BasicBlocks and a width multiplier."""

    def __init__(self, layers: list[int], num_classes: int, width_mult: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [_round8(c * width_mult) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = widths[0]
        self.layer1 = self._make_layer(widths[0], layers[0], 1)
        self.layer2 = self._make_layer(widths[1], layers[1], 2)
        self.layer3 = self._make_layer(widths[2], layers[2], 2)
        self.layer4 = self._make_layer(widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each block (stabler from-scratch training)
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, down)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))


def build_classifier(arch: str = "resnet18", num_classes: int = 2, width_mult: float = 1.0,
                     dropout: float = 0.0, pretrained: str | None = None,
                     pretrained_sha256: str | None = None) -> nn.Module:
    """A classifier from scratch, or initialised from ``pretrained`` (a local path or a URL you name)."""
    if arch not in ARCHS:
        raise ValueError(f"model.arch must be one of {ARCHS}, got {arch!r}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if width_mult <= 0:
        raise ValueError(f"model.width_mult must be > 0, got {width_mult}")
    if arch == "resnet18":
        model: nn.Module = ScaledResNet([2, 2, 2, 2], num_classes, width_mult, dropout)
    elif arch == "resnet34":
        model = ScaledResNet([3, 4, 6, 3], num_classes, width_mult, dropout)
    elif arch == "mobilenet_v2":
        model = tvm.mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    elif arch == "mobilenet_v3_small":
        model = tvm.mobilenet_v3_small(weights=None, num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    else:
        model = tvm.mobilenet_v3_large(weights=None, num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    if pretrained:
        pretrained_mod.load_into(model, pretrained, pretrained_sha256)
    return model
