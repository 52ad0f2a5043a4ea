"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen, 2018: "MobileNetV2: Inverted Residuals
and Linear Bottlenecks"), torchvision's ``mobilenet_v2`` (width 1.0).

What was notable: the inverted residual -- expand a thin tensor with a 1x1 conv (x6), filter it
with a cheap depthwise 3x3 (groups = channels), project back with a *linear* 1x1 (no ReLU: the
"linear bottleneck" keeps information a ReLU would destroy in few channels), and add the
shortcut between the thin ends when shapes allow. ReLU6 throughout. 3,504,872 parameters.

Names: ``stem_*``, ``block<i>_{expand,dw,project}`` (+ ``_bn``) for the 17 inverted residual
blocks, ``head_*``, ``classifier``.
"""
from cnncc.frontends import dsl

#: (expansion t, output channels c, repeats n, first stride s) -- the paper's Table 2
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]


def conv_bn(x, channels, kernel, name, stride=1, groups=1, relu6=True):
    x = dsl.conv2d(x, channels, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False,
                   name=name)
    x = dsl.batch_norm(x, name=f"{name}_bn")
    return dsl.relu6(x, name=f"{name}_relu6") if relu6 else x


def inverted_residual(x, expansion, channels, stride, p):
    hidden = x.channels * expansion
    out = conv_bn(x, hidden, 1, f"{p}_expand") if expansion != 1 else x
    out = conv_bn(out, hidden, 3, f"{p}_dw", stride=stride, groups=hidden)
    out = conv_bn(out, channels, 1, f"{p}_project", relu6=False)
    if stride == 1 and x.channels == channels:
        out = dsl.add(x, out, name=f"{p}_add")
    return out


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    x = conv_bn(x, 32, 3, "stem", stride=2)
    block = 0
    for t, c, n, s in SETTINGS:
        for i in range(n):
            block += 1
            x = inverted_residual(x, t, c, s if i == 0 else 1, f"block{block}")
    x = conv_bn(x, 1280, 1, "head")
    x = dsl.flatten(dsl.global_avg_pool(x, name="avgpool"), name="flatten")
    x = dsl.dropout(x, 0.2, name="dropout")
    return dsl.dense(x, 1000, name="classifier")
