"""Tiny YOLOv2 (Redmon & Farhadi, 2016: "YOLO9000: Better, Faster, Stronger"), darknet's
``yolov2-tiny.cfg`` (COCO: 80 classes, 5 anchors).

What was notable: one-stage detection at hundreds of frames per second -- a nine-layer
convolutional stack whose last 1x1 convolution predicts, for every cell of a 13x13 grid (416x416
input), 5 anchor boxes x (4 coordinates + objectness + 80 class scores) = 425 channels. Darknet
style throughout: 3x3 convolutions with batch norm and leaky ReLU (slope 0.1), 2x2 max pools,
and a last max pool with stride 1 that keeps the 13x13 grid by padding only on the right and
bottom (an asymmetric pad: darknet's maxpool pads size - 1 = 1 pixel, all of it after). The
network ends at the raw predictions; decoding them (darknet's region layer) is post-processing.

Layer names carry darknet's layer index (``conv12``, ``bn12``, ``leaky12``, ``pool11``). Batch
norm as PyTorch ports of darknet write it (eps 1e-5; darknet adds 1e-6 to the standard deviation
instead). The input size must be a multiple of 32.
"""
from cnncc.frontends import dsl

#: darknet layers 0..13: (filters, kernel, batch-normalized and leaky) or "pool"/"pool_s1"
LAYERS = [(16, 3), "pool", (32, 3), "pool", (64, 3), "pool", (128, 3), "pool", (256, 3), "pool",
          (512, 3), "pool_s1", (1024, 3), (512, 3)]
ANCHORS, CLASSES = 5, 80


def conv_leaky(x, filters, kernel, i):
    x = dsl.conv2d(x, filters, kernel, padding=kernel // 2, bias=False, name=f"conv{i}")
    return dsl.leaky_relu(dsl.batch_norm(x, name=f"bn{i}"), alpha=0.1, name=f"leaky{i}")


def max_pool(x, i, stride=2):
    """2x2 max pool; with stride 1, darknet pads one pixel on the right and bottom only."""
    padding = 0 if stride == 2 else (0, 0, 1, 1)        # (top, left, bottom, right)
    return dsl.max_pool2d(x, 2, stride=stride, padding=padding, name=f"pool{i}")


def backbone(x, layers):
    """The darknet stack; returns the output of every layer (the routes index into it)."""
    outs = []
    for i, layer in enumerate(layers):
        x = max_pool(x, i, 1 if layer == "pool_s1" else 2) if isinstance(layer, str) else conv_leaky(x, *layer, i)
        outs.append(x)
    return outs


def model(batch=dsl.N, size=416):
    x = backbone(dsl.input("image", (batch, 3, size, size)), LAYERS)[-1]
    return dsl.conv2d(x, ANCHORS * (5 + CLASSES), 1, name=f"conv{len(LAYERS)}")
