"""A user's own PyTorch model, pre-trained outside assembler: a small ResNet for the 8x8 digits
0-4, written in torchvision's layout (BasicBlocks, `layerN` Sequentials, `downsample`).

    python specs/torch/digits_resnet.py      # trains it (plain PyTorch, about 10 s on one
                                             # core) and writes digits_resnet.safetensors here
    assembler import specs/torch/digits_resnet.py:DigitsResNet --input x=1,8,8 \\
        --weights specs/torch/digits_resnet.safetensors --name resnet -o specs/torch/digits_resnet

The second command writes the checkpoint directory that `adapt.net` imports.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DigitsResNet(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, stride=2), BasicBlock(32, 32))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def train(epochs: int = 15, seed: int = 0) -> DigitsResNet:
    """Train on the digits 0-4 of the training split (the user's own loop)."""
    from assembler.data import digits
    torch.manual_seed(seed)
    data = digits(split="train", classes=[0, 1, 2, 3, 4])
    model = DigitsResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        model.train()
        for i in torch.randperm(len(data)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(data.x[i]), data.y[i]).backward()
            opt.step()
    return model.eval()


def main() -> int:
    from safetensors.torch import save_file
    from assembler.data import digits
    torch.set_num_threads(1)
    model = train()
    test = digits(split="test", classes=[0, 1, 2, 3, 4])
    with torch.no_grad():
        acc = (model(test.x).argmax(1) == test.y).float().mean().item()
    out = HERE / "digits_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    print(f"test accuracy on digits 0-4: {acc:.4f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
