"""ZFNet (Zeiler & Fergus, 2013: "Visualizing and Understanding Convolutional Networks"; ILSVRC
2013 winner), the network of the paper's Figure 3.

What was notable: it came out of *looking* at what AlexNet learned (deconvnet visualizations):
the 11x11/4 first layer aliased and left dead filters, so ZFNet uses 7x7/2 and a stride-2 second
layer, keeping more mid-frequency information. Otherwise AlexNet-like: 96-256-384-384-256
filters, ReLU, local response (contrast) normalization after the first two pooling layers, 3x3/2
max pooling, two 4096-unit dense layers with dropout. No published count is pinned here; this
variant has 62,357,608 parameters.

Variant details (the paper gives sizes, not padding): conv1 pads 1 and the pools use ceil mode,
which reproduces the paper's 110 -> 55 -> 26 -> 13 -> 6 feature-map sizes at 224x224. LRN uses
AlexNet's settings (size 5, alpha 1e-4, beta 0.75, k 2), as Caffe's ZFNet definitions do.
"""
from cnncc.frontends import dsl


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    x = dsl.relu(dsl.conv2d(x, 96, 7, stride=2, padding=1, name="conv1"), name="relu1")
    x = dsl.max_pool2d(x, 3, stride=2, ceil_mode=True, name="pool1")
    x = dsl.lrn(x, 5, alpha=1e-4, beta=0.75, k=2.0, name="norm1")
    x = dsl.relu(dsl.conv2d(x, 256, 5, stride=2, name="conv2"), name="relu2")
    x = dsl.max_pool2d(x, 3, stride=2, ceil_mode=True, name="pool2")
    x = dsl.lrn(x, 5, alpha=1e-4, beta=0.75, k=2.0, name="norm2")
    x = dsl.relu(dsl.conv2d(x, 384, 3, padding=1, name="conv3"), name="relu3")
    x = dsl.relu(dsl.conv2d(x, 384, 3, padding=1, name="conv4"), name="relu4")
    x = dsl.relu(dsl.conv2d(x, 256, 3, padding=1, name="conv5"), name="relu5")
    x = dsl.max_pool2d(x, 3, stride=2, ceil_mode=True, name="pool5")
    x = dsl.flatten(x, name="flatten")
    x = dsl.dropout(dsl.relu(dsl.dense(x, 4096, name="fc6"), name="relu6"), name="drop6")
    x = dsl.dropout(dsl.relu(dsl.dense(x, 4096, name="fc7"), name="relu7"), name="drop7")
    return dsl.dense(x, 1000, name="fc8")
