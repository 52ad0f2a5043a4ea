"""ShuffleNet V2 (Ma, Zhang, Zheng & Sun, 2018: "ShuffleNet V2: Practical Guidelines for Efficient
CNN Architecture Design"), torchvision's ``shufflenet_v2_x1_0`` (width 1.0x).

What was notable: the paper measured speed instead of FLOPs and derived its unit from that -- a
block splits its channels in two (``split``), leaves one half untouched, runs the other through
1x1 conv -> depthwise 3x3 -> 1x1 conv with equal widths, concatenates the halves, and then
*shuffles* the channels (reshape to (2, C/2), transpose, reshape back) so information crosses
between the halves in the next block. Downsampling blocks feed the whole input to both branches.
2,278,604 parameters.

In cnncc the channel split costs nothing at opt level 2 (each half is a view of its input at a
channel offset) and the shuffle is one data-movement kernel (the transpose; both reshapes are views).

Names follow torchvision's module paths with ``_`` for ``.``: ``conv1_0`` (conv), ``conv1_1``
(BN), ``stage2_0_branch1_0`` ... ``stage4_3_branch2_7``, ``conv5_0``, ``fc``.
"""
from cnncc.frontends import dsl

REPEATS = (4, 8, 4)
CHANNELS = (24, 116, 232, 464, 1024)


def conv_bn(x, channels, kernel, name, bn, stride=1, groups=1, relu=True, relu_name=None):
    x = dsl.conv2d(x, channels, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False,
                   name=name)
    x = dsl.batch_norm(x, name=bn)
    return dsl.relu(x, name=relu_name) if relu else x


def channel_shuffle(x, groups, name):
    _, c, h, w = x.shape
    x = dsl.reshape(x, (0, groups, int(c) // groups, int(h), int(w)), name=f"{name}_split_groups")
    x = dsl.transpose(x, (0, 2, 1, 3, 4), name=f"{name}_shuffle")
    return dsl.reshape(x, (0, int(c), int(h), int(w)), name=f"{name}_merge_groups")


def branch2(x, channels, stride, p):
    """1x1 conv + BN + ReLU, depthwise 3x3 + BN, 1x1 conv + BN + ReLU (torchvision's branch2 0..7)."""
    x = conv_bn(x, channels, 1, f"{p}_0", f"{p}_1", relu_name=f"{p}_2")
    x = conv_bn(x, channels, 3, f"{p}_3", f"{p}_4", stride=stride, groups=channels, relu=False)
    return conv_bn(x, channels, 1, f"{p}_5", f"{p}_6", relu_name=f"{p}_7")


def inverted_residual(x, out_channels, stride, p):
    half = out_channels // 2
    if stride == 1:
        keep, work = dsl.split(x, 2, axis=1, name=f"{p}_split")
        out = dsl.concat([keep, branch2(work, half, 1, f"{p}_branch2")], name=f"{p}_cat")
    else:
        b1 = conv_bn(x, x.channels, 3, f"{p}_branch1_0", f"{p}_branch1_1", stride=stride, groups=x.channels,
                     relu=False)
        b1 = conv_bn(b1, half, 1, f"{p}_branch1_2", f"{p}_branch1_3", relu_name=f"{p}_branch1_4")
        out = dsl.concat([b1, branch2(x, half, stride, f"{p}_branch2")], name=f"{p}_cat")
    return channel_shuffle(out, 2, p)


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    x = conv_bn(x, CHANNELS[0], 3, "conv1_0", "conv1_1", stride=2, relu_name="conv1_2")
    x = dsl.max_pool2d(x, 3, stride=2, padding=1, name="maxpool")
    for stage, (repeats, channels) in enumerate(zip(REPEATS, CHANNELS[1:4]), start=2):
        for i in range(repeats):
            x = inverted_residual(x, channels, 2 if i == 0 else 1, f"stage{stage}_{i}")
    x = conv_bn(x, CHANNELS[4], 1, "conv5_0", "conv5_1", relu_name="conv5_2")
    x = dsl.flatten(dsl.global_avg_pool(x, name="avgpool"), name="flatten")
    return dsl.dense(x, 1000, name="fc")
