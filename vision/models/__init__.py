"""Model builders (torchvision backbones, width-scalable, from scratch or a local checkpoint)."""
