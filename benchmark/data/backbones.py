"""Pretrained torchvision backbones and the layers whose activations become features.

The GTTN paper (Zhang et al.) feeds VGG-19 activations to the multi-task networks: ``fc7``
(the 4096-d output of the second fully connected layer, after its ReLU) and ``pool5`` (the last
7 x 7 x 512 pooling map, kept in H x W x C order for the spatial network, SPEC.md section 3).
Weights are torchvision's ImageNet weights (its usual download into the torch hub cache), a local
state-dict file, or a seeded random initialisation (tests only: such features carry no meaning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from .source import DEFAULT_BACKBONE, DataUnavailableError, sha256_of

RANDOM_WEIGHTS = "random"
IMAGENET_WEIGHTS = "imagenet"


@dataclass(frozen=True)
class Layer:
    shape: tuple[int, ...]  # of one image's feature
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _vgg_pool5(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    # avgpool is the identity on the 7 x 7 map of a 224 x 224 crop; it also keeps 7 x 7 for the
    # small crops of the tests. (B, C, H, W) -> (B, H, W, C), the paper's order.
    return model.avgpool(model.features(images)).permute(0, 2, 3, 1)


def _vgg_fc7(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.classifier[:5](torch.flatten(model.avgpool(model.features(images)), 1))


@dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable[[], nn.Module]
    imagenet: torchvision.models.WeightsEnum
    layers: dict[str, Layer]

    def layer(self, name: str) -> Layer:
        try:
            return self.layers[name]
        except KeyError:
            raise ValueError(f"backbone {self.name} has no layer {name!r}; valid: {', '.join(self.layers)}") from None

    def describe(self, weights: str) -> str:
        """What ``weights`` are, for the cache manifest (a file by its SHA-256)."""
        if weights == RANDOM_WEIGHTS:
            return "random (torch.manual_seed(0)); features carry no meaning"
        if weights == IMAGENET_WEIGHTS:
            return f"{self.imagenet} ({self.imagenet.url})"
        path = Path(weights)
        if not path.is_file():
            raise DataUnavailableError(f"weights file {path} not found; give a state dict of "
                                       f"torchvision's {self.name}, e.g. {self.imagenet.url}")
        return f"{path.name} (SHA-256 {sha256_of(path)})"

    def load(self, weights: str) -> nn.Module:
        """The model in eval mode with ``weights``: ``imagenet`` (torchvision's download),
        ``random`` (seeded, for tests) or a path to a state dict (a ``.pth`` as torchvision publishes it).
        """
        if weights == RANDOM_WEIGHTS:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return self.build().eval()
        model = self.build()
        if weights == IMAGENET_WEIGHTS:
            try:
                state = self.imagenet.get_state_dict(progress=True)
            except OSError as error:  # no network, or a proxy in the way
                raise DataUnavailableError(
                    f"could not get the ImageNet weights of {self.name} ({error}). Download {self.imagenet.url} "
                    f"on a machine with a connection and pass it as --weights PATH (or place it in "
                    f"{Path(torch.hub.get_dir()) / 'checkpoints'})."
                ) from error
        else:
            state = torch.load(Path(weights), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
        model.load_state_dict(state)
        return model.eval()


BACKBONES = {
    "vgg19": Backbone(
        "vgg19",
        build=lambda: torchvision.models.vgg19(weights=None),
        imagenet=torchvision.models.VGG19_Weights.IMAGENET1K_V1,
        layers={"fc7": Layer((4096,), _vgg_fc7), "pool5": Layer((7, 7, 512), _vgg_pool5)},
    ),
}
assert DEFAULT_BACKBONE in BACKBONES


def backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}") from None
