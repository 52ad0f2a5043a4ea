"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012), torchvision's single-tower variant.

What was notable: the network that won ILSVRC 2012 by a wide margin and started the deep
learning era of vision -- ReLU instead of saturating units, dropout in the classifier,
overlapping 3x3/2 max pooling, training on GPUs. This is torchvision's ``alexnet`` (64-192-384-
256-256 filters, no LRN, one tower instead of the paper's two), 61,100,840 parameters.

torchvision puts ``AdaptiveAvgPool2d((6, 6))`` before the classifier; at the canonical 224x224
input the feature map already is 6x6, so that pooling is the identity and is omitted here. At
other sizes the first dense layer takes whatever the flattened feature map holds.
"""
from cnncc.frontends import dsl


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    x = dsl.relu(dsl.conv2d(x, 64, 11, stride=4, padding=2, name="conv1"), name="relu1")
    x = dsl.max_pool2d(x, 3, stride=2, name="pool1")
    x = dsl.relu(dsl.conv2d(x, 192, 5, padding=2, name="conv2"), name="relu2")
    x = dsl.max_pool2d(x, 3, stride=2, name="pool2")
    x = dsl.relu(dsl.conv2d(x, 384, 3, padding=1, name="conv3"), name="relu3")
    x = dsl.relu(dsl.conv2d(x, 256, 3, padding=1, name="conv4"), name="relu4")
    x = dsl.relu(dsl.conv2d(x, 256, 3, padding=1, name="conv5"), name="relu5")
    x = dsl.max_pool2d(x, 3, stride=2, name="pool5")
    x = dsl.flatten(x, name="flatten")
    x = dsl.dropout(x, 0.5, name="drop6")
    x = dsl.relu(dsl.dense(x, 4096, name="fc6"), name="relu6")
    x = dsl.dropout(x, 0.5, name="drop7")
    x = dsl.relu(dsl.dense(x, 4096, name="fc7"), name="relu7")
    return dsl.dense(x, 1000, name="fc8")
