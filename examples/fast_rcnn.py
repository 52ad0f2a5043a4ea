"""Fast R-CNN's detection network (Girshick, 2015: "Fast R-CNN"), VGG-16 backbone.

What was notable: the whole image goes through the convolutions once; each region proposal is then
cut out of the shared conv5_3 feature map by RoI max pooling -- the box, scaled by 1/16 (the
stride of four 2x2 poolings) and rounded, split into a fixed 7x7 grid of bins, the max of each --
so proposals of any size feed the same fully connected layers. Two sibling heads per box: class
scores (20 PASCAL VOC classes + background) and a box regression per class (4 x 21).

Inputs: the image (N, 3, H, W) and ``boxes`` (K, 5), one row [batch_index, x1, y1, x2, y2] per
proposal in image pixels (torchvision's Tensor[K, 5] form); K is fixed when the model is built
(``boxes``, 8 by default). Outputs: cls_score (K, 21) and bbox_pred (K, 84) -- raw scores, the
softmax is left to the caller as torchvision's FastRCNNPredictor does. VGG-16's pool5 is replaced
by the RoI pooling, its fc6/fc7 (4096, ``hidden``) keep their shape: fc6 takes 512 x 7 x 7.
"""
from cnncc.frontends import dsl

STAGES = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]   # (channels, 3x3 convs) per stage
CLASSES = 21


def model(batch=dsl.N, size=224, boxes=8, hidden=4096):
    image = dsl.input("image", (batch, 3, size, size))
    rois = dsl.input("boxes", (boxes, 5), like=image)
    x = image
    for s, (channels, convs) in enumerate(STAGES, start=1):
        for i in range(1, convs + 1):
            x = dsl.relu(dsl.conv2d(x, channels, 3, padding=1, name=f"conv{s}_{i}"), name=f"relu{s}_{i}")
        if s < len(STAGES):                       # no pool5: the RoI pooling takes its place
            x = dsl.max_pool2d(x, 2, stride=2, name=f"pool{s}")
    x = dsl.roi_pool(x, rois, 7, spatial_scale=1 / 16, name="roi_pool5")
    x = dsl.flatten(x, name="flatten")
    x = dsl.dropout(dsl.relu(dsl.dense(x, hidden, name="fc6"), name="relu6"), name="drop6")
    x = dsl.dropout(dsl.relu(dsl.dense(x, hidden, name="fc7"), name="relu7"), name="drop7")
    return [dsl.dense(x, CLASSES, name="cls_score"), dsl.dense(x, 4 * CLASSES, name="bbox_pred")]
