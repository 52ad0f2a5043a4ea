"""VGG-19 (Simonyan & Zisserman, 2014: "Very Deep Convolutional Networks for Large-Scale Image
Recognition"), configuration E, without batch norm, as torchvision's ``vgg19``.

What was notable: depth from uniformity -- only 3x3 convolutions (stride 1, padding 1) and 2x2
max pooling, channels doubling 64 -> 512; two stacked 3x3 layers see what one 5x5 sees with
fewer parameters. Configuration E adds a fourth 3x3 layer to each of the last three stages of
VGG-16: 143,667,240 parameters, most of them in the first dense layer.

torchvision's ``AdaptiveAvgPool2d((7, 7))`` is the identity at the canonical 224x224 input and is
omitted; at other sizes the first dense layer takes whatever the flattened feature map holds.
Layers are named ``conv<stage>_<index>`` as in the paper's tables.
"""
from cnncc.frontends import dsl

STAGES = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]   # (channels, 3x3 convs) per stage


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    for s, (channels, convs) in enumerate(STAGES, start=1):
        for i in range(1, convs + 1):
            x = dsl.relu(dsl.conv2d(x, channels, 3, padding=1, name=f"conv{s}_{i}"), name=f"relu{s}_{i}")
        x = dsl.max_pool2d(x, 2, stride=2, name=f"pool{s}")
    x = dsl.flatten(x, name="flatten")
    x = dsl.dropout(dsl.relu(dsl.dense(x, 4096, name="fc6"), name="relu6"), name="drop6")
    x = dsl.dropout(dsl.relu(dsl.dense(x, 4096, name="fc7"), name="relu7"), name="drop7")
    return dsl.dense(x, 1000, name="fc8")
