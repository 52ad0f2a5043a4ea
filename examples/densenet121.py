"""DenseNet-121 (Huang, Liu, van der Maaten & Weinberger, 2017: "Densely Connected Convolutional
Networks"), torchvision's ``densenet121``.

What was notable: inside a dense block every layer sees the concatenation of ALL earlier
feature maps and adds only ``growth_rate`` (32) new channels, so features are reused instead of
relearned; transitions (BN-ReLU-1x1 conv halving channels, 2x2 average pool) sit between the
four blocks of 6, 12, 24 and 16 layers. Each layer is pre-activation BN-ReLU-1x1 conv
(4 x growth = 128 channels) - BN-ReLU-3x3 conv (32). 7,978,856 parameters.

The block is written as a running concat (x = concat(x, new)), which holds the same tensor as
torchvision's concat of the whole feature list. Names follow torchvision's module paths without
the ``features.`` prefix (``denseblock1_denselayer1_conv1``, ``transition1_conv``).
"""
from cnncc.frontends import dsl

BLOCKS = (6, 12, 24, 16)
GROWTH = 32
BN_SIZE = 4


def bn_relu_conv(x, channels, kernel, p, i, padding=0):
    x = dsl.relu(dsl.batch_norm(x, name=f"{p}_norm{i}"), name=f"{p}_relu{i}")
    return dsl.conv2d(x, channels, kernel, padding=padding, bias=False, name=f"{p}_conv{i}")


def dense_layer(x, p):
    new = bn_relu_conv(x, BN_SIZE * GROWTH, 1, p, 1)
    new = bn_relu_conv(new, GROWTH, 3, p, 2, padding=1)
    return dsl.concat([x, new], name=f"{p}_concat")


def transition(x, p):
    x = dsl.relu(dsl.batch_norm(x, name=f"{p}_norm"), name=f"{p}_relu")
    x = dsl.conv2d(x, x.channels // 2, 1, bias=False, name=f"{p}_conv")
    return dsl.avg_pool2d(x, 2, stride=2, name=f"{p}_pool")


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    x = dsl.conv2d(x, 64, 7, stride=2, padding=3, bias=False, name="conv0")
    x = dsl.relu(dsl.batch_norm(x, name="norm0"), name="relu0")
    x = dsl.max_pool2d(x, 3, stride=2, padding=1, name="pool0")
    for b, layers in enumerate(BLOCKS, start=1):
        for i in range(1, layers + 1):
            x = dense_layer(x, f"denseblock{b}_denselayer{i}")
        if b < len(BLOCKS):
            x = transition(x, f"transition{b}")
    x = dsl.relu(dsl.batch_norm(x, name="norm5"), name="relu5")
    x = dsl.flatten(dsl.global_avg_pool(x, name="avgpool"), name="flatten")
    return dsl.dense(x, 1000, name="classifier")
