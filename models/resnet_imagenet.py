"""The original project's model: torchvision's ImageNet-style ResNet-50 (7x7 stride-2 stem and
max-pool, so a 32x32 image is 1x1 by the last stage), built with 10 classes."""

import torchvision


def resnet50_imagenet(num_classes=10):
    return torchvision.models.resnet50(weights=None, num_classes=num_classes)
