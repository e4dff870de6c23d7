"""PyTorch models for the import tests, written as their authors write them: a ResNet in
torchvision's layout (torchvision cannot be installed beside the pinned torch, so the classes
are transcribed here with the same module names and forward code), a small CNN with
functional calls, an MLP, and models that the importer must refuse."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, width=64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def _forward_impl(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x

    def forward(self, x):
        return self._forward_impl(x)


def randomise_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch-norm statistics and affine parameters as after training, not at their defaults."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def resnet18() -> ResNet:
    torch.manual_seed(0)
    return randomise_statistics(ResNet(BasicBlock, [2, 2, 2, 2]))


def resnet_tiny() -> ResNet:
    """A ResNet-18 at width 8: the same structure, quick to import in CLI tests."""
    torch.manual_seed(0)
    return randomise_statistics(ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10, width=8))


def bottleneck_tiny() -> ResNet:
    torch.manual_seed(0)
    return randomise_statistics(ResNet(Bottleneck, [2, 1, 1, 1], num_classes=10, width=4))


class SmallCNN(nn.Module):
    """Functional calls, a shape-computing view, dropout, cat and an adaptive pool."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.branch_a = nn.Conv2d(8, 8, 1)
        self.branch_b = nn.Conv2d(8, 8, 3, padding="same")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2)
        y = torch.cat([self.branch_a(x), torch.sigmoid(self.branch_b(x))], dim=1)
        y = self.pool(y)
        y = y.view(y.size(0), -1)
        return self.fc(self.drop(y))


def small_cnn() -> SmallCNN:
    torch.manual_seed(1)
    return randomise_statistics(SmallCNN())


def mlp() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 16),
                         nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 10), nn.Softmax(dim=1))


class TwoHeads(nn.Module):
    """Two inputs, two outputs, an elementwise product."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 4)
        self.b = nn.Linear(6, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x, y):
        h = torch.tanh(self.a(x)) * self.b(y)
        return self.head(h), h


def two_heads() -> TwoHeads:
    torch.manual_seed(3)
    return TwoHeads()


class LeakyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def leaky_cnn() -> LeakyCNN:
    return LeakyCNN()


class UnusedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.aux = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class ConvBNReLU(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Stage(nn.Module):
    """Two ConvBNReLU units and a residual sum: templates inside templates."""

    def __init__(self, c):
        super().__init__()
        self.a = ConvBNReLU(c, c)
        self.b = ConvBNReLU(c, c)

    def forward(self, x):
        return x + self.b(self.a(x))


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBNReLU(3, 8, stride=2)
        self.stage1 = Stage(8)
        self.down = ConvBNReLU(8, 16, stride=2)
        self.stage2 = Stage(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(x.mean((2, 3)))


def nested() -> Nested:
    torch.manual_seed(4)
    return randomise_statistics(Nested())
