"""GoogLeNet / Inception v1 (Szegedy et al., 2014: "Going Deeper with Convolutions"; ILSVRC 2014
winner), torchvision's ``googlenet`` without the two auxiliary classifiers (training-only heads).

What was notable: the Inception module -- 1x1, 3x3 and 5x5 convolutions and a pooling path side
by side, concatenated along channels, with 1x1 "bottleneck" convolutions cutting the cost of
the large ones; 22 layers for 12x fewer parameters than AlexNet. 6,624,904 parameters.

Variant: torchvision's structure -- every convolution is ``BasicConv2d`` (conv without bias,
batch norm with eps=1e-3, ReLU), max pools use ceil mode, and the "5x5" branch really uses a 3x3
kernel (a bug kept in torchvision for its pretrained weights; the count above depends on it).
Names follow torchvision's module paths (``inception3a_branch2_1_conv``).
"""
from cnncc.frontends import dsl

#: name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) -- the paper's Table 1
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def basic_conv(x, channels, kernel, name, stride=1, padding=0):
    x = dsl.conv2d(x, channels, kernel, stride=stride, padding=padding, bias=False, name=f"{name}_conv")
    return dsl.relu(dsl.batch_norm(x, eps=1e-3, name=f"{name}_bn"), name=f"{name}_relu")


def inception(x, name):
    c1, c3r, c3, c5r, c5, cp = INCEPTION[name]
    p = f"inception{name}"
    b1 = basic_conv(x, c1, 1, f"{p}_branch1")
    b2 = basic_conv(basic_conv(x, c3r, 1, f"{p}_branch2_0"), c3, 3, f"{p}_branch2_1", padding=1)
    b3 = basic_conv(basic_conv(x, c5r, 1, f"{p}_branch3_0"), c5, 3, f"{p}_branch3_1", padding=1)
    b4 = dsl.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True, name=f"{p}_branch4_0")
    b4 = basic_conv(b4, cp, 1, f"{p}_branch4_1")
    return dsl.concat([b1, b2, b3, b4], name=f"{p}_concat")


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    x = basic_conv(x, 64, 7, "conv1", stride=2, padding=3)
    x = dsl.max_pool2d(x, 3, stride=2, ceil_mode=True, name="maxpool1")
    x = basic_conv(x, 64, 1, "conv2")
    x = basic_conv(x, 192, 3, "conv3", padding=1)
    x = dsl.max_pool2d(x, 3, stride=2, ceil_mode=True, name="maxpool2")
    x = inception(inception(x, "3a"), "3b")
    x = dsl.max_pool2d(x, 3, stride=2, ceil_mode=True, name="maxpool3")
    for name in ("4a", "4b", "4c", "4d", "4e"):
        x = inception(x, name)
    x = dsl.max_pool2d(x, 2, stride=2, ceil_mode=True, name="maxpool4")
    x = inception(inception(x, "5a"), "5b")
    x = dsl.flatten(dsl.global_avg_pool(x, name="avgpool"), name="flatten")
    x = dsl.dropout(x, 0.2, name="dropout")
    return dsl.dense(x, 1000, name="fc")
