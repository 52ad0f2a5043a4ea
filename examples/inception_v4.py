"""Inception-v4 (Szegedy, Ioffe, Vanhoucke & Alemi, 2016: "Inception-v4, Inception-ResNet and
the Impact of Residual Connections on Learning"), timm's ``inception_v4``.

What was notable: a uniform, deeper Inception without residual connections. The stem alone
branches three times -- a max pool beside a strided 3x3, two 3x3 paths (one through 1x7/7x1)
side by side, a strided 3x3 beside a max pool -- each joined by a concatenation; then 4
Inception-A (35x35), reduction A, 7 Inception-B (17x17, 1x7/7x1 factorizations), reduction B
and 3 Inception-C (8x8, parallel 1x3/3x1 splits). Average-pool branches leave the padding out of
the mean (``count_include_pad=False``). 42,679,816 parameters.

Layer names follow timm's module paths with dots as underscores (``features_11_branch1_2_conv``
is the 7x1 convolution of the first Inception-B). Any input from 75x75 works; 299x299 is the
published size.
"""
from cnncc.frontends import dsl


def conv(x, channels, kernel, name, stride=1, padding=0):
    """timm's ConvNormAct: conv (no bias), batch norm with eps 0.001, ReLU."""
    x = dsl.conv2d(x, channels, kernel, stride=stride, padding=padding, bias=False, name=f"{name}_conv")
    return dsl.relu(dsl.batch_norm(x, eps=1e-3, name=f"{name}_bn"), name=f"{name}_relu")


def chain(x, p, *layers):
    """An nn.Sequential of convolutions: (channels, kernel, stride, padding) each, named p_0, p_1..."""
    for i, (channels, kernel, stride, padding) in enumerate(layers):
        x = conv(x, channels, kernel, f"{p}_{i}", stride, padding)
    return x


def avg_pool_conv(x, channels, p):
    x = dsl.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False, name=f"{p}_0")
    return conv(x, channels, 1, f"{p}_1")


def max_pool(x, name):
    return dsl.max_pool2d(x, 3, stride=2, name=name)


def stem(x):
    x = conv(x, 32, 3, "features_0", stride=2)
    x = conv(x, 32, 3, "features_1")
    x = conv(x, 64, 3, "features_2", padding=1)
    x = dsl.concat([max_pool(x, "features_3_maxpool"), conv(x, 96, 3, "features_3_conv", stride=2)],
                   name="features_3_concat")                                          # Mixed3a
    b0 = chain(x, "features_4_branch0", (64, 1, 1, 0), (96, 3, 1, 0))
    b1 = chain(x, "features_4_branch1", (64, 1, 1, 0), (64, (1, 7), 1, (0, 3)), (64, (7, 1), 1, (3, 0)), (96, 3, 1, 0))
    x = dsl.concat([b0, b1], name="features_4_concat")                               # Mixed4a
    return dsl.concat([conv(x, 192, 3, "features_5_conv", stride=2), max_pool(x, "features_5_maxpool")],
                      name="features_5_concat")                                       # Mixed5a


def inception_a(x, p):
    b0 = conv(x, 96, 1, f"{p}_branch0")
    b1 = chain(x, f"{p}_branch1", (64, 1, 1, 0), (96, 3, 1, 1))
    b2 = chain(x, f"{p}_branch2", (64, 1, 1, 0), (96, 3, 1, 1), (96, 3, 1, 1))
    return dsl.concat([b0, b1, b2, avg_pool_conv(x, 96, f"{p}_branch3")], name=f"{p}_concat")


def reduction_a(x, p):
    b0 = conv(x, 384, 3, f"{p}_branch0", stride=2)
    b1 = chain(x, f"{p}_branch1", (192, 1, 1, 0), (224, 3, 1, 1), (256, 3, 2, 0))
    return dsl.concat([b0, b1, max_pool(x, f"{p}_branch2")], name=f"{p}_concat")


def inception_b(x, p):
    b0 = conv(x, 384, 1, f"{p}_branch0")
    b1 = chain(x, f"{p}_branch1", (192, 1, 1, 0), (224, (1, 7), 1, (0, 3)), (256, (7, 1), 1, (3, 0)))
    b2 = chain(x, f"{p}_branch2", (192, 1, 1, 0), (192, (7, 1), 1, (3, 0)), (224, (1, 7), 1, (0, 3)),
               (224, (7, 1), 1, (3, 0)), (256, (1, 7), 1, (0, 3)))
    return dsl.concat([b0, b1, b2, avg_pool_conv(x, 128, f"{p}_branch3")], name=f"{p}_concat")


def reduction_b(x, p):
    b0 = chain(x, f"{p}_branch0", (192, 1, 1, 0), (192, 3, 2, 0))
    b1 = chain(x, f"{p}_branch1", (256, 1, 1, 0), (256, (1, 7), 1, (0, 3)), (320, (7, 1), 1, (3, 0)), (320, 3, 2, 0))
    return dsl.concat([b0, b1, max_pool(x, f"{p}_branch2")], name=f"{p}_concat")


def inception_c(x, p):
    """1x3 and 3x1 in parallel after a 1x1, and after a 1x1 -> 3x1 -> 1x3 chain."""
    b0 = conv(x, 256, 1, f"{p}_branch0")
    b1 = conv(x, 384, 1, f"{p}_branch1_0")
    b1 = dsl.concat([conv(b1, 256, (1, 3), f"{p}_branch1_1a", padding=(0, 1)),
                     conv(b1, 256, (3, 1), f"{p}_branch1_1b", padding=(1, 0))], name=f"{p}_branch1_concat")
    b2 = conv(x, 384, 1, f"{p}_branch2_0")
    b2 = conv(b2, 448, (3, 1), f"{p}_branch2_1", padding=(1, 0))
    b2 = conv(b2, 512, (1, 3), f"{p}_branch2_2", padding=(0, 1))
    b2 = dsl.concat([conv(b2, 256, (1, 3), f"{p}_branch2_3a", padding=(0, 1)),
                     conv(b2, 256, (3, 1), f"{p}_branch2_3b", padding=(1, 0))], name=f"{p}_branch2_concat")
    return dsl.concat([b0, b1, b2, avg_pool_conv(x, 256, f"{p}_branch3")], name=f"{p}_concat")


def model(batch=dsl.N, size=299, classes=1000):
    x = stem(dsl.input("image", (batch, 3, size, size)))
    index = 6
    for block, repeat in ((inception_a, 4), (reduction_a, 1), (inception_b, 7), (reduction_b, 1), (inception_c, 3)):
        for _ in range(repeat):
            x = block(x, f"features_{index}")
            index += 1
    x = dsl.flatten(dsl.global_avg_pool(x, name="global_pool"), name="flatten")
    return dsl.dense(x, classes, name="last_linear")
