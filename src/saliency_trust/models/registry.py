"""Architecture registry (docs/outputs.md).

Every architecture takes a 1-channel image batch (N x 1 x H x W, values in
[0, 1]) and returns one logit per label. Each entry names the module whose
output Grad-CAM explains (the last convolutional block) so saliency methods
never guess.

- ``simple_cnn`` and ``tiny_resnet``: small CPU-sized networks for the default
  synthetic run (two different architectures, so reproducibility is defined).
  They use a separate ``nn.ReLU`` module at every activation (no functional or
  shared ReLUs), which hook-based guided backpropagation relies on.
- ``inception_v3`` (299 px) and ``densenet121`` (224 px): the papers'
  networks from torchvision, wrapped by :class:`GrayscaleAdapter` (grey to RGB,
  ImageNet normalization, resize to the native input size inside the model so
  that gradients are taken with respect to the canonical image). ImageNet
  weights are read only from a local file named in the config; nothing is
  downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SimpleCNN(nn.Module):
    """Four conv-BN-ReLU blocks (16-32-64-64 channels), global average pool, linear head."""

    def __init__(self, num_classes: int = 1, in_channels: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential()
        self.features.add_module("block1", nn.Sequential(*_conv_bn_relu(in_channels, w), nn.MaxPool2d(2)))
        self.features.add_module("block2", nn.Sequential(*_conv_bn_relu(w, 2 * w), nn.MaxPool2d(2)))
        self.features.add_module("block3", nn.Sequential(*_conv_bn_relu(2 * w, 4 * w), nn.MaxPool2d(2)))
        self.features.add_module("block4", nn.Sequential(*_conv_bn_relu(4 * w, 4 * w)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet basic block with its own ReLU modules (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # No nn.Identity module on the identity path: LRP (Captum) needs a rule for every leaf module.
        self.shortcut = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else None
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + (x if self.shortcut is None else self.shortcut(x)))


class TinyResNet(nn.Module):
    """A residual network for CPU runs: stem (conv + max-pool), four basic blocks (16-32-64-64), 1/8 resolution."""

    def __init__(self, num_classes: int = 1, in_channels: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, w), nn.MaxPool2d(2))
        self.layer1 = BasicBlock(w, w)
        self.layer2 = BasicBlock(w, 2 * w, stride=2)
        self.layer3 = BasicBlock(2 * w, 4 * w, stride=2)
        self.layer4 = BasicBlock(4 * w, 4 * w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GrayscaleAdapter(nn.Module):
    """Feed a 1-channel [0, 1] image to an ImageNet network: resize, grey to RGB, normalize."""

    def __init__(self, net: nn.Module, input_size: int | None):
        super().__init__()
        self.net = net
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = x.expand(-1, 3, -1, -1)
        return self.net((x - self.mean) / self.std)


def _inception_v3(num_classes: int, input_size: int | None) -> nn.Module:
    from torchvision.models import inception_v3

    net = inception_v3(
        weights=None, aux_logits=False, init_weights=True, num_classes=num_classes, transform_input=False
    )
    return GrayscaleAdapter(net, input_size)


def _densenet121(num_classes: int, input_size: int | None) -> nn.Module:
    from torchvision.models import densenet121

    return GrayscaleAdapter(densenet121(weights=None, num_classes=num_classes), input_size)


@dataclass(frozen=True)
class Architecture:
    """A registry entry: how to build the network and where Grad-CAM looks."""

    name: str
    build: Callable[[int, int | None], nn.Module]
    gradcam_layer: str  # dotted module path of the last convolutional block
    native_size: int | None  # input size the network was designed for (None: any)
    head_prefixes: tuple[str, ...]  # state-dict prefixes of the classification head


ARCHITECTURES: dict[str, Architecture] = {
    "simple_cnn": Architecture("simple_cnn", lambda n, s: SimpleCNN(n), "features.block4", None, ("fc.",)),
    "tiny_resnet": Architecture("tiny_resnet", lambda n, s: TinyResNet(n), "layer4", None, ("fc.",)),
    "inception_v3": Architecture("inception_v3", _inception_v3, "net.Mixed_7c", 299, ("net.fc.",)),
    "densenet121": Architecture("densenet121", _densenet121, "net.features.norm5", 224, ("net.classifier.",)),
}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{name}'; allowed: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build_model(
    arch: str,
    num_classes: int,
    input_size: int | None = None,
    pretrained_weights: str | Path | None = None,
) -> nn.Module:
    """Build an architecture; optionally load ImageNet weights from a local file (head excluded)."""
    spec = get_architecture(arch)
    model = spec.build(num_classes, input_size or spec.native_size)
    if pretrained_weights:
        load_backbone_weights(model, spec, pretrained_weights)
    return model


def load_backbone_weights(model: nn.Module, spec: Architecture, path: str | Path) -> None:
    """Load a torchvision ImageNet state dict from ``path`` into everything but the head."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights for '{spec.name}' not found at '{path}'. Nothing is downloaded: "
            f"save the torchvision ImageNet state dict there (config key models[].pretrained_weights)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    target = model.net if isinstance(model, GrayscaleAdapter) else model
    prefix_strip = "net." if isinstance(model, GrayscaleAdapter) else ""
    heads = tuple(h[len(prefix_strip) :] for h in spec.head_prefixes)
    state = {k: v for k, v in state.items() if not k.startswith(heads) and not k.startswith("AuxLogits.")}
    missing, unexpected = target.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(heads)]
    if missing or unexpected:
        raise ValueError(f"{path}: not a '{spec.name}' state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    """Resolve a dotted module path such as ``features.block4``."""
    try:
        return model.get_submodule(dotted)
    except AttributeError as err:
        raise KeyError(f"model has no module '{dotted}'") from err
