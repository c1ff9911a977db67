"""Model parameter randomization (Adebayo et al. 2018; Arun et al., "Sensitivity to trained weights"; docs/criteria.md).

Every architecture has an ordered list of blocks from the output down to the
input (:data:`RANDOMIZATION_BLOCKS`). Cascading randomization re-initializes
one more block at each step (step 1: the head; last step: every block, the
fully randomized model); independent randomization re-initializes one block
at a time and keeps the others trained.

Re-initialization is PyTorch's default (each module's ``reset_parameters``,
which also gives BatchNorm fresh running statistics) or, as an option, a
truncated normal (sd 0.01, cut at 2 sd; biases zero; BatchNorm reset), the
initializer of Adebayo et al.'s TensorFlow code. Every step draws from a
generator seeded by (seed, block), so a block gets the same random weights
whichever mode or step re-initializes it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from saliency_trust.io import stable_seed

INITS = ("default", "truncated_normal")
MODES = ("cascading", "independent")
TRUNCATED_NORMAL_SD = 0.01

_INCEPTION = (
    "fc",
    "Mixed_7c",
    "Mixed_7b",
    "Mixed_7a",
    "Mixed_6e",
    "Mixed_6d",
    "Mixed_6c",
    "Mixed_6b",
    "Mixed_6a",
    "Mixed_5d",
    "Mixed_5c",
    "Mixed_5b",
    "Conv2d_4a_3x3",
    "Conv2d_3b_1x1",
    "Conv2d_2b_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_1a_3x3",
)
_DENSENET = (
    "classifier",
    "features.norm5",
    "features.denseblock4",
    "features.transition3",
    "features.denseblock3",
    "features.transition2",
    "features.denseblock2",
    "features.transition1",
    "features.denseblock1",
)

# block name -> module paths, output first
RANDOMIZATION_BLOCKS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "simple_cnn": tuple(
        (b, (b,)) for b in ("fc", "features.block4", "features.block3", "features.block2", "features.block1")
    ),
    "tiny_resnet": tuple((b, (b,)) for b in ("fc", "layer4", "layer3", "layer2", "layer1", "stem")),
    "inception_v3": tuple((b, (f"net.{b}",)) for b in _INCEPTION),
    "densenet121": tuple((b.split(".")[-1], (f"net.{b}",)) for b in _DENSENET)
    + (("stem", ("net.features.conv0", "net.features.norm0")),),
}


def randomization_blocks(arch: str) -> list[str]:
    """Block names of ``arch``, output first."""
    if arch not in RANDOMIZATION_BLOCKS:
        raise KeyError(f"no randomization blocks for architecture '{arch}'; known: {sorted(RANDOMIZATION_BLOCKS)}")
    return [name for name, _ in RANDOMIZATION_BLOCKS[arch]]


def blocks_of_step(arch: str, mode: str, step: int) -> list[str]:
    """Blocks re-initialized at ``step`` (1-based): the first ``step`` blocks (cascading) or block ``step`` alone."""
    names = randomization_blocks(arch)
    if mode not in MODES:
        raise ValueError(f"unknown randomization mode '{mode}'; allowed: {list(MODES)}")
    if not 1 <= step <= len(names):
        raise ValueError(f"{arch} has {len(names)} randomization steps, got step {step}")
    return names[:step] if mode == "cascading" else [names[step - 1]]


def _reset_module(module: nn.Module, init: str) -> None:
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.reset_parameters()  # weight 1, bias 0, running mean 0 / var 1
        elif init == "truncated_normal" and isinstance(sub, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(
                sub.weight, std=TRUNCATED_NORMAL_SD, a=-2 * TRUNCATED_NORMAL_SD, b=2 * TRUNCATED_NORMAL_SD
            )
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif hasattr(sub, "reset_parameters") and list(sub.parameters(recurse=False)):
            sub.reset_parameters()


def randomized_model(model: nn.Module, arch: str, blocks: list[str], seed: int, init: str = "default") -> nn.Module:
    """A copy of ``model`` with ``blocks`` re-initialized (seeded per block); the original is untouched."""
    if init not in INITS:
        raise ValueError(f"unknown randomization init '{init}'; allowed: {list(INITS)}")
    paths = dict(RANDOMIZATION_BLOCKS[arch])
    device = next(model.parameters()).device
    out = copy.deepcopy(model).cpu()  # initialized on the CPU generator: the same weights on any device
    for name in blocks:
        if name not in paths:
            raise KeyError(f"{arch} has no randomization block '{name}'; blocks: {randomization_blocks(arch)}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_seed(seed, "randomize", arch, name))
            for path in paths[name]:
                _reset_module(out.get_submodule(path), init)
    return out.to(device).eval()
