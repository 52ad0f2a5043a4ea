"""Inception-v3 (Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, 2015: "Rethinking the Inception
Architecture for Computer Vision"), torchvision's ``inception_v3``.

What was notable: factorized convolutions -- a 5x5 becomes two 3x3s, an nxn becomes a 1xn
followed by an nx1 (the 17x17 modules use 1x7/7x1 pairs, the 8x8 ones split their last 3x3 into
parallel 1x3 and 3x1 convolutions whose outputs are concatenated), and grid reductions that pool
and convolve side by side instead of one after the other. Batch norm (eps 0.001) after every
convolution. 23,834,568 parameters; 27,161,264 with the auxiliary classifier.

Variant: torchvision's structure and module names (``Mixed_6b_branch7x7_2_conv``). The auxiliary
classifier (``aux_logits=True``: average pool 5x5/3 on the 17x17 grid, 1x1 and 5x5
convolutions, fc) is a training-time head; in eval mode torchvision returns only the main
logits. With it the graph has two outputs, (logits, aux logits), and needs the full 299x299 input
(its 5x5 convolution needs the 17x17 grid); without it any input from 75x75 works.
"""
from cnncc.frontends import dsl


def basic_conv(x, channels, kernel, name, stride=1, padding=0):
    """torchvision's BasicConv2d: conv (no bias), batch norm with eps 0.001, ReLU."""
    x = dsl.conv2d(x, channels, kernel, stride=stride, padding=padding, bias=False, name=f"{name}_conv")
    return dsl.relu(dsl.batch_norm(x, eps=1e-3, name=f"{name}_bn"), name=f"{name}_relu")


def pool_branch(x, channels, p):
    x = dsl.avg_pool2d(x, 3, stride=1, padding=1, name=f"{p}_branch_pool_avg")
    return basic_conv(x, channels, 1, f"{p}_branch_pool")


