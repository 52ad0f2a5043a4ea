"""nn.Module mirrors of every DSL example in examples/, for checking the PyTorch frontend.

Each mirror builds the same network as its DSL file, with torch's default initialization, in
eval mode. Module paths equal the DSL layer names with dots for underscores (``layer1.0.conv1``
is ``layer1_0_conv1``), so a state_dict maps onto the DSL graph one to one (``dsl_weights``).
The forward passes stick to plain traceable code (torch.fx), but vary the style on purpose --
nn modules and functional calls, ``torch.flatten`` and ``x.view``, ``+``, ``+=`` and ``*``,
``x.mean((2, 3))`` and adaptive pooling -- so the tracer meets what real models contain.

``zoo()`` returns {example name: (factory(size) -> nn.Module in eval mode, small input shape)}.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------
# classic stacks
class LeNet5(nn.Module):
    def __init__(self, size: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        flat = 16 * (((size - 4) // 2 - 4) // 2) ** 2
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def _features_out(features: Callable, channels: int, size: int) -> int:
    """Flattened size of a feature extractor's output (what the first dense layer takes)."""
    with torch.no_grad():
        return features(torch.zeros(1, channels, size, size)).numel()


class AlexNet(nn.Module):
    """Flattens with x.view(x.size(0), -1), the style of many older model files."""

    def __init__(self, size: int = 224):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(64, 192, 5, padding=2)
        self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, 3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.fc6 = nn.Linear(_features_out(self.features, 3, size), 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, 1000)

    def features(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.conv3(x))
        x = self.relu(self.conv4(x))
        return self.pool(self.relu(self.conv5(x)))

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = self.relu(self.fc6(self.drop(x)))
        x = self.relu(self.fc7(self.drop(x)))
        return self.fc8(x)


