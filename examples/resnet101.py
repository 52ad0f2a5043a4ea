"""ResNet-101 (He, Zhang, Ren & Sun, 2015: "Deep Residual Learning for Image Recognition"),
torchvision's ``resnet101`` (stride on the 3x3, the "v1.5" variant).

What was notable: depth that keeps paying -- the third stage grows from ResNet-50's 6 to 23
bottleneck blocks (3-4-23-3, 33 residual adds) for 1.5 points of top-1 error at under twice the
FLOPs; 44,549,160 parameters.

The blocks live in ``_resnet.py``; layer names follow torchvision's module paths with dots as
underscores (``layer3_22_conv3``).
"""
from cnncc.frontends import dsl

from _resnet import bottleneck, resnet

LAYERS = (3, 4, 23, 3)


def model(batch=dsl.N, size=224):
    return resnet(batch, size, bottleneck, LAYERS)
