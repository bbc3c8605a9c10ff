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


def build_model(name, num_classes=10, he_init=False, zero_init_residual=False):
    """The registered model ``name``; ``he_init`` re-initialises conv and linear weights,
    ``zero_init_residual`` starts every residual block as the identity (Goyal et al. 2017)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    model = MODELS[name](num_classes=num_classes)
    if he_init:
        apply_he_init(model)
    if zero_init_residual:
        zero_last_bn_of_residual_blocks(model)
    return model


def apply_he_init(model):
    """Kaiming-normal weights (fan-in, ReLU gain) for convs and linears, biases zero, as in the
    common CIFAR ResNet code (akamaster/pytorch_resnet_cifar10)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def zero_last_bn_of_residual_blocks(model):
    """Zero the scale (gamma) of the last batch norm of every residual branch, so each block
    starts as its shortcut. Blocks name that batch norm in ``last_bn``; torchvision's name it
    bn3 (Bottleneck) or bn2 (BasicBlock)."""
    for module in model.modules():
        bn = getattr(module, "last_bn", None)
        if bn is None and type(module).__module__.startswith("torchvision.models.resnet"):
            bn = getattr(module, "bn3", None) or getattr(module, "bn2", None)
        if isinstance(bn, nn.BatchNorm2d):
            nn.init.zeros_(bn.weight)
