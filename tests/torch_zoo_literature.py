"""nn.Module mirrors of the literature examples (issue 16): deep ResNets, ResNeXt-101, Inception-v3
and -v4, DeepLab-v3, tiny YOLOv2/v3, OpenPose. Written in plain torch after torchvision's, timm's
and the darknet/Caffe models' layouts (torchvision and timm are not test dependencies), with the
same module paths, so ``torch_zoo.dsl_weights`` maps a state_dict onto the DSL example one to one.

``MIRRORS``: {example name: (constructor taking the input size, small input size)}; torch_zoo.zoo()
includes them. ``VARIANTS`` holds the mirrors of examples' non-default arguments (Inception-v3
with its auxiliary head, DeepLab-v3 at output stride 16): {name: (constructor, DSL kwargs)}.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from torch_zoo import ResNet


# ---------------------------------------------------------------------------------------------
# Inception-v3 (torchvision's models/inception.py)
class BasicConv2d(nn.Module):
    """conv (no bias) -> BN (eps 0.001) -> ReLU: torchvision's Inception-v3 and timm's ConvNormAct."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b3, bd, bp], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin, classes):
        super().__init__()
        self.conv0 = BasicConv2d(cin, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.fc = nn.Linear(768, classes)

    def forward(self, x):
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


class InceptionV3(nn.Module):
    """torchvision's Inception3; with ``aux_logits`` forward returns (logits, aux logits) -- what
    torchvision returns in training mode, here in eval mode so the head can be checked."""

    def __init__(self, aux_logits=False, classes=1000):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, stride=2)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.AuxLogits = InceptionAux(768, classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(2048, classes)

    def forward(self, x):
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        aux = self.AuxLogits(x) if self.AuxLogits is not None else None
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return (x, aux) if aux is not None else x


# ---------------------------------------------------------------------------------------------
# Inception-v4 (timm's models/inception_v4.py)
def _seq(*convs):
    """nn.Sequential of BasicConv2d: (cin, cout, kernel, stride, padding) each."""
    return nn.Sequential(*(BasicConv2d(*c) for c in convs))


class Mixed3a(nn.Module):
    def __init__(self):
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = BasicConv2d(64, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat((self.maxpool(x), self.conv(x)), 1)


class Mixed4a(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = _seq((160, 64, 1, 1, 0), (64, 96, 3, 1, 0))
        self.branch1 = _seq((160, 64, 1, 1, 0), (64, 64, (1, 7), 1, (0, 3)), (64, 64, (7, 1), 1, (3, 0)),
                            (64, 96, 3, 1, 0))

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x)), 1)


class Mixed5a(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = BasicConv2d(192, 192, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat((self.conv(x), self.maxpool(x)), 1)


class _PoolConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), BasicConv2d(cin, cout, 1))


