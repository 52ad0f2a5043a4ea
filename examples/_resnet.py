"""The ResNet family's building blocks, torchvision's layout, shared by the ResNet, ResNeXt,
SE-ResNet and DeepLab-v3 examples (a model file may import its siblings: the loader puts
examples/ on the path while it runs). Not a model itself.

    x = stem(image)                                  # 7x7/2 conv, BN, ReLU, 3x3/2 max pool
    x = stages(x, bottleneck, (3, 4, 6, 3))          # four stages at 64, 128, 256, 512 planes
    logits = classifier(x)                           # global average pool, flatten, fc 1000

Layer names follow torchvision's module paths with dots as underscores (``layer1_0_conv1``,
``layer2_0_downsample_0``; with ``prefix="backbone_"`` DeepLab's ``backbone_layer1_0_conv1``), so
a torchvision state_dict maps onto them one to one.
"""
from cnncc.frontends import dsl

EXPANSION = 4       # a bottleneck's output has 4x its planes
PLANES = (64, 128, 256, 512)


def conv_bn(x, channels, kernel, stride, padding, name, bn_name, groups=1, dilation=1):
    x = dsl.conv2d(x, channels, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                   bias=False, name=name)
    return dsl.batch_norm(x, name=bn_name)


def shortcut(x, channels, stride, p):
    """The identity, or a (strided) 1x1 conv + BN where the block changes the shape."""
    if stride != 1 or x.channels != channels:
        x = conv_bn(x, channels, 1, stride, 0, f"{p}_downsample_0", f"{p}_downsample_1")
    return x


def basic_block(x, planes, stride, p, dilation=1):
    """ResNet-18/34: two 3x3 conv+BN layers around the shortcut."""
    out = dsl.relu(conv_bn(x, planes, 3, stride, dilation, f"{p}_conv1", f"{p}_bn1", dilation=dilation),
                   name=f"{p}_relu1")
    out = conv_bn(out, planes, 3, 1, dilation, f"{p}_conv2", f"{p}_bn2", dilation=dilation)
    return dsl.relu(dsl.add(out, shortcut(x, planes, stride, p), name=f"{p}_add"), name=f"{p}_relu2")


def bottleneck(x, planes, stride, p, dilation=1, groups=1, width_per_group=64, gate=None):
    """ResNet-50 and deeper: 1x1 reduce -> 3x3 (strided, grouped for ResNeXt, dilated for
    DeepLab) -> 1x1 expand (x4), plus the shortcut. ``gate(out, p)``, when given, rescales the
    expanded branch before the add (SE-ResNet's squeeze-and-excitation)."""
    width = planes * width_per_group // 64 * groups
    out = dsl.relu(conv_bn(x, width, 1, 1, 0, f"{p}_conv1", f"{p}_bn1"), name=f"{p}_relu1")
    out = dsl.relu(conv_bn(out, width, 3, stride, dilation, f"{p}_conv2", f"{p}_bn2", groups=groups,
                           dilation=dilation), name=f"{p}_relu2")
    out = conv_bn(out, planes * EXPANSION, 1, 1, 0, f"{p}_conv3", f"{p}_bn3")
    if gate is not None:
        out = gate(out, p)
    return dsl.relu(dsl.add(out, shortcut(x, planes * EXPANSION, stride, p), name=f"{p}_add"), name=f"{p}_relu3")


def stem(x, prefix=""):
    x = dsl.relu(conv_bn(x, 64, 7, 2, 3, f"{prefix}conv1", f"{prefix}bn1"), name=f"{prefix}relu")
    return dsl.max_pool2d(x, 3, stride=2, padding=1, name=f"{prefix}maxpool")


def stages(x, block, layers, dilate=(False, False, False), prefix="", **block_kwargs):
    """The four stages; each but the first halves the resolution in its first block. A stage
    with ``dilate`` set trades that stride for dilation (torchvision's
    ``replace_stride_with_dilation``): its first block keeps the previous dilation, the others
    use the doubled one, so the receptive field grows while the resolution stays."""
    dilation = 1
    for stage, (planes, blocks) in enumerate(zip(PLANES, layers), start=1):
        stride, previous = (2 if stage > 1 else 1), dilation
        if stage > 1 and dilate[stage - 2]:
            dilation, stride = dilation * stride, 1
        for i in range(blocks):
            x = block(x, planes, stride if i == 0 else 1, f"{prefix}layer{stage}_{i}",
                      dilation=previous if i == 0 else dilation, **block_kwargs)
    return x


def classifier(x, classes=1000):
    x = dsl.flatten(dsl.global_avg_pool(x, name="avgpool"), name="flatten")
    return dsl.dense(x, classes, name="fc")


def resnet(batch, size, block, layers, **block_kwargs):
    """An ImageNet classifier: stem, four stages, classifier."""
    x = dsl.input("image", (batch, 3, size, size))
    return classifier(stages(stem(x), block, layers, **block_kwargs))
