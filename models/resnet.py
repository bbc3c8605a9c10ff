"""ResNet-18/34/50 with a CIFAR stem (3x3 conv, stride 1, no max-pool), as in kuangliu/pytorch-cifar."""

import torch.nn as nn
import torch.nn.functional as F


def _conv_bn(in_channels, out_channels, kernel_size, stride):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.conv1 = _conv_bn(in_channels, channels, 3, stride)
        self.conv2 = _conv_bn(channels, channels, 3, 1)
        self.shortcut = _shortcut(in_channels, channels * self.expansion, stride)

    @property
    def last_bn(self):
        return self.conv2[1]

    def forward(self, x):
        out = F.relu(self.conv1(x))
        return F.relu(self.conv2(out) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.conv1 = _conv_bn(in_channels, channels, 1, 1)
        self.conv2 = _conv_bn(channels, channels, 3, stride)
        self.conv3 = _conv_bn(channels, channels * self.expansion, 1, 1)
        self.shortcut = _shortcut(in_channels, channels * self.expansion, stride)

    @property
    def last_bn(self):
        return self.conv3[1]

    def forward(self, x):
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        return F.relu(self.conv3(out) + self.shortcut(x))


def _shortcut(in_channels, out_channels, stride):
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return _conv_bn(in_channels, out_channels, 1, stride)


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.stem = _conv_bn(3, 64, 3, 1)
        stages, in_channels = [], 64
        for i, (channels, count) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(block(in_channels, channels, stride))
                in_channels = channels * block.expansion
        self.blocks = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        out = F.relu(self.stem(x))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet18(num_classes=10):
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet34(num_classes=10):
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes)


def resnet50(num_classes=10):
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes)
