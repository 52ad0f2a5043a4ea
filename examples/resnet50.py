"""ResNet-50 (He, Zhang, Ren & Sun, 2015: "Deep Residual Learning for Image Recognition"),
torchvision's ``resnet50`` (the "v1.5" variant: the stride sits on the 3x3 convolution).

What was notable: the bottleneck block -- 1x1 reduce, 3x3, 1x1 expand (x4) around an identity
shortcut -- keeps deep residual networks affordable; 3-4-6-3 blocks in four stages, 16 residual
adds, 25,557,032 parameters.

The blocks live in ``_resnet.py``; layer names follow torchvision's module paths with dots as
underscores (``layer1_0_conv1``, ``layer1_0_bn1``, ``layer1_0_downsample_0``), so a torchvision
state_dict maps onto them.
"""
from cnncc.frontends import dsl

from _resnet import bottleneck, resnet

LAYERS = (3, 4, 6, 3)


def model(batch=dsl.N, size=224):
    return resnet(batch, size, bottleneck, LAYERS)