def inception_a(x, pool_features, p):
    """35x35: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""
    b1 = basic_conv(x, 64, 1, f"{p}_branch1x1")
    b5 = basic_conv(basic_conv(x, 48, 1, f"{p}_branch5x5_1"), 64, 5, f"{p}_branch5x5_2", padding=2)
    b3 = basic_conv(x, 64, 1, f"{p}_branch3x3dbl_1")
    b3 = basic_conv(b3, 96, 3, f"{p}_branch3x3dbl_2", padding=1)
    b3 = basic_conv(b3, 96, 3, f"{p}_branch3x3dbl_3", padding=1)
    return dsl.concat([b1, b5, b3, pool_branch(x, pool_features, p)], name=f"{p}_concat")


def inception_b(x, p):
    """35x35 -> 17x17 grid reduction: strided 3x3 | 1x1 -> 3x3 -> strided 3x3 | max pool."""
    b3 = basic_conv(x, 384, 3, f"{p}_branch3x3", stride=2)
    bd = basic_conv(x, 64, 1, f"{p}_branch3x3dbl_1")
    bd = basic_conv(bd, 96, 3, f"{p}_branch3x3dbl_2", padding=1)
    bd = basic_conv(bd, 96, 3, f"{p}_branch3x3dbl_3", stride=2)
    pool = dsl.max_pool2d(x, 3, stride=2, name=f"{p}_branch_pool")
    return dsl.concat([b3, bd, pool], name=f"{p}_concat")


def inception_c(x, c7, p):
    """17x17: 7x7 convolutions factorized into 1x7 and 7x1 pairs."""
    b1 = basic_conv(x, 192, 1, f"{p}_branch1x1")
    b7 = basic_conv(x, c7, 1, f"{p}_branch7x7_1")
    b7 = basic_conv(b7, c7, (1, 7), f"{p}_branch7x7_2", padding=(0, 3))
    b7 = basic_conv(b7, 192, (7, 1), f"{p}_branch7x7_3", padding=(3, 0))
    bd = basic_conv(x, c7, 1, f"{p}_branch7x7dbl_1")
    for i, (channels, kernel) in enumerate([(c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))], start=2):
        bd = basic_conv(bd, channels, kernel, f"{p}_branch7x7dbl_{i}", padding=(kernel[0] // 2, kernel[1] // 2))
    return dsl.concat([b1, b7, bd, pool_branch(x, 192, p)], name=f"{p}_concat")


def inception_d(x, p):
    """17x17 -> 8x8 grid reduction."""
    b3 = basic_conv(basic_conv(x, 192, 1, f"{p}_branch3x3_1"), 320, 3, f"{p}_branch3x3_2", stride=2)
    b7 = basic_conv(x, 192, 1, f"{p}_branch7x7x3_1")
    b7 = basic_conv(b7, 192, (1, 7), f"{p}_branch7x7x3_2", padding=(0, 3))
    b7 = basic_conv(b7, 192, (7, 1), f"{p}_branch7x7x3_3", padding=(3, 0))
    b7 = basic_conv(b7, 192, 3, f"{p}_branch7x7x3_4", stride=2)
    pool = dsl.max_pool2d(x, 3, stride=2, name=f"{p}_branch_pool")
    return dsl.concat([b3, b7, pool], name=f"{p}_concat")


def split_1x3_3x1(x, name):
    """A 3x3 split into parallel 1x3 and 3x1 convolutions, concatenated (768 channels)."""
    a = basic_conv(x, 384, (1, 3), f"{name}a", padding=(0, 1))
    b = basic_conv(x, 384, (3, 1), f"{name}b", padding=(1, 0))
    return dsl.concat([a, b], name=f"{name}_concat")


def inception_e(x, p):
    """8x8: expanded filter banks, concatenating 320 + 768 + 768 + 192 = 2048 channels."""
    b1 = basic_conv(x, 320, 1, f"{p}_branch1x1")
    b3 = split_1x3_3x1(basic_conv(x, 384, 1, f"{p}_branch3x3_1"), f"{p}_branch3x3_2")
    bd = basic_conv(basic_conv(x, 448, 1, f"{p}_branch3x3dbl_1"), 384, 3, f"{p}_branch3x3dbl_2", padding=1)
    bd = split_1x3_3x1(bd, f"{p}_branch3x3dbl_3")
    return dsl.concat([b1, b3, bd, pool_branch(x, 192, p)], name=f"{p}_concat")


def aux_head(x, classes):
    """The auxiliary classifier on the 17x17 grid (torchvision's InceptionAux)."""
    x = dsl.avg_pool2d(x, 5, stride=3, name="AuxLogits_pool")
    x = basic_conv(basic_conv(x, 128, 1, "AuxLogits_conv0"), 768, 5, "AuxLogits_conv1")
    x = dsl.flatten(dsl.global_avg_pool(x, name="AuxLogits_avgpool"), name="AuxLogits_flatten")
    return dsl.dense(x, classes, name="AuxLogits_fc")


def model(batch=dsl.N, size=299, aux_logits=False, classes=1000):
    x = dsl.input("image", (batch, 3, size, size))
    x = basic_conv(x, 32, 3, "Conv2d_1a_3x3", stride=2)
    x = basic_conv(x, 32, 3, "Conv2d_2a_3x3")
    x = basic_conv(x, 64, 3, "Conv2d_2b_3x3", padding=1)
    x = dsl.max_pool2d(x, 3, stride=2, name="maxpool1")
    x = basic_conv(x, 80, 1, "Conv2d_3b_1x1")
    x = basic_conv(x, 192, 3, "Conv2d_4a_3x3")
    x = dsl.max_pool2d(x, 3, stride=2, name="maxpool2")
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
        x = inception_a(x, pool_features, name)
    x = inception_b(x, "Mixed_6a")
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = inception_c(x, c7, name)
    aux = aux_head(x, classes) if aux_logits else None
    x = inception_d(x, "Mixed_7a")
    x = inception_e(inception_e(x, "Mixed_7b"), "Mixed_7c")
    x = dsl.flatten(dsl.global_avg_pool(x, name="avgpool"), name="flatten")
    x = dsl.dense(dsl.dropout(x, 0.5, name="dropout"), classes, name="fc")
    return (x, aux) if aux_logits else x
