"""Task-stacked layers (task axis last) and the networks of SPEC.md section 3."""

from .layers import SharedConv2d, SharedLinear, StackedConv2d, StackedLinear, TaskLayer
from .networks import FeatureMLP, MultiTaskNetwork, NetworkSpec, OmniglotCNN, build_network

__all__ = [
    "FeatureMLP",
    "MultiTaskNetwork",
    "NetworkSpec",
    "OmniglotCNN",
    "SharedConv2d",
    "SharedLinear",
    "StackedConv2d",
    "StackedLinear",
    "TaskLayer",
    "build_network",
]
