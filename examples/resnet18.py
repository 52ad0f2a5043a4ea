"""ResNet-18 (He, Zhang, Ren & Sun, 2015: "Deep Residual Learning for Image Recognition"),
torchvision's ``resnet18``.

What was notable: identity shortcuts -- each block learns a residual F(x) and outputs
relu(F(x) + x), which made networks of 100+ layers trainable. ResNet-18 uses the two-layer
"basic" block (3x3, 3x3) in four stages of two blocks; when a stage halves the resolution the
shortcut is a strided 1x1 convolution + batch norm. 11,689,512 parameters.

The blocks live in ``_resnet.py``; layer names follow torchvision's module paths with dots as
underscores (``layer1_0_conv1``, ``layer2_0_downsample_0``), so a torchvision state_dict maps
onto them one to one.
"""
from cnncc.frontends import dsl

from _resnet import basic_block, resnet

LAYERS = (2, 2, 2, 2)


def model(batch=dsl.N, size=224):
    return resnet(batch, size, basic_block, LAYERS)
