"""ResNeXt-50 32x4d (Xie, Girshick, Dollar, Tu & He, 2016: "Aggregated Residual Transformations
for Deep Neural Networks"), torchvision's ``resnext50_32x4d``.

What was notable: "cardinality" as a new dimension -- the 3x3 of each ResNet bottleneck becomes
32 parallel paths of width 4 (per 64 planes), implemented as one grouped convolution
(groups=32). Wider bottlenecks at almost the same cost: 25,028,904 parameters against
ResNet-50's 25,557,032.

The blocks live in ``_resnet.py``; layer names follow torchvision's module paths with dots as
underscores (``layer1_0_conv2`` is the grouped 3x3).
"""
from cnncc.frontends import dsl

from _resnet import bottleneck, resnet

LAYERS = (3, 4, 6, 3)
GROUPS = 32
WIDTH_PER_GROUP = 4


def model(batch=dsl.N, size=224):
    return resnet(batch, size, bottleneck, LAYERS, groups=GROUPS, width_per_group=WIDTH_PER_GROUP)
