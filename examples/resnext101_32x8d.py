"""ResNeXt-101 32x8d (Xie, Girshick, Dollar, Tu & He, 2016: "Aggregated Residual
Transformations for Deep Neural Networks"), torchvision's ``resnext101_32x8d``.

What was notable: cardinality and width together -- ResNet-101's depth (3-4-23-3) with each 3x3
split into 32 groups of 8 channels (per 64 planes), so the grouped convolutions are twice as
wide as ResNeXt-50 32x4d's: 256 to 2048 channels in 32 groups. 88,791,336 parameters, 16.5
GFLOPs at 224x224 -- the heaviest classifier in examples/.

The blocks live in ``_resnet.py``; layer names follow torchvision's module paths with dots as
underscores (``layer3_22_conv2`` is a grouped 3x3).
"""
from cnncc.frontends import dsl

from _resnet import bottleneck, resnet

LAYERS = (3, 4, 23, 3)
GROUPS = 32
WIDTH_PER_GROUP = 8


def model(batch=dsl.N, size=224):
    return resnet(batch, size, bottleneck, LAYERS, groups=GROUPS, width_per_group=WIDTH_PER_GROUP)
