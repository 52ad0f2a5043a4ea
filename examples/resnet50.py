"""ResNet-50 (He, Zhang, Ren & Sun, 2015: "Deep Residual Learning for Image Recognition"),
torchvision's ``resnet50`` (the "v1.5" variant: the stride sits on the 3x3 convolution).

What was notable: the bottleneck block -- 1x1 reduce, 3x3, 1x1 expand (x4) around an identity
shortcut -- keeps deep residual networks affordable; 3-4-6-3 blocks in four stages, 16 residual
adds, 25,557,032 parameters.

Layer names follow torchvision's module paths with dots as underscores (``layer1_0_conv1``,
``layer1_0_bn1``, ``layer1_0_downsample_0``), so a torchvision state_dict maps onto them.
"""
from cnncc.frontends import dsl

BLOCKS = (3, 4, 6, 3)
EXPANSION = 4


def conv_bn(x, channels, kernel, stride, padding, name, bn_name, groups=1):
    x = dsl.conv2d(x, channels, kernel, stride=stride, padding=padding, groups=groups, bias=False, name=name)
    return dsl.batch_norm(x, name=bn_name)


def bottleneck(x, planes, stride, p):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, plus the (projected when needed) shortcut."""
    out = dsl.relu(conv_bn(x, planes, 1, 1, 0, f"{p}_conv1", f"{p}_bn1"), name=f"{p}_relu1")
    out = dsl.relu(conv_bn(out, planes, 3, stride, 1, f"{p}_conv2", f"{p}_bn2"), name=f"{p}_relu2")
    out = conv_bn(out, planes * EXPANSION, 1, 1, 0, f"{p}_conv3", f"{p}_bn3")
    if stride != 1 or x.channels != planes * EXPANSION:
        x = conv_bn(x, planes * EXPANSION, 1, stride, 0, f"{p}_downsample_0", f"{p}_downsample_1")
    return dsl.relu(dsl.add(out, x, name=f"{p}_add"), name=f"{p}_relu3")


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    x = dsl.relu(conv_bn(x, 64, 7, 2, 3, "conv1", "bn1"), name="relu")
    x = dsl.max_pool2d(x, 3, stride=2, padding=1, name="maxpool")
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), BLOCKS), start=1):
        for i in range(blocks):
            x = bottleneck(x, planes, 2 if (i == 0 and stage > 1) else 1, f"layer{stage}_{i}")
    x = dsl.flatten(dsl.global_avg_pool(x, name="avgpool"), name="flatten")
    return dsl.dense(x, 1000, name="fc")
