"""Model registry: ``build_model(name)`` for every name in ``MODELS``."""

import torch.nn as nn

from .resnet import resnet18, resnet34, resnet50
from .resnet_cifar import resnet20, resnet32, resnet44, resnet56, resnet110
from .resnet_imagenet import resnet50_imagenet

MODELS = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet50_imagenet": resnet50_imagenet,
}


def build_model(name, num_classes=10, he_init=False):
    """The registered model ``name``; ``he_init`` re-initialises conv and linear weights."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    model = MODELS[name](num_classes=num_classes)
    if he_init:
        apply_he_init(model)
    return model


def apply_he_init(model):
    """Kaiming-normal weights (fan-in, ReLU gain) for convs and linears, biases zero, as in the
    common CIFAR ResNet code (akamaster/pytorch_resnet_cifar10)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
