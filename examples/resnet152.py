"""ResNet-152 (He, Zhang, Ren & Sun, 2015: "Deep Residual Learning for Image Recognition"; the
ILSVRC 2015 winning single model), torchvision's ``resnet152``.

What was notable: the deepest of the ImageNet ResNets -- 3-8-36-3 bottleneck blocks, 50
residual adds, 155 convolutions -- still cheaper than VGG-16 (11.5 against 15.5 GFLOPs at
224x224); 60,192,808 parameters. A stress test for a compiler's pass pipeline and kernel count.

The blocks live in ``_resnet.py``; layer names follow torchvision's module paths with dots as
underscores (``layer3_35_conv3``).
"""
from cnncc.frontends import dsl

from _resnet import bottleneck, resnet

LAYERS = (3, 8, 36, 3)


def model(batch=dsl.N, size=224):
    return resnet(batch, size, bottleneck, LAYERS)
