"""Model builders: architectures, width scaling, user-supplied pretrained weights (local file)."""
from __future__ import annotations

import pytest
import torch

from vision.errors import CheckpointError
from vision.models.classifiers import ARCHS, build_classifier


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_builds_and_runs(arch):
    m = build_classifier(arch, num_classes=4, width_mult=0.5).eval()
    assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 4)


def test_width_mult_scales_parameters():
    small = sum(p.numel() for p in build_classifier("resnet18", 5, width_mult=0.25).parameters())
    big = sum(p.numel() for p in build_classifier("resnet18", 5, width_mult=0.5).parameters())
    assert 3.5 < big / small < 4.5


def test_pretrained_from_local_file_and_url(tmp_path):
    src = build_classifier("resnet18", num_classes=10, width_mult=0.25)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    # a head of another size is skipped, the backbone is loaded
    m = build_classifier("resnet18", num_classes=3, width_mult=0.25, pretrained=str(tmp_path / "w.pt"))
    assert torch.equal(m.conv1.weight, src.conv1.weight)
    assert m.fc.weight.shape == (3, src.fc.weight.shape[1])
    # a Lightning-style checkpoint via a file:// URL, checked against its sha256
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "c.ckpt")
    import hashlib

    digest = hashlib.sha256((tmp_path / "c.ckpt").read_bytes()).hexdigest()
    m2 = build_classifier("resnet18", 10, 0.25, pretrained=(tmp_path / "c.ckpt").as_uri(), pretrained_sha256=digest)
    assert torch.equal(m2.fc.weight, src.fc.weight)
    with pytest.raises(CheckpointError, match="sha256"):
        build_classifier("resnet18", 10, 0.25, pretrained=str(tmp_path / "c.ckpt"), pretrained_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="not found"):
        build_classifier("resnet18", 10, 0.25, pretrained=str(tmp_path / "missing.pt"))
    other = build_classifier("mobilenet_v2", 10, 0.5)
    torch.save(other.state_dict(), tmp_path / "o.pt")
    with pytest.raises(CheckpointError, match="no tensor fits"):
        build_classifier("resnet18", 10, 0.25, pretrained=str(tmp_path / "o.pt"))
