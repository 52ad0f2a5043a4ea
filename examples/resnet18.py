"""ResNet-18 (He, Zhang, Ren & Sun, 2015: "Deep Residual Learning for Image Recognition"),
torchvision's ``resnet18``.

What was notable: identity shortcuts -- each block learns a residual F(x) and outputs
relu(F(x) + x), which made networks of 100+ layers trainable. ResNet-18 uses the two-layer
"basic" block (3x3, 3x3) in four stages of two blocks; when a stage halves the resolution the
shortcut is a strided 1x1 convolution + batch norm. 11,689,512 parameters.

Layer names follow torchvision's module paths with dots as underscores (``layer1_0_conv1``,
``layer2_0_downsample_0``), so a torchvision state_dict maps onto them one to one.
"""
from cnncc.frontends import dsl


def conv_bn(x, channels, kernel, stride, padding, name, bn_name):
    x = dsl.conv2d(x, channels, kernel, stride=stride, padding=padding, bias=False, name=name)
    return dsl.batch_norm(x, name=bn_name)


def basic_block(x, channels, stride, p):
    """Two 3x3 conv+BN layers; the shortcut is the identity unless the shape changes."""
    out = dsl.relu(conv_bn(x, channels, 3, stride, 1, f"{p}_conv1", f"{p}_bn1"), name=f"{p}_relu1")
    out = conv_bn(out, channels, 3, 1, 1, f"{p}_conv2", f"{p}_bn2")
    if stride != 1 or x.channels != channels:
        x = conv_bn(x, channels, 1, stride, 0, f"{p}_downsample_0", f"{p}_downsample_1")
    return dsl.relu(dsl.add(out, x, name=f"{p}_add"), name=f"{p}_relu2")


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    x = dsl.relu(conv_bn(x, 64, 7, 2, 3, "conv1", "bn1"), name="relu")
    x = dsl.max_pool2d(x, 3, stride=2, padding=1, name="maxpool")
    for stage, channels in enumerate((64, 128, 256, 512), start=1):
        for i in range(2):
            x = basic_block(x, channels, 2 if (i == 0 and stage > 1) else 1, f"layer{stage}_{i}")
    x = dsl.flatten(dsl.global_avg_pool(x, name="avgpool"), name="flatten")
    return dsl.dense(x, 1000, name="fc")
