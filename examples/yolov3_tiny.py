"""Tiny YOLOv3 (Redmon & Farhadi, 2018: "YOLOv3: An Incremental Improvement"), darknet's
``yolov3-tiny.cfg`` (COCO: 80 classes, 3 anchors per scale).

What was notable: detection at two scales from one small network. The tiny YOLOv2 stack (3x3
convolutions with batch norm and leaky ReLU 0.1, 2x2 max pools, the last with stride 1 and an
asymmetric pad) feeds a 13x13 head (416x416 input); a *route* takes the 1x1 bottleneck before
that head back, a 1x1 convolution and a 2x nearest *upsample* bring it to 26x26, and a second
route concatenates it with the 256-channel feature map of layer 8 for a 26x26 head. Each head
predicts 3 anchors x (4 + 1 + 80) = 255 channels; two outputs, (N, 255, 13, 13) and
(N, 255, 26, 26). Decoding them (darknet's yolo layers) is post-processing.

Layer names carry darknet's layer index (``conv13``, ``upsample19``, ``route20``); the stack
is shared with ``yolov2_tiny.py``. Batch norm eps 1e-5 as in PyTorch ports. The input size must
be a multiple of 32.
"""
from cnncc.frontends import dsl

from yolov2_tiny import backbone, conv_leaky

#: darknet layers 0..14 (the first head's trunk); route -4 is layer 13
LAYERS = [(16, 3), "pool", (32, 3), "pool", (64, 3), "pool", (128, 3), "pool", (256, 3), "pool",
          (512, 3), "pool_s1", (1024, 3), (256, 1), (512, 3)]
ANCHORS, CLASSES = 3, 80


def model(batch=dsl.N, size=416):
    outs = backbone(dsl.input("image", (batch, 3, size, size)), LAYERS)
    head1 = dsl.conv2d(outs[14], ANCHORS * (5 + CLASSES), 1, name="conv15")                   # yolo 16
    x = conv_leaky(outs[13], 128, 1, 18)                                                      # route 17: layer 13
    x = dsl.upsample2d(x, 2, mode="nearest", name="upsample19")
    x = dsl.concat([x, outs[8]], name="route20")                                              # route 20: -1, 8
    x = conv_leaky(x, 256, 3, 21)
    head2 = dsl.conv2d(x, ANCHORS * (5 + CLASSES), 1, name="conv22")                          # yolo 23
    return head1, head2
