"""SE-ResNet-50 (Hu, Shen & Sun, 2018: "Squeeze-and-Excitation Networks"; ILSVRC 2017 winner).

What was notable: channel attention for the price of two tiny layers. Each bottleneck's output is
*squeezed* by global average pooling to one number per channel, *excited* through a bottleneck
(C -> C/16, ReLU -> C, sigmoid) and the gates rescale the channels (a broadcast multiply) before
the residual add. The two excitation layers are 1x1 convolutions with bias, which equal dense
layers on the pooled vector and keep the (N, C, 1, 1) shape for the channel-wise multiply.
ResNet-50 body as torchvision builds it (stride on the 3x3); 28,088,024 parameters, as
``timm``'s ``seresnet50`` and Cadene's ``pretrainedmodels`` ``se_resnet50`` (which puts the
stride on the first 1x1 instead -- the count is the same).
"""
from cnncc.frontends import dsl

BLOCKS = (3, 4, 6, 3)
EXPANSION = 4
REDUCTION = 16


def conv_bn(x, channels, kernel, stride, padding, name, bn_name):
    x = dsl.conv2d(x, channels, kernel, stride=stride, padding=padding, bias=False, name=name)
    return dsl.batch_norm(x, name=bn_name)


def squeeze_excite(x, p):
    """Gate each channel by sigmoid(fc2(relu(fc1(mean over H, W))))."""
    c = x.channels
    s = dsl.global_avg_pool(x, name=f"{p}_se_pool")
    s = dsl.relu(dsl.conv2d(s, c // REDUCTION, 1, name=f"{p}_se_fc1"), name=f"{p}_se_relu")
    s = dsl.sigmoid(dsl.conv2d(s, c, 1, name=f"{p}_se_fc2"), name=f"{p}_se_gate")
    return dsl.mul(x, s, name=f"{p}_se_scale")


def bottleneck(x, planes, stride, p):
    out = dsl.relu(conv_bn(x, planes, 1, 1, 0, f"{p}_conv1", f"{p}_bn1"), name=f"{p}_relu1")
    out = dsl.relu(conv_bn(out, planes, 3, stride, 1, f"{p}_conv2", f"{p}_bn2"), name=f"{p}_relu2")
    out = squeeze_excite(conv_bn(out, planes * EXPANSION, 1, 1, 0, f"{p}_conv3", f"{p}_bn3"), p)
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