class InceptionV4A(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(384, 96, 1)
        self.branch1 = _seq((384, 64, 1, 1, 0), (64, 96, 3, 1, 1))
        self.branch2 = _seq((384, 64, 1, 1, 0), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1))
        self.branch3 = _PoolConv(384, 96)

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class ReductionA(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(384, 384, 3, stride=2)
        self.branch1 = _seq((384, 192, 1, 1, 0), (192, 224, 3, 1, 1), (224, 256, 3, 2, 0))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class InceptionV4B(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(1024, 384, 1)
        self.branch1 = _seq((1024, 192, 1, 1, 0), (192, 224, (1, 7), 1, (0, 3)), (224, 256, (7, 1), 1, (3, 0)))
        self.branch2 = _seq((1024, 192, 1, 1, 0), (192, 192, (7, 1), 1, (3, 0)), (192, 224, (1, 7), 1, (0, 3)),
                            (224, 224, (7, 1), 1, (3, 0)), (224, 256, (1, 7), 1, (0, 3)))
        self.branch3 = _PoolConv(1024, 128)

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class ReductionB(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = _seq((1024, 192, 1, 1, 0), (192, 192, 3, 2, 0))
        self.branch1 = _seq((1024, 256, 1, 1, 0), (256, 256, (1, 7), 1, (0, 3)), (256, 320, (7, 1), 1, (3, 0)),
                            (320, 320, 3, 2, 0))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class InceptionV4C(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(1536, 256, 1)
        self.branch1_0 = BasicConv2d(1536, 384, 1)
        self.branch1_1a = BasicConv2d(384, 256, (1, 3), padding=(0, 1))
        self.branch1_1b = BasicConv2d(384, 256, (3, 1), padding=(1, 0))
        self.branch2_0 = BasicConv2d(1536, 384, 1)
        self.branch2_1 = BasicConv2d(384, 448, (3, 1), padding=(1, 0))
        self.branch2_2 = BasicConv2d(448, 512, (1, 3), padding=(0, 1))
        self.branch2_3a = BasicConv2d(512, 256, (1, 3), padding=(0, 1))
        self.branch2_3b = BasicConv2d(512, 256, (3, 1), padding=(1, 0))
        self.branch3 = _PoolConv(1536, 256)

    def forward(self, x):
        x1 = self.branch1_0(x)
        x1 = torch.cat((self.branch1_1a(x1), self.branch1_1b(x1)), 1)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        x2 = torch.cat((self.branch2_3a(x2), self.branch2_3b(x2)), 1)
        return torch.cat((self.branch0(x), x1, x2, self.branch3(x)), 1)


class InceptionV4(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            BasicConv2d(3, 32, 3, stride=2), BasicConv2d(32, 32, 3), BasicConv2d(32, 64, 3, padding=1),
            Mixed3a(), Mixed4a(), Mixed5a(),
            *[InceptionV4A() for _ in range(4)], ReductionA(),
            *[InceptionV4B() for _ in range(7)], ReductionB(),
            *[InceptionV4C() for _ in range(3)])
        self.last_linear = nn.Linear(1536, classes)

    def forward(self, x):
        return self.last_linear(self.features(x).mean((2, 3)))


# ---------------------------------------------------------------------------------------------
# DeepLab-v3 (torchvision's models/segmentation/deeplabv3.py, without the auxiliary head)
def _conv_bn_relu(cin, cout, kernel, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ASPPPooling(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x):
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, cin, rates, cout=256):
        super().__init__()
        self.convs = nn.ModuleList([_conv_bn_relu(cin, cout, 1)] + [_conv_bn_relu(cin, cout, 3, r) for r in rates]
                                   + [ASPPPooling(cin, cout)])
        self.project = nn.Sequential(nn.Conv2d(len(self.convs) * cout, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                     nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x):
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabV3(nn.Module):
    RATES = {8: ((False, True, True), (12, 24, 36)), 16: ((False, False, True), (6, 12, 18))}

    def __init__(self, output_stride=8, classes=21):
        super().__init__()
        dilate, rates = self.RATES[output_stride]
        self.backbone = ResNet("bottleneck", (3, 4, 6, 3), dilate=dilate, classes=None)
        self.classifier = nn.Sequential(ASPP(2048, rates), nn.Conv2d(256, 256, 3, padding=1, bias=False),
                                        nn.BatchNorm2d(256), nn.ReLU(), nn.Conv2d(256, classes, 1))

    def forward(self, x):
        size = x.shape[-2:]
        x = self.classifier(self.backbone(x))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# tiny YOLOv2 / v3 (darknet's yolov2-tiny.cfg and yolov3-tiny.cfg)
YOLOV2_TINY = [(16, 3), "pool", (32, 3), "pool", (64, 3), "pool", (128, 3), "pool", (256, 3), "pool",
               (512, 3), "pool_s1", (1024, 3), (512, 3)]
YOLOV3_TINY = YOLOV2_TINY[:-1] + [(256, 1), (512, 3)]


class Darknet(nn.Module):
    """Darknet layers by index: conv{i} + bn{i} + leaky ReLU 0.1, or a 2x2 max pool. The stride-1
    pool pads one pixel right and bottom by replicating the edge -- which, under a max, is
    darknet's own rule (it skips the out-of-range pixel)."""

    def __init__(self, layers, tiny_v3=False, anchors=5, classes=80):
        super().__init__()
        self.layers, self.tiny_v3 = layers, tiny_v3
        cin = 3
        for i, layer in enumerate(layers):
            if not isinstance(layer, str):
                cout, k = layer
                self.add_module(f"conv{i}", nn.Conv2d(cin, cout, k, padding=k // 2, bias=False))
                self.add_module(f"bn{i}", nn.BatchNorm2d(cout))
                cin = cout
        out = anchors * (5 + classes)
        if tiny_v3:
            self.conv15 = nn.Conv2d(512, out, 1)
            self.conv18 = nn.Conv2d(256, 128, 1, bias=False)
            self.bn18 = nn.BatchNorm2d(128)
            self.conv21 = nn.Conv2d(128 + 256, 256, 3, padding=1, bias=False)
            self.bn21 = nn.BatchNorm2d(256)
            self.conv22 = nn.Conv2d(256, out, 1)
        else:
            self.conv14 = nn.Conv2d(512, out, 1)

    def leaky(self, x, i):
        return F.leaky_relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)), 0.1)

    def forward(self, x):
        outs = []
        for i, layer in enumerate(self.layers):
            if layer == "pool":
                x = F.max_pool2d(x, 2, 2)
            elif layer == "pool_s1":
                x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)
            else:
                x = self.leaky(x, i)
            outs.append(x)
        if not self.tiny_v3:
            return self.conv14(x)
        up = F.interpolate(self.leaky(outs[13], 18), scale_factor=2, mode="nearest")
        return self.conv15(x), self.conv22(self.leaky(torch.cat([up, outs[8]], 1), 21))


# ---------------------------------------------------------------------------------------------
# OpenPose body model (CMU's COCO pose_iter_440000, as pytorch-openpose builds it)
OPENPOSE_FRONT = [("conv1_1", 64), ("conv1_2", 64), "pool1_stage1", ("conv2_1", 128), ("conv2_2", 128),
                  "pool2_stage1", ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), ("conv3_4", 256),
                  "pool3_stage1", ("conv4_1", 512), ("conv4_2", 512), ("conv4_3_CPM", 256), ("conv4_4_CPM", 128)]


class OpenPose(nn.Module):
    def __init__(self, stages=6):
        super().__init__()
        self.front, self.stages, cin = [], stages, 3
        for layer in OPENPOSE_FRONT:
            if not isinstance(layer, str):
                self.add_module(layer[0], nn.Conv2d(cin, layer[1], 3, padding=1))
                cin = layer[1]
            self.front.append(layer)
        for limb, out in (("L1", 38), ("L2", 19)):
            for i, (ci, co, k) in enumerate([(128, 128, 3), (128, 128, 3), (128, 128, 3), (128, 512, 1), (512, out, 1)],
                                            start=1):
                self.add_module(f"conv5_{i}_CPM_{limb}", nn.Conv2d(ci, co, k, padding=k // 2))
            for s in range(2, stages + 1):
                for i, (ci, co, k) in enumerate([(185, 128, 7)] + [(128, 128, 7)] * 4 + [(128, 128, 1), (128, out, 1)],
                                                start=1):
                    self.add_module(f"Mconv{i}_stage{s}_{limb}", nn.Conv2d(ci, co, k, padding=k // 2))

    def branch(self, x, stage, limb):
        names = ([f"conv5_{i}_CPM_{limb}" for i in range(1, 6)] if stage == 1
                 else [f"Mconv{i}_stage{stage}_{limb}" for i in range(1, 8)])
        for name in names[:-1]:
            x = F.relu(getattr(self, name)(x))
        return getattr(self, names[-1])(x)

    def forward(self, x):
        for layer in self.front:
            x = F.max_pool2d(x, 2, 2) if isinstance(layer, str) else F.relu(getattr(self, layer[0])(x))
        features = x
        for stage in range(1, self.stages + 1):
            pafs, heatmaps = self.branch(x, stage, "L1"), self.branch(x, stage, "L2")
            x = torch.cat([pafs, heatmaps, features], 1)
        return pafs, heatmaps


# ---------------------------------------------------------------------------------------------
#: example name -> (constructor taking the input size, smallest input size the example accepts)
MIRRORS: dict[str, tuple[Callable[[int], nn.Module], int]] = {
    "resnet34": (lambda size: ResNet("basic", (3, 4, 6, 3)), 32),
    "resnet101": (lambda size: ResNet("bottleneck", (3, 4, 23, 3)), 32),
    "resnet152": (lambda size: ResNet("bottleneck", (3, 8, 36, 3)), 32),
    "resnext101_32x8d": (lambda size: ResNet("bottleneck", (3, 4, 23, 3), groups=32, width_per_group=8), 32),
    "inception_v3": (lambda size: InceptionV3(), 75),
    "inception_v4": (lambda size: InceptionV4(), 75),
    "deeplabv3_resnet50": (lambda size: DeepLabV3(8), 16),
    "yolov2_tiny": (lambda size: Darknet(YOLOV2_TINY), 32),
    "yolov3_tiny": (lambda size: Darknet(YOLOV3_TINY, tiny_v3=True, anchors=3), 32),
    "openpose": (lambda size: OpenPose(), 16),
}

#: variant name -> (constructor, the example, its model() kwargs, input size)
VARIANTS = {
    "inception_v3_aux": (lambda: InceptionV3(aux_logits=True), "inception_v3", {"aux_logits": True}, 299),
    "deeplabv3_resnet50_os16": (lambda: DeepLabV3(16), "deeplabv3_resnet50", {"output_stride": 16}, 32),
}