class ZFNet(nn.Module):
    def __init__(self, size: int = 224):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 7, stride=2, padding=1)
        self.conv2 = nn.Conv2d(96, 256, 5, stride=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
        self.fc6 = nn.Linear(_features_out(self.features, 3, size), 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, 1000)
        self.drop = nn.Dropout(0.5)

    def features(self, x):
        x = self.norm(self.pool(F.relu(self.conv1(x))))
        x = self.norm(self.pool(F.relu(self.conv2(x))))
        x = F.relu(self.conv5(F.relu(self.conv4(F.relu(self.conv3(x))))))
        return self.pool(x)

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        x = self.drop(F.relu(self.fc6(x)))
        x = self.drop(F.relu(self.fc7(x)))
        return self.fc8(x)


class VGG(nn.Module):
    """Convolutions registered by name in a loop; ReLU as nn modules, flatten as nn.Flatten."""

    def __init__(self, stages, size: int = 224):
        super().__init__()
        self.order = []
        cin = 3
        for s, (channels, convs) in enumerate(stages, start=1):
            for i in range(1, convs + 1):
                self.add_module(f"conv{s}_{i}", nn.Conv2d(cin, channels, 3, padding=1))
                self.order.append(f"conv{s}_{i}")
                cin = channels
            self.order.append("pool")
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc6 = nn.Linear(_features_out(self.features, 3, size), 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, 1000)
        self.drop = nn.Dropout()

    def features(self, x):
        for name in self.order:
            x = self.pool(x) if name == "pool" else self.relu(getattr(self, name)(x))
        return x

    def forward(self, x):
        x = self.flatten(self.features(x))
        x = self.drop(self.relu(self.fc6(x)))
        x = self.drop(self.relu(self.fc7(x)))
        return self.fc8(x)


# ---------------------------------------------------------------------------------------------
# residual networks
def _conv_bn(cin, cout, kernel, stride=1, padding=0, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _conv_bn(cin, planes, 1, stride) if stride != 1 or cin != planes else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class SqueezeExcite(nn.Module):
    """Squeeze with x.mean((2, 3), keepdim=True), excite with two 1x1 convs, gate with *."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, groups=1, width_per_group=64, se=False, dilation=1):
        super().__init__()
        width = planes * width_per_group // 64 * groups
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation=dilation, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.se = SqueezeExcite(out) if se else None
        self.downsample = _conv_bn(cin, out, 1, stride) if stride != 1 or cin != out else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """torchvision's ResNet; ``dilate`` is its replace_stride_with_dilation (bottleneck blocks
    only), ``classes=None`` leaves out the classifier (a backbone: forward returns layer4)."""

    def __init__(self, block: str, layers, dilate=(False, False, False), classes=1000, **block_kwargs):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, dilation = 64, 1
        for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            mods = []
            stride, previous = (2 if stage > 1 else 1), dilation
            if stage > 1 and dilate[stage - 2]:
                dilation, stride = dilation * stride, 1
            for i in range(blocks):
                if block == "basic":
                    mods.append(BasicBlock(cin, planes, stride if i == 0 else 1))
                    cin = planes
                else:
                    mods.append(Bottleneck(cin, planes, stride if i == 0 else 1,
                                           dilation=previous if i == 0 else dilation, **block_kwargs))
                    cin = planes * Bottleneck.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*mods))
        self.classes = classes
        if classes:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1)) if self.classes else x


# ---------------------------------------------------------------------------------------------
# multi-branch networks
class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, 1), BasicConv2d(c3r, c3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, c5r, 1), BasicConv2d(c5r, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, cp, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


GOOGLENET = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
             "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
             "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
             "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128)}


class GoogLeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        cin = 192
        for name, cfg in GOOGLENET.items():
            setattr(self, f"inception{name}", Inception(cin, *cfg))
            cin = cfg[0] + cfg[2] + cfg[4] + cfg[5]
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, 1000)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.inception3b(self.inception3a(x))
        x = self.maxpool3(x)
        for name in ("4a", "4b", "4c", "4d", "4e"):
            x = getattr(self, f"inception{name}")(x)
        x = self.maxpool4(x)
        x = self.inception5b(self.inception5a(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth=32, bn_size=4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        new = self.conv1(F.relu(self.norm1(x)))
        new = self.conv2(F.relu(self.norm2(new)))
        return torch.cat((x, new), dim=1)


class Transition(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cin // 2, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.pool(self.conv(self.relu(self.norm(x))))


class DenseNet121(nn.Module):
    """Pooling to 1x1 with F.adaptive_avg_pool2d, torchvision's spelling."""

    def __init__(self, blocks=(6, 12, 24, 16)):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.norm0 = nn.BatchNorm2d(64)
        self.pool0 = nn.MaxPool2d(3, 2, 1)
        c = 64
        self.stages = []
        for b, layers in enumerate(blocks, start=1):
            block = nn.Module()
            for i in range(1, layers + 1):
                block.add_module(f"denselayer{i}", DenseLayer(c))
                c += 32
            self.add_module(f"denseblock{b}", block)
            self.stages.append((f"denseblock{b}", layers))
            if b < len(blocks):
                self.add_module(f"transition{b}", Transition(c))
                self.stages.append((f"transition{b}", 0))
                c //= 2
        self.norm5 = nn.BatchNorm2d(c)
        self.classifier = nn.Linear(c, 1000)

    def forward(self, x):
        x = self.pool0(F.relu(self.norm0(self.conv0(x))))
        for name, layers in self.stages:
            mod = getattr(self, name)
            if layers:
                for i in range(1, layers + 1):
                    x = getattr(mod, f"denselayer{i}")(x)
            else:
                x = mod(x)
        x = F.relu(self.norm5(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.classifier(x)


class Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], 1)


class SqueezeNet11(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2)
        fires = {2: (16, 64, 64), 3: (16, 64, 64), 4: (32, 128, 128), 5: (32, 128, 128),
                 6: (48, 192, 192), 7: (48, 192, 192), 8: (64, 256, 256), 9: (64, 256, 256)}
        c = 64
        for i, (s, e1, e3) in fires.items():
            setattr(self, f"fire{i}", Fire(c, s, e1, e3))
            c = e1 + e3
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.drop9 = nn.Dropout(0.5)
        self.conv10 = nn.Conv2d(512, 1000, 1)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(self.fire3(self.fire2(x)))
        x = self.pool(self.fire5(self.fire4(x)))
        x = self.fire9(self.fire8(self.fire7(self.fire6(x))))
        x = F.relu(self.conv10(self.drop9(x)))
        return torch.flatten(self.avgpool(x), 1)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        self.has_expand = expansion != 1
        if self.has_expand:
            self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.act(self.expand_bn(self.expand(x))) if self.has_expand else x
        out = self.act(self.dw_bn(self.dw(out)))
        out = self.project_bn(self.project(out))
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """ReLU6 as nn.ReLU6 inside blocks and F.hardtanh(0, 6) at the ends; global pool as x.mean((2, 3))."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(32)
        c, block = 32, 0
        for t, cout, n, s in self.SETTINGS:
            for i in range(n):
                block += 1
                setattr(self, f"block{block}", InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        self.blocks = block
        self.head = nn.Conv2d(c, 1280, 1, bias=False)
        self.head_bn = nn.BatchNorm2d(1280)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(1280, 1000)

    def forward(self, x):
        x = F.hardtanh(self.stem_bn(self.stem(x)), 0.0, 6.0)
        for i in range(1, self.blocks + 1):
            x = getattr(self, f"block{i}")(x)
        x = F.relu6(self.head_bn(self.head(x)))
        return self.classifier(self.dropout(x.mean((2, 3))))


class DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class UNet(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128), classes=2):
        super().__init__()
        self.enc1 = DoubleConv(3, widths[0])
        self.enc2 = DoubleConv(widths[0], widths[1])
        self.enc3 = DoubleConv(widths[1], widths[2])
        self.bottleneck = DoubleConv(widths[2], widths[3])
        self.pool = nn.MaxPool2d(2)
        self.up3_deconv = nn.ConvTranspose2d(widths[3], widths[2], 2, stride=2)
        self.dec3 = DoubleConv(2 * widths[2], widths[2])
        self.up2_deconv = nn.ConvTranspose2d(widths[2], widths[1], 2, stride=2)
        self.dec2 = DoubleConv(2 * widths[1], widths[1])
        self.up1_upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.up1_conv = nn.Conv2d(widths[1], widths[0], 1)
        self.dec1 = DoubleConv(2 * widths[0], widths[0])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        x = self.bottleneck(self.pool(e3))
        x = self.dec3(torch.cat([e3, self.up3_deconv(x)], 1))
        x = self.dec2(torch.cat([e2, self.up2_deconv(x)], 1))
        x = self.dec1(torch.cat([e1, self.up1_conv(self.up1_upsample(x))], 1))
        return self.head(x)


def channel_shuffle(x, groups: int):
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    """torchvision's shufflenetv2.InvertedResidual (same module paths): the stride-1 unit splits
    with ``x.chunk(2, dim=1)``."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, bias=False, groups=cin), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, bias=False, groups=half), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """torchvision's shufflenet_v2_x1_0 layout, written out (torchvision is not a dependency)."""

    def __init__(self, repeats=(4, 8, 4), channels=(24, 116, 232, 464, 1024), classes=1000):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]),
                                   nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = channels[0]
        for stage, (n, cout) in enumerate(zip(repeats, channels[1:4]), start=2):
            setattr(self, f"stage{stage}", nn.Sequential(*[ShuffleUnit(cin if i == 0 else cout, cout, 2 if i == 0 else 1)
                                                           for i in range(n)]))
            cin = cout
        self.conv5 = nn.Sequential(nn.Conv2d(cin, channels[4], 1, bias=False), nn.BatchNorm2d(channels[4]),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(channels[4], classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x)
        return self.fc(x.mean([2, 3]))
class ConvBNReLU(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class SegNet(nn.Module):
    """Pooling with return_indices=True and nn.MaxUnpool2d given the pooled tensor's size."""

    ENCODER = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
    DECODER = {5: (512, 512, 512), 4: (512, 512, 256), 3: (256, 256, 128), 2: (128, 64), 1: (64,)}

    def __init__(self, classes: int = 12):
        super().__init__()
        cin = 3
        for s, widths in enumerate(self.ENCODER, start=1):
            for i, c in enumerate(widths, start=1):
                setattr(self, f"enc{s}_{i}", ConvBNReLU(cin, c))
                cin = c
        for s in (5, 4, 3, 2, 1):
            for i, c in enumerate(self.DECODER[s], start=1):
                setattr(self, f"dec{s}_{i}", ConvBNReLU(cin, c))
                cin = c
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.classifier = nn.Conv2d(cin, classes, 3, padding=1)

    def forward(self, x):
        saved = []
        for s, widths in enumerate(self.ENCODER, start=1):
            for i in range(1, len(widths) + 1):
                x = getattr(self, f"enc{s}_{i}")(x)
            size = x.size()
            x, idx = self.pool(x)
            saved.append((idx, size))
        for s in (5, 4, 3, 2, 1):
            idx, size = saved[s - 1]
            x = self.unpool(x, idx, output_size=size)
            for i in range(1, len(self.DECODER[s]) + 1):
                x = getattr(self, f"dec{s}_{i}")(x)
        return self.classifier(x)


class RoIPool(nn.Module):
    """torchvision.ops.RoIPool written in plain torch (torchvision is not a test dependency),
    following its CPU kernel: corners x spatial_scale rounded half away from zero (C's round),
    the box at least 1x1 with both ends inclusive, bins [floor(i * bin), ceil((i + 1) * bin)) in
    float32 clipped to the map, the max of each bin, 0 for an empty one. Python loops over the
    boxes, so from_torch cannot trace it: ``register_module`` maps it onto ``roi_pool``."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, x, boxes):
        oh, ow = self.output_size
        h, w = x.shape[2:]
        out = x.new_zeros(boxes.shape[0], x.shape[1], oh, ow)
        scale = torch.tensor(self.spatial_scale, dtype=torch.float32)
        for k in range(boxes.shape[0]):
            scaled = (boxes[k, 1:].float() * scale).double()
            x1, y1, x2, y2 = (int(torch.sign(v) * torch.floor(v.abs() + 0.5)) for v in scaled)
            bin_h = torch.tensor(max(y2 - y1 + 1, 1), dtype=torch.float32) / oh
            bin_w = torch.tensor(max(x2 - x1 + 1, 1), dtype=torch.float32) / ow
            img = x[int(boxes[k, 0])]
            for ph in range(oh):
                hs = min(max(int(torch.floor(ph * bin_h)) + y1, 0), h)
                he = min(max(int(torch.ceil((ph + 1) * bin_h)) + y1, 0), h)
                for pw in range(ow):
                    ws = min(max(int(torch.floor(pw * bin_w)) + x1, 0), w)
                    we = min(max(int(torch.ceil((pw + 1) * bin_w)) + x1, 0), w)
                    if he > hs and we > ws:
                        out[k, :, ph, pw] = img[:, hs:he, ws:we].amax(dim=(1, 2))
        return out


def lively(module: nn.Module, bn_shape: tuple | None = None) -> nn.Module:
    """Keep a deep mirror's signal alive so comparisons test it: with torch's default init the 26
    convolutions of SegNet (and VGG's 13 before Fast R-CNN's RoI pooling) shrink the features to
    nothing and the output is the last bias, whatever the layers in between do. Convolutions and
    linear layers get He init (as the DSL's), and BN statistics (with ``bn_shape``) come from one
    training-mode pass on random data (``module.calibrated``: keep them)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if bn_shape is not None:
            for m in module.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = 1.0                        # running stats := this batch's
            module.train()(torch.randn(bn_shape, generator=torch.Generator().manual_seed(2)))
            module.calibrated = True
    return module.eval()


def _roi_pool_to_cnncc(t, m, x, boxes):
    return t.emit("roi_pool", [x, boxes], {"output_size": m.output_size, "spatial_scale": m.spatial_scale})


class FastRCNN(nn.Module):
    """VGG-16's convolutions (no pool5), RoIPool 7x7 at 1/16, fc6/fc7 and the two sibling heads;
    forward(image, boxes) returns (cls_score, bbox_pred)."""

    def __init__(self, hidden: int = 4096, classes: int = 21):
        super().__init__()
        cin = 3
        for s, (c, convs) in enumerate(VGG16, start=1):
            for i in range(1, convs + 1):
                setattr(self, f"conv{s}_{i}", nn.Conv2d(cin, c, 3, padding=1))
                cin = c
        self.roi_pool5 = RoIPool(7, 1 / 16)
        self.fc6 = nn.Linear(512 * 7 * 7, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.cls_score = nn.Linear(hidden, classes)
        self.bbox_pred = nn.Linear(hidden, 4 * classes)

    def forward(self, image, boxes):
        x = image
        for s, (_, convs) in enumerate(VGG16, start=1):
            for i in range(1, convs + 1):
                x = F.relu(getattr(self, f"conv{s}_{i}")(x))
            if s < len(VGG16):
                x = F.max_pool2d(x, 2, 2)
        x = torch.flatten(self.roi_pool5(x, boxes), 1)
        x = F.dropout(F.relu(self.fc6(x)), training=self.training)
        x = F.dropout(F.relu(self.fc7(x)), training=self.training)
        return self.cls_score(x), self.bbox_pred(x)


# ---------------------------------------------------------------------------------------------
VGG16 = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
VGG19 = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]

#: example name -> (constructor taking the input size, small input size)
_MIRRORS: dict[str, tuple[Callable[[int], nn.Module], int]] = {
    "lenet5": (lambda size: LeNet5(size), 32),
    "alexnet": (lambda size: AlexNet(size), 63),
    "zfnet": (lambda size: ZFNet(size), 63),
    "vgg16": (lambda size: VGG(VGG16, size), 32),
    "vgg19": (lambda size: VGG(VGG19, size), 32),
    "googlenet": (lambda size: GoogLeNet(), 32),
    "resnet18": (lambda size: ResNet("basic", (2, 2, 2, 2)), 32),
    "resnet50": (lambda size: ResNet("bottleneck", (3, 4, 6, 3)), 32),
    "resnext50_32x4d": (lambda size: ResNet("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4), 32),
    "se_resnet50": (lambda size: ResNet("bottleneck", (3, 4, 6, 3), se=True), 32),
    "densenet121": (lambda size: DenseNet121(), 32),
    "squeezenet1_1": (lambda size: SqueezeNet11(), 32),
    "mobilenet_v2": (lambda size: MobileNetV2(), 32),
    "unet": (lambda size: UNet(), 16),
    "shufflenet_v2": (lambda size: ShuffleNetV2(), 32),
    "segnet": (lambda size: lively(SegNet(), (2, 3, size, size)), 32),
    "fast_rcnn": (lambda size: lively(FastRCNN(hidden=FAST_RCNN_SMALL_HIDDEN)), 32),
}
#: the small Fast R-CNN keeps the 7x7 RoI grid but narrows fc6/fc7 (4096 -> 64: 103 M weights less
#: to draw); its DSL twin is built with the same ``hidden`` (``dsl_kwargs``)
FAST_RCNN_SMALL_HIDDEN = 64
#: extra model() arguments of an example's small DSL twin
_DSL_KWARGS = {"fast_rcnn": {"hidden": FAST_RCNN_SMALL_HIDDEN}}
#: the box count K of the Fast R-CNN mirror's inputs (the DSL model's default)
FAST_RCNN_BOXES = 8


def dsl_kwargs(name: str) -> dict:
    return dict(_DSL_KWARGS.get(name, {}))


def example_inputs(name: str, batch: int, size: int, seed: int = 1) -> list:
    """The mirror's forward() arguments at ``batch``: the image, plus valid boxes for Fast R-CNN
    (torchvision's Tensor[K, 5] rows inside the image, batch indices within the batch)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, _CHANNELS.get(name, 3), size, size, generator=g)
    if name != "fast_rcnn":
        return [x]
    k = FAST_RCNN_BOXES
    corners = torch.rand(k, 2, 2, generator=g) * (size - 1)
    lo, hi = corners.min(dim=1).values, corners.max(dim=1).values       # (k, [x, y])
    idx = torch.randint(0, batch, (k, 1), generator=g).float()
    return [x, torch.cat([idx, lo[:, :1], lo[:, 1:], hi[:, :1], hi[:, 1:]], dim=1)]
#: input channels of each example (all others take RGB)
_CHANNELS = {"lenet5": 1}


def zoo() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int, int]]]:
    """{example name: (factory() -> eval-mode nn.Module at the small size, small input shape (1, C, H, W))}.

    The example's DSL model at the same size is ``cnncc.frontends.dsl.load_model(path, size=H)``.
    The literature networks' mirrors live in torch_zoo_literature.py."""
    from torch_zoo_literature import MIRRORS as literature

    out = {}
    for name, (make, size) in {**_MIRRORS, **literature}.items():
        def factory(make=make, size=size) -> nn.Module:
            return make(size).eval()
        out[name] = (factory, (1, _CHANNELS.get(name, 3), size, size))
    return out


def register_with_cnncc() -> None:
    """Map the mirror's own RoIPool onto cnncc's roi_pool (from_torch's custom-module hook)."""
    from cnncc.frontends.torch import register_module

    register_module(RoIPool, _roi_pool_to_cnncc)


def dsl_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's state_dict keyed as the DSL names weights: ``"<layer>.<param>"`` (dots of the
    module path become underscores; BN running_mean/running_var become mean/var)."""
    rename = {"running_mean": "mean", "running_var": "var"}
    out = {}
    for key, value in module.state_dict().items():
        path, param = key.rsplit(".", 1)
        if param == "num_batches_tracked":
            continue
        out[f"{path.replace('.', '_')}.{rename.get(param, param)}"] = value.detach().cpu().numpy()
    return out
