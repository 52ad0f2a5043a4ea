"""ResNet-34 (He, Zhang, Ren & Sun, 2015: "Deep Residual Learning for Image Recognition"),
torchvision's ``resnet34``.

What was notable: the paper's plain-vs-residual experiment -- a plain 34-layer network trained
worse than an 18-layer one, the residual 34-layer one better; depth helped once every block
learned a residual. The two-layer "basic" block (3x3, 3x3) in 3-4-6-3 blocks, 16 residual adds;
21,797,672 parameters.

The blocks live in ``_resnet.py``; layer names follow torchvision's module paths with dots as
underscores (``layer3_5_conv2``).
"""
from cnncc.frontends import dsl

from _resnet import basic_block, resnet

LAYERS = (3, 4, 6, 3)


def model(batch=dsl.N, size=224):
    return resnet(batch, size, basic_block, LAYERS)
