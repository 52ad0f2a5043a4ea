"""PyTorch -> cnncc end to end: trace an nn.Module with torch.fx, compile it to C, run it, and
compare with PyTorch. The module mixes nn layers, functional calls and tensor methods on purpose.

    python examples/from_torch.py
"""
from __future__ import annotations

import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import cnncc


class TinyResNet(nn.Module):
    """Stem, one residual block (x + f(x)), global average pool via x.mean((2, 3)), dense head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn0(self.stem(x))), 2)
        y = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(x + self.bn2(self.conv2(y)))
        return self.fc(x.mean((2, 3)))


def main() -> None:
    torch.manual_seed(0)
    net = TinyResNet().eval()
    graph = cnncc.from_torch(net, torch.randn(1, 3, 32, 32))   # batch becomes N
    print(graph)
    module = cnncc.compile(graph, target="c")

    x = torch.randn(4, 3, 32, 32)
    ours = module(x.numpy())
    with torch.no_grad():
        theirs = net(x).numpy()
    err = float(np.max(np.abs(ours - theirs)))
    print(f"{len(module.kernels)} kernels; max abs difference to PyTorch: {err:.2e}")
    assert err < 1e-4 * max(1.0, float(np.abs(theirs).max()))

    with tempfile.TemporaryDirectory() as tmp:                # a compiled module is self-contained
        module.save(tmp)
        again = cnncc.load(tmp)(x.numpy())
        assert np.array_equal(again, ours)
        print(f"saved and reloaded from {tmp}: identical outputs")


if __name__ == "__main__":
    main()
