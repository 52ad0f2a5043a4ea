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

from _resnet import bottleneck, resnet

LAYERS = (3, 4, 6, 3)
REDUCTION = 16


def squeeze_excite(x, p):
    """Gate each channel by sigmoid(fc2(relu(fc1(mean over H, W))))."""
    c = x.channels
    s = dsl.global_avg_pool(x, name=f"{p}_se_pool")
    s = dsl.relu(dsl.conv2d(s, c // REDUCTION, 1, name=f"{p}_se_fc1"), name=f"{p}_se_relu")
    s = dsl.sigmoid(dsl.conv2d(s, c, 1, name=f"{p}_se_fc2"), name=f"{p}_se_gate")
    return dsl.mul(x, s, name=f"{p}_se_scale")


def model(batch=dsl.N, size=224):
    return resnet(batch, size, bottleneck, LAYERS, gate=squeeze_excite)
